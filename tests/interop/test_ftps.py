"""FTPS against real clients: curl (--ssl-reqd, --ftp-ssl-control, implicit ftps://), lftp
(ftp:ssl-force, ftp:ssl-protect-data) and Python's ftplib.FTP_TLS (prot_p), passive and
active; exact bytes by sha256 for 1 MiB and 100 MiB; PASS over plain text refused; data
connection session reuse with curl, lftp, rclone and ftplib on TLS 1.2 and 1.3, many
transfers per session; data connections that do not resume refused (and accepted once
exempt); `ferroftp doctor`'s verdict on the default FTPS setups checked against curl and lftp;
commands pipelined after AUTH TLS discarded; a certificate replaced on disk
picked up without a restart (file check and SIGHUP); client certificates accepted and
refused.

Certificates are made with the openssl command line tool for each test session.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

from ftp_helpers import (BIG_PROC_TIMEOUT, MiB, SOCKET_TIMEOUT, curl, lftp, sha256_bytes,
                         sha256_file, tree_hashes, wait_for)


# --------------------------------------------------------------------------------------------
# certificates


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


def make_server_cert(directory, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            cwd=directory)
    return directory / f"{name}.pem", directory / f"{name}.key"


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    out = {}
    out["cert"], out["key"] = make_server_cert(d, "server")
    out["cert2"], out["key2"] = make_server_cert(d, "server2")
    # A client CA and alice's certificate (CN=alice) signed by it; a stranger's from another CA.
    for ca in ("ca", "otherca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                "-subj", f"/CN=ferroftp interop {ca}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign", cwd=d)
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who, ca in (("alice", "ca"), ("stranger", "otherca")):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", "/CN=alice", cwd=d)
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{who}.pem", "-days", "2", "-extfile", "client.ext",
                cwd=d)
        out[who] = (d / f"{who}.pem", d / f"{who}.key")
    out["ca"] = d / "ca.pem"
    return out


def pem_fingerprint(path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(path.read_text())).hexdigest()


def tls_config(certs, cert=None, key=None, extra: str = "") -> str:
    return f"""
[[server.listeners]]
listen = "127.0.0.1:0"
tls = "explicit"
[[server.listeners]]
listen = "127.0.0.1:0"
tls = "implicit"
[tls]
cert = "{cert or certs['cert']}"
key = "{key or certs['key']}"
require = "accounts"
require_data = "accounts"
{extra}
"""


@pytest.fixture
def tls_server(start_server, certs):
    s = start_server(config=tls_config(certs))
    assert len(s.ports) == 2, s.stdout_lines
    return s


def implicit_port(server) -> int:
    return server.ports[1]


# --------------------------------------------------------------------------------------------
# curl

CURL_TLS = ["--ssl-reqd", "-k"]


def curl_mode_args(mode):
    return {"epsv": [], "pasv": ["--disable-epsv"],
            "eprt": ["-P", "127.0.0.1"], "port": ["-P", "127.0.0.1", "--disable-eprt"]}[mode]


@pytest.mark.parametrize("mode", ["epsv", "pasv"])
@pytest.mark.parametrize("size", [MiB, 100 * MiB], ids=["1MiB", "100MiB"])
def test_curl_explicit_upload_and_download(tls_server, samples, big_sample, tmp_path, mode, size):
    sample = samples[MiB] if size == MiB else big_sample
    url = tls_server.url(f"c-{mode}-{size}.bin")
    timeout = BIG_PROC_TIMEOUT if size > MiB else 120
    up = curl(*CURL_TLS, *curl_mode_args(mode), "-T", sample.path, url, timeout=timeout)
    up.assert_ok()
    up.assert_exchange("AUTH", 234)
    up.assert_exchange("PROT", 200)
    assert sha256_file(tls_server.path(f"c-{mode}-{size}.bin")) == sample.sha256
    out = tmp_path / "down.bin"
    down = curl(*CURL_TLS, *curl_mode_args(mode), "-o", out, url, timeout=timeout)
    down.assert_ok()
    assert sha256_file(out) == sample.sha256


def test_curl_several_downloads_in_one_session_resume_each_time(tls_server, samples, tmp_path):
    for i in range(3):
        (tls_server.path(f"m{i}.bin")).write_bytes(samples[MiB].path.read_bytes())
    args = []
    for i in range(3):
        args += ["-o", tmp_path / f"m{i}.bin", tls_server.url(f"m{i}.bin")]
    run = curl(*CURL_TLS, *args)
    run.assert_ok()
    assert run.codes("RETR") == [[150, 226]] * 3, run.describe()
    for i in range(3):
        assert sha256_file(tmp_path / f"m{i}.bin") == samples[MiB].sha256


@pytest.mark.parametrize("mode", ["eprt", "port"])
def test_curl_explicit_active(tls_server, samples, tmp_path, mode):
    url = tls_server.url(f"a-{mode}.bin")
    up = curl(*CURL_TLS, *curl_mode_args(mode), "-T", samples[MiB].path, url)
    if up.returncode != 0 and curl_active_tls_is_broken():
        pytest.xfail("this curl does not start TLS on an accepted active data connection "
                     "(curl 7.88 regression; the same happens against vsftpd)")
    up.assert_ok()
    out = tmp_path / "down.bin"
    curl(*CURL_TLS, *curl_mode_args(mode), "-o", out, url).assert_ok()
    assert sha256_file(out) == samples[MiB].sha256


def curl_active_tls_is_broken() -> bool:
    version = subprocess.run(["curl", "--version"], stdout=subprocess.PIPE,
                             timeout=10).stdout.decode().split()[1]
    major, minor = (int(x) for x in version.split(".")[:2])
    return (major, minor) in ((7, 87), (7, 88))


def test_curl_implicit_ftps(tls_server, samples, tmp_path):
    url = (f"ftps://{tls_server.user}:{tls_server.users[tls_server.user].password}"
           f"@127.0.0.1:{implicit_port(tls_server)}/implicit.bin")
    curl("-k", "-T", samples[MiB].path, url).assert_ok()
    out = tmp_path / "down.bin"
    down = curl("-k", "-o", out, url)
    down.assert_ok()
    assert not down.exchanges("AUTH"), "implicit FTPS sends no AUTH"
    assert sha256_file(out) == samples[MiB].sha256


def test_curl_ftp_ssl_control_gets_clear_data_only_where_policy_allows(start_server, certs,
                                                                        samples, tmp_path):
    strict = start_server(config=tls_config(certs))
    (strict.path("f.bin")).write_bytes(samples[MiB].path.read_bytes())
    run = curl("--ftp-ssl-control", "-k", "-o", tmp_path / "x", strict.url("f.bin"))
    assert run.returncode != 0, run.describe()
    assert run.exchanges("PASS")[-1].codes == [230]
    assert 521 in [c for e in run.transcript for c in e.codes], run.describe()

    relaxed = start_server(config=tls_config(certs).replace(
        'require_data = "accounts"', 'require_data = "none"'))
    (relaxed.path("f.bin")).write_bytes(samples[MiB].path.read_bytes())
    out = tmp_path / "clear.bin"
    run = curl("--ftp-ssl-control", "-k", "-o", out, relaxed.url("f.bin"))
    run.assert_ok()
    assert sha256_file(out) == samples[MiB].sha256


def test_pass_over_plain_text_is_refused(tls_server):
    run = curl(tls_server.url(""))
    assert run.returncode == 67, run.describe()      # CURLE_LOGIN_DENIED
    refused = run.exchanges("USER")[0]
    assert refused.replies == [(530, "TLS required for this account: send AUTH TLS first "
                                     "(tls.require = accounts)")], run.describe()
    assert not run.exchanges("PASS"), "the password was never sent"
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", tls_server.port, timeout=SOCKET_TIMEOUT)
    with pytest.raises(ftplib.error_perm, match="^530 TLS required"):
        ftp.login(tls_server.user, tls_server.users[tls_server.user].password)
    ftp.close()


# --------------------------------------------------------------------------------------------
# lftp

LFTP_TLS = ["set ftp:ssl-allow yes", "set ftp:ssl-force yes", "set ftp:ssl-protect-data yes",
            "set ftp:ssl-protect-list yes", "set ssl:verify-certificate no"]


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
@pytest.mark.parametrize("size", [MiB, 100 * MiB], ids=["1MiB", "100MiB"])
def test_lftp_ssl_force_protect_data(tls_server, samples, big_sample, tmp_path, passive, size):
    sample = samples[MiB] if size == MiB else big_sample
    name = f"l-{passive}-{size}.bin"
    run = lftp(tls_server, [f"put {sample.path} -o {name}", f"get {name} -o {tmp_path}/back.bin",
                            f"put {sample.path} -o second-{name}"],
               passive=passive, extra_settings=LFTP_TLS,
               timeout=BIG_PROC_TIMEOUT if size > MiB else 120)
    run.assert_ok()
    run.assert_exchange("AUTH", 234)
    run.assert_exchange("PROT", 200)
    assert sha256_file(tls_server.path(name)) == sample.sha256
    assert sha256_file(tls_server.path("second-" + name)) == sample.sha256
    assert sha256_file(tmp_path / "back.bin") == sample.sha256


# --------------------------------------------------------------------------------------------
# Python ftplib


def client_context(cert=None, max_version=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if max_version:
        ctx.maximum_version = {"1.2": ssl.TLSVersion.TLSv1_2,
                               "1.3": ssl.TLSVersion.TLSv1_3}[max_version]
    if cert:
        ctx.load_cert_chain(*map(str, cert))
    return ctx


class ReusingFTP_TLS(ftplib.FTP_TLS):
    """ftplib.FTP_TLS that resumes the control connection's TLS session on data connections,
    as RFC 4217 servers with reuse checks expect (stock ftplib does not)."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host,
                                            session=self.sock.session)
        return conn, size


def ftps_login(server, cls=ReusingFTP_TLS, passive=True, cert=None, user=None,
               max_version=None):
    ftp = cls(context=client_context(cert, max_version), timeout=SOCKET_TIMEOUT)
    ftp.connect("127.0.0.1", server.port)
    ftp.auth()
    u = server.users[user or server.user]
    ftp.login(u.name, u.password)
    ftp.prot_p()
    ftp.set_pasv(passive)
    return ftp


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_ftplib_prot_p_with_session_reuse(tls_server, samples, passive):
    ftp = ftps_login(tls_server, passive=passive)
    data = samples[MiB].path.read_bytes()
    for i in range(3):
        ftp.storbinary(f"STOR py{i}.bin", io.BytesIO(data))
        out = io.BytesIO()
        ftp.retrbinary(f"RETR py{i}.bin", out.write)
        assert sha256_bytes(out.getvalue()) == samples[MiB].sha256
    assert "py0.bin" in ftp.nlst()
    ftp.quit()


def refused_reply(ftp, transfer) -> str:
    """The final reply to a transfer the server refuses after its 150."""
    with pytest.raises((ftplib.error_perm, ssl.SSLError, OSError)) as refused:
        transfer()
    if isinstance(refused.value, ftplib.error_perm):
        return str(refused.value)
    # The data connection was closed under the client; the reply waits on the control
    # connection.
    with pytest.raises(ftplib.error_perm) as final:
        ftp.getresp()
    return str(final.value)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_stock_ftplib_without_reuse_is_refused_then_accepted_when_exempt(start_server, certs,
                                                                           samples, version):
    server = start_server(config=tls_config(certs))
    ftp = ftps_login(server, cls=ftplib.FTP_TLS, max_version=version)
    reply = refused_reply(ftp, lambda: ftp.storbinary("STOR refused.bin", io.BytesIO(b"x")))
    assert reply.startswith("522 TLS session reuse required"), reply
    assert "tls.reuse_exempt_users" in reply, reply
    ftp.close()
    assert not server.path("refused.bin").exists()

    exempt = start_server(config=tls_config(
        certs, extra=f'reuse_exempt_users = ["{"alice"}"]'))
    ftp = ftps_login(exempt, cls=ftplib.FTP_TLS, max_version=version)
    ftp.storbinary("STOR ok.bin", io.BytesIO(samples[MiB].path.read_bytes()))
    out = io.BytesIO()
    ftp.retrbinary("RETR ok.bin", out.write)
    assert sha256_bytes(out.getvalue()) == samples[MiB].sha256
    ftp.quit()


# --------------------------------------------------------------------------------------------
# data-connection session reuse with real clients, TLS 1.2 and 1.3
#
# The server requires every protected data connection to resume a TLS session descended from
# a control connection of the same user from the same address (docs/ftps.md). Clients resume
# differently: curl (OpenSSL) keeps only the newest session and uses a TLS 1.3 one once, lftp
# (GnuTLS) resumes the control connection's session, rclone (Go) shares one cache between its
# parallel control connections. Each must be able to make many transfers in one session.

CURL_VERSION = {"1.2": ["--tls-max", "1.2"], "1.3": ["--tlsv1.3"]}
LFTP_VERSION = {"1.2": "NORMAL:-VERS-TLS1.3", "1.3": "NORMAL:-VERS-ALL:+VERS-TLS1.3"}


def curl_version() -> tuple[int, int]:
    text = subprocess.run(["curl", "--version"], stdout=subprocess.PIPE,
                          timeout=10).stdout.decode().split()[1]
    major, minor = (int(x) for x in text.split(".")[:2])
    return major, minor


def assert_tls_version(run, version):
    used = re.findall(r"SSL connection using (TLSv1\.\d)", run.stderr)
    assert used and set(used) == {f"TLSv{version}"}, (used, run.describe())


def several_files(server, samples, count):
    data = samples[MiB].path.read_bytes()
    for i in range(count):
        server.path(f"d{i}.bin").write_bytes(data)


@pytest.mark.parametrize("mode", ["epsv", "pasv", "eprt"])
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_curl_many_transfers_in_one_session_resume(tls_server, samples, tmp_path, version,
                                                   mode):
    if mode == "eprt" and curl_active_tls_is_broken():
        pytest.skip("this curl does not start TLS on an accepted active data connection")
    several_files(tls_server, samples, 3)
    # One connection for all: `--next` keeps it, and starts the uploads' options.
    common = [*CURL_TLS, *CURL_VERSION[version], *curl_mode_args(mode)]
    args = list(common)
    for i in range(3):
        args += ["-o", tmp_path / f"d{i}.bin", tls_server.url(f"d{i}.bin")]
    args += ["-o", tmp_path / "listing.txt", tls_server.url("")]
    # After an upload, curl cannot resume a TLS 1.3 session (see the next test).
    uploads = ["up0.bin", "up1.bin"] if version == "1.2" else ["up0.bin"]
    args += ["--next", *common]
    for name in uploads:
        args += ["-T", samples[MiB].path, tls_server.url(name)]
    run = curl(*args)
    run.assert_ok()
    assert_tls_version(run, version)
    assert len(run.exchanges("AUTH")) == 1, run.describe()
    assert run.codes("RETR") == [[150, 226]] * 3, run.describe()
    assert run.codes("STOR") == [[150, 226]] * len(uploads), run.describe()
    for i in range(3):
        assert sha256_file(tmp_path / f"d{i}.bin") == samples[MiB].sha256
    assert "d2.bin" in (tmp_path / "listing.txt").read_text()
    for name in uploads:
        assert sha256_file(tls_server.path(name)) == samples[MiB].sha256
    assert "refused a protected data connection" not in tls_server.log()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_curl_two_uploads_in_one_invocation(tls_server, samples, version):
    """curl reads nothing on an upload's data connection, so it never sees a TLS 1.3 ticket
    sent there (and one left unread makes its kernel reset the connection, losing the end of
    the upload: the server sends none on uploads). OpenSSL clients with a session cache use a
    TLS 1.3 session once, so curl up to 8.9 starts the data connection after an upload with a
    full handshake: it does not resume, and is refused. TLS 1.2 sessions are reusable."""
    run = curl(*CURL_TLS, *CURL_VERSION[version],
               "-T", samples[MiB].path, tls_server.url("two-0.bin"),
               "-T", samples[MiB].path, tls_server.url("two-1.bin"))
    assert sha256_file(tls_server.path("two-0.bin")) == samples[MiB].sha256
    if version == "1.3" and curl_version() < (8, 10):
        # curl may still be sending when the server closes the data connection, and then
        # stops with a send error before it reads the 522.
        assert run.returncode != 0, run.describe()
        refusals = [line for line in tls_server.log().splitlines()
                    if "refused a protected data connection" in line]
        assert len(refusals) == 1 and "Some(Full)" in refusals[0], refusals
        assert not tls_server.path("two-1.bin").exists()
        return
    run.assert_ok()
    assert sha256_file(tls_server.path("two-1.bin")) == samples[MiB].sha256


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_lftp_many_transfers_in_one_session_resume(tls_server, samples, tmp_path, version,
                                                   passive):
    several_files(tls_server, samples, 3)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(12):
        (tree / ("sub" if i % 3 else "") / f"t{i}.txt").write_bytes(os.urandom(100 + 997 * i))
    out = tmp_path / "out"
    out.mkdir()
    sample = samples[MiB]
    run = lftp(tls_server, [
        f"put {sample.path} -o up0.bin", f"put {sample.path} -o up1.bin",
        f"get d0.bin -o {out}/d0.bin", f"get d1.bin -o {out}/d1.bin", "ls",
        f"put {sample.path} -o up2.bin", f"get d2.bin -o {out}/d2.bin",
        f"mirror -R --no-perms {tree} tree", f"mirror tree {tmp_path}/back",
    ], passive=passive, timeout=240,
        extra_settings=LFTP_TLS + [f"set ssl:priority {LFTP_VERSION[version]}"])
    run.assert_ok()
    assert not [e for e in run.transcript if 522 in e.codes], run.describe()
    for i in range(3):
        assert sha256_file(tls_server.path(f"up{i}.bin")) == sample.sha256
        assert sha256_file(out / f"d{i}.bin") == sample.sha256
    assert tree_hashes(tls_server.path("tree")) == tree_hashes(tree)
    assert tree_hashes(tmp_path / "back") == tree_hashes(tree)


def rclone_env(server, tmp_path, disable_tls13: bool) -> dict:
    u = server.users[server.user]
    obscured = subprocess.run(["rclone", "obscure", u.password], stdout=subprocess.PIPE,
                              check=True, timeout=30).stdout.decode().strip()
    env = dict(os.environ)
    env.update({
        "RCLONE_CONFIG": str(tmp_path / "rclone.conf"),
        "RCLONE_CONFIG_X_TYPE": "ftp", "RCLONE_CONFIG_X_HOST": "127.0.0.1",
        "RCLONE_CONFIG_X_PORT": str(server.port), "RCLONE_CONFIG_X_USER": u.name,
        "RCLONE_CONFIG_X_PASS": obscured, "RCLONE_CONFIG_X_EXPLICIT_TLS": "true",
        "RCLONE_CONFIG_X_NO_CHECK_CERTIFICATE": "true",
        "RCLONE_CONFIG_X_DISABLE_TLS13": "true" if disable_tls13 else "false",
    })
    return env


@pytest.mark.time_limit(600)
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_rclone_sync_of_500_files_over_explicit_tls(tls_server, tmp_path, version):
    tree = tmp_path / "tree"
    for i in range(500):
        d = tree / f"dir{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i}.txt").write_bytes(os.urandom(50 + i * 7))
    env = rclone_env(tls_server, tmp_path, disable_tls13=(version == "1.2"))
    for source, target in ((str(tree), "X:synced"), ("X:synced", str(tmp_path / "back"))):
        p = subprocess.run(["rclone", "sync", "--retries", "1", "--low-level-retries", "1",
                            source, target], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=500)
        assert p.returncode == 0, p.stderr.decode(errors="replace")[-4000:]
    assert tree_hashes(tls_server.path("synced")) == tree_hashes(tree)
    assert tree_hashes(tmp_path / "back") == tree_hashes(tree)
    assert "refused a protected data connection" not in tls_server.log()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_python_ftplib_resuming_the_control_session(tls_server, samples, version):
    ftp = ftps_login(tls_server, max_version=version)
    data = samples[MiB].path.read_bytes()
    for i in range(3):
        ftp.storbinary(f"STOR v{i}.bin", io.BytesIO(data))
        out = io.BytesIO()
        ftp.retrbinary(f"RETR v{i}.bin", out.write)
        assert sha256_bytes(out.getvalue()) == samples[MiB].sha256
    assert ftp.sock.version() == f"TLSv{version}"
    ftp.quit()


# --------------------------------------------------------------------------------------------
# ferroftp doctor on ferroftp's own FTPS setups: its verdict is what real clients experience


def run_doctor(ferroftp_bin, server) -> tuple[int, dict]:
    u = server.users[server.user]
    p = subprocess.run([ferroftp_bin, "doctor", "--json", "--quiet",
                        f"ftp://{u.name}:{u.password}@127.0.0.1:{server.port}/"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert p.stdout, p.stderr.decode(errors="replace")
    return p.returncode, json.loads(p.stdout)


@pytest.mark.parametrize("setup", ["self-signed", "certificate-files"])
def test_doctor_on_the_default_ftps_setup_matches_real_clients(start_server, certs, samples,
                                                              ferroftp_bin, tmp_path, setup):
    if setup == "self-signed":
        server = start_server(extra_args=["--tls", "self-signed"])
    else:
        server = start_server(config=tls_config(certs))
    code, report = run_doctor(ferroftp_bin, server)
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert code == 0 and not errors, json.dumps(report, indent=2)
    data = [f for f in report["findings"] if f["check"] == "tls"][-1]
    # Reuse is required by default: a warning for the clients that cannot resume...
    assert data["severity"] == "warning", data
    assert "requires TLS session reuse" in data["summary"], data
    assert "TLS 1.3 and TLS 1.2" in data["summary"], data
    assert "522" in data["summary"], data

    # ...and what it says holds: curl and lftp transfer on both versions, several files per
    # session, and a client that does not resume gets 522.
    several_files(server, samples, 2)
    for version in ("1.2", "1.3"):
        run = curl(*CURL_TLS, *CURL_VERSION[version],
                   "-o", tmp_path / f"c{version}-0", server.url("d0.bin"),
                   "-o", tmp_path / f"c{version}-1", server.url("d1.bin"))
        run.assert_ok()
        assert_tls_version(run, version)
        out = tmp_path / f"l{version}"
        out.mkdir()
        lftp(server, [f"get d0.bin -o {out}/d0.bin", f"get d1.bin -o {out}/d1.bin"],
             extra_settings=LFTP_TLS + [f"set ssl:priority {LFTP_VERSION[version]}"]
             ).assert_ok()
        for i in range(2):
            assert sha256_file(tmp_path / f"c{version}-{i}") == samples[MiB].sha256
            assert sha256_file(out / f"d{i}.bin") == samples[MiB].sha256
    ftp = ftps_login(server, cls=ftplib.FTP_TLS)
    reply = refused_reply(ftp, lambda: ftp.retrbinary("RETR d0.bin", lambda chunk: None))
    assert reply.startswith("522 TLS session reuse required"), reply
    ftp.close()


# --------------------------------------------------------------------------------------------
# the AUTH TLS injection defence


def test_commands_pipelined_after_auth_tls_are_not_executed(tls_server):
    tls_server.path("victim.txt").write_bytes(b"keep me")
    raw = socket.create_connection(("127.0.0.1", tls_server.port), timeout=SOCKET_TIMEOUT)
    f = raw.makefile("rb")
    assert f.readline().startswith(b"220")
    u = tls_server.users[tls_server.user]
    raw.sendall(f"AUTH TLS\r\nUSER {u.name}\r\nPASS {u.password}\r\nDELE victim.txt\r\n".encode())
    assert f.readline().startswith(b"234")
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tf = tls.makefile("rb")
    tls.sendall(b"PWD\r\n")
    assert tf.readline().startswith(b"530"), "nothing pipelined ran: not logged in"
    tls.sendall(b"QUIT\r\n")
    assert tf.readline().startswith(b"221")
    tls.close()
    assert tls_server.path("victim.txt").read_bytes() == b"keep me"
    assert "discarded input pipelined after AUTH TLS" in tls_server.log()


# --------------------------------------------------------------------------------------------
# certificate reload


def served_fingerprint(server) -> str:
    der = None
    with socket.create_connection(("127.0.0.1", implicit_port(server)),
                                  timeout=SOCKET_TIMEOUT) as raw:
        with client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("trigger", ["file-change", "sighup"])
def test_certificate_replaced_on_disk_is_picked_up_without_restart(start_server, certs,
                                                                   tmp_path, trigger):
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    cert.write_bytes(certs["cert"].read_bytes())
    key.write_bytes(certs["key"].read_bytes())
    check = '"200ms"' if trigger == "file-change" else '"0s"'
    server = start_server(config=tls_config(certs, cert=cert, key=key,
                                            extra=f"reload_check = {check}"))
    assert served_fingerprint(server) == pem_fingerprint(certs["cert"])
    # A session opened before the change survives it.
    ftp = ftps_login(server)
    key.write_bytes(certs["key2"].read_bytes())
    cert.write_bytes(certs["cert2"].read_bytes())
    if trigger == "sighup":
        server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: served_fingerprint(server) == pem_fingerprint(certs["cert2"]),
             "the new certificate to be served", timeout=30)
    assert ftp.voidcmd("NOOP").startswith("200")
    out = io.BytesIO()
    ftp.retrlines("NLST", out.write)
    ftp.quit()
    assert server.proc.poll() is None


# --------------------------------------------------------------------------------------------
# client certificates


def test_client_certificates_accepted_and_refused(start_server, certs, samples, tmp_path):
    server = start_server(config=tls_config(certs, extra=f"""
client_ca = "{certs['ca']}"
client_cert = "required"
client_cert_user = "cn"
"""))
    alice_cert, alice_key = certs["alice"]
    url = server.url("mtls.bin")
    up = curl(*CURL_TLS, "--cert", alice_cert, "--key", alice_key, "-T", samples[MiB].path, url)
    up.assert_ok()
    assert sha256_file(server.path("mtls.bin")) == samples[MiB].sha256
    ftp = ftps_login(server, cert=certs["alice"])
    out = io.BytesIO()
    ftp.retrbinary("RETR mtls.bin", out.write)
    assert sha256_bytes(out.getvalue()) == samples[MiB].sha256
    ftp.quit()

    # Refused in the handshake. With TLS 1.3 the client learns it only at its first read, so
    # it may have sent USER: no reply ever came back.
    no_cert = curl(*CURL_TLS, "-o", tmp_path / "x", url)
    assert no_cert.returncode in (35, 56), no_cert.describe()
    assert all(not e.replies for e in no_cert.exchanges("USER")), no_cert.describe()
    other_ca = curl(*CURL_TLS, "--cert", certs["stranger"][0], "--key", certs["stranger"][1],
                    "-o", tmp_path / "y", url)
    assert other_ca.returncode in (35, 56), other_ca.describe()
    assert all(not e.replies for e in other_ca.exchanges("USER")), other_ca.describe()

