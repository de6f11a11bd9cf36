"""Peer FTP servers for the doctor's scenarios: vsftpd and Pure-FTPd from Debian's packages,
started inside a network namespace with the same settings as ferroftp (control port 2121,
passive range 50000-50100, optionally an advertised address and TLS).

vsftpd and pure-ftpd conflict with each other in apt (both provide ftp-server), so neither is
installed here: the binary of an installed package is used when there is one, otherwise the
package is fetched with `apt-get download` and unpacked with `dpkg-deb -x` into a cache
directory (target/system-peers), never installed. Both log in a temporary system user
(`ffdoc<hex>`, shell /bin/sh, home a temporary directory) created for the test session and
deleted at its end. Processes are started through Netns.popen, so the topology stops them by
PID at teardown.

Only the standard library is used.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from netns import Netns, run

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "system-peers"
if not CACHE.is_absolute():
    CACHE = REPO / CACHE
APT_TIMEOUT = 300.0
CONTROL = 2121
PASSIVE = (50000, 50100)


class PeerUnavailable(Exception):
    """The package cannot be found or fetched (the test is skipped with this reason)."""


def peer_binary(package: str, binary: str) -> str:
    """The path of `binary` from Debian package `package`: installed, else unpacked from a
    downloaded .deb in CACHE (fetched once)."""
    for candidate in (shutil.which(binary), f"/usr/sbin/{binary}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    root = CACHE / package / "root"
    unpacked = root / "usr" / "sbin" / binary
    if unpacked.exists():
        return str(unpacked)
    debs = CACHE / package / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not glob.glob(str(debs / f"{package}_*.deb")):
        def download():
            return subprocess.run(["apt-get", "download", package], cwd=debs,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, timeout=APT_TIMEOUT)
        p = download()
        if p.returncode != 0:
            # The package lists may be missing on a fresh machine.
            run(["apt-get", "update", "-qq"], check=False, timeout=APT_TIMEOUT)
            p = download()
        if p.returncode != 0:
            raise PeerUnavailable(f"apt-get download {package} failed: "
                                  f"{p.stderr.decode(errors='replace').strip()}")
    deb = sorted(glob.glob(str(debs / f"{package}_*.deb")))[-1]
    run(["dpkg-deb", "-x", deb, str(root)])
    if not unpacked.exists():
        raise PeerUnavailable(f"{deb} has no usr/sbin/{binary}")
    return str(unpacked)


@dataclass
class SystemAccount:
    user: str
    password: str
    home: Path

    def close(self):
        run(["userdel", self.user], check=False)


def create_account(base: Path) -> SystemAccount:
    """A system user whose home is a fresh directory; the caller deletes it (close())."""
    user = "ffdoc" + secrets.token_hex(3)
    password = "pw" + secrets.token_hex(8)
    home = base / user
    home.mkdir(parents=True)
    # shell /bin/sh: pure-ftpd's unix authentication refuses shells not in /etc/shells.
    run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", "-c", "ferroftp doctor tests", user])
    account = SystemAccount(user, password, home)
    try:
        run(["chpasswd", "-c", "SHA512"], input=f"{user}:{password}\n".encode())
        run(["chown", f"{user}:", str(home)])
        home.chmod(0o755)
        (home / "hello.txt").write_text("hello from the doctor's tests\n")
    except BaseException:
        account.close()
        raise
    return account


@dataclass
class PeerServer:
    """A started server: what the doctor needs to reach it."""
    kind: str                 # "ferroftp", "vsftpd", "pure-ftpd"
    ns: Netns
    user: str
    password: str
    port: int
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    def url(self, host: str) -> str:
        return f"ftp://{self.user}:{self.password}@{host}:{self.port}/"

    def log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""


def _start(ns: Netns, argv: list[str], log_path: Path, kind: str,
           account: SystemAccount) -> PeerServer:
    log = open(log_path, "w+b")
    try:
        # stdin is the log, opened read-write: vsftpd writes its "500 OOPS" errors to fd 0.
        proc = ns.popen(argv, stdin=log, stdout=log, stderr=log, start_new_session=True)
    finally:
        log.close()
    try:
        ns.wait_listening(CONTROL, timeout=30, proc=proc)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{kind} log:\n{log_path.read_text(errors='replace')}")
    return PeerServer(kind, ns, account.user, account.password, CONTROL, proc, log_path)


def start_vsftpd(ns: Netns, workdir: Path, account: SystemAccount, *,
                 advertise: str | None = None, tls: tuple[Path, Path] | None = None,
                 require_ssl_reuse: bool = True) -> PeerServer:
    """vsftpd in `ns` on 0.0.0.0:2121, passive 50000-50100, chrooted local user."""
    binary = peer_binary("vsftpd", "vsftpd")
    workdir.mkdir(parents=True, exist_ok=True)
    empty = workdir / "vsftpd-empty"
    empty.mkdir(exist_ok=True)
    empty.chmod(0o755)
    lines = [
        "listen=YES", "listen_ipv6=NO", "listen_address=0.0.0.0", f"listen_port={CONTROL}",
        "background=NO", "anonymous_enable=NO", "local_enable=YES", "write_enable=YES",
        f"local_root={account.home}", "chroot_local_user=YES", "allow_writeable_chroot=YES",
        # No /etc/pam.d/ffdoc exists: PAM falls back to /etc/pam.d/other (pam_unix).
        "pam_service_name=ffdoc", f"secure_chroot_dir={empty}",
        "pasv_enable=YES", f"pasv_min_port={PASSIVE[0]}", f"pasv_max_port={PASSIVE[1]}",
        "port_enable=YES", "connect_from_port_20=NO", "dirmessage_enable=NO",
        "xferlog_enable=NO", f"vsftpd_log_file={workdir / 'vsftpd.log'}",
        "seccomp_sandbox=NO",
    ]
    if advertise:
        lines.append(f"pasv_address={advertise}")
    if tls:
        cert, key = tls
        lines += ["ssl_enable=YES", f"rsa_cert_file={cert}", f"rsa_private_key_file={key}",
                  "force_local_logins_ssl=NO", "force_local_data_ssl=NO",
                  "ssl_tlsv1=YES", "ssl_sslv2=NO", "ssl_sslv3=NO",
                  f"require_ssl_reuse={'YES' if require_ssl_reuse else 'NO'}"]
    conf = workdir / "vsftpd.conf"
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o600)
    return _start(ns, [binary, str(conf)], workdir / "vsftpd.out", "vsftpd", account)


def start_pure_ftpd(ns: Netns, workdir: Path, account: SystemAccount, *,
                    advertise: str | None = None,
                    tls: tuple[Path, Path] | None = None) -> PeerServer:
    """Pure-FTPd in `ns` on 0.0.0.0:2121, passive 50000-50100, system users, chroot."""
    binary = peer_binary("pure-ftpd", "pure-ftpd")
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [binary, "-S", f"0.0.0.0,{CONTROL}", "-4", "-l", "unix", "-E", "-H", "-A",
            "-p", f"{PASSIVE[0]}:{PASSIVE[1]}", "-c", "50", "-C", "50", "-I", "15",
            "-g", str(workdir / "pure-ftpd.pid")]
    if advertise:
        argv += ["-P", advertise]
    if tls:
        cert, key = tls
        argv += ["-Y", "1", "-2", f"{cert},{key}"]
    return _start(ns, argv, workdir / "pure-ftpd.out", "pure-ftpd", account)


def make_certificate(workdir: Path, name: str = "ftp.test") -> tuple[Path, Path]:
    """A self-signed certificate and its key (openssl), for the servers' TLS."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    if not cert.exists():
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)])
        key.chmod(0o600)
    return cert, key
