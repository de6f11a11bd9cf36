"""Storage faults: a full disk (the storage root on a small tmpfs this test mounts and
unmounts) and the server killed with SIGKILL in the middle of uploads. Loopback only
(127.0.0.1); every server is a process of this test, stopped by PID at teardown.
"""

from __future__ import annotations

import ftplib
import hashlib
import os
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from test_service import Service, add_user

PARTIAL_PREFIX = ".ferroftp-partial."
MiB = 1 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def serve(ferroftp_bin: str, workdir: Path, root: Path, ports: str, config: str = "") -> Service:
    (workdir / "ferroftp.toml").write_text(config)
    return Service([ferroftp_bin, "serve", "--config", "ferroftp.toml", "--root", str(root),
                    "--users", "users.toml", "--listen", "127.0.0.1:0",
                    "--passive-ports", ports], workdir)


def login(service: Service, password: str) -> ftplib.FTP:
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", service.port, timeout=30)
    ftp.login("alice", password)
    return ftp


def store(ftp: ftplib.FTP, name: str, data: bytes) -> str:
    """STOR `data` in binary mode (ftplib's listings switch to TYPE A); the final reply's
    code, whatever it is (a server that stops reading may make the sending fail first: the
    reply is what counts)."""
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd(f"STOR {name}")
    try:
        conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()
    try:
        return ftp.voidresp()[:3]
    except ftplib.all_errors as error:
        return str(error)[:3]


def retrieve(ftp: ftplib.FTP, name: str) -> bytes:
    chunks: list[bytes] = []
    ftp.retrbinary(f"RETR {name}", chunks.append)
    return b"".join(chunks)


def listings(ftp: ftplib.FTP) -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {"LIST": [], "MLSD": []}
    ftp.retrlines("LIST", lines["LIST"].append)
    ftp.retrlines("MLSD", lines["MLSD"].append)
    lines["NLST"] = ftp.nlst()
    return lines


def assert_no_partial_visible(ftp: ftplib.FTP, expected: list[str]):
    for verb, lines in listings(ftp).items():
        assert not any(PARTIAL_PREFIX in line for line in lines), f"{verb}: {lines}"
        assert len(lines) == len(expected), f"{verb}: {lines}"
        for name in expected:
            assert any(line.endswith(name) for line in lines), f"{verb}: {lines}"


@pytest.fixture
def tmpfs_root(tmp_path):
    """A 4 MiB tmpfs mounted for this test, unmounted at teardown whatever happened."""
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs",
                    str(mountpoint)], check=True, timeout=30)
    try:
        yield mountpoint
    finally:
        # The test stops its server first; should one still hold the root, a lazy unmount
        # detaches the tmpfs all the same.
        p = subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=30)
        if p.returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=True, timeout=30)


def test_a_full_disk_refuses_the_upload_keeps_the_old_version_and_recovers(
        ferroftp_bin, tmp_path, tmpfs_root):
    password = add_user(ferroftp_bin, tmp_path / "users.toml")
    service = serve(ferroftp_bin, tmp_path, tmpfs_root, "42300-42310")
    try:
        ftp = login(service, password)
        old = secrets.token_bytes(MiB)
        assert store(ftp, "report.bin", old) == "226"
        assert store(ftp, "filler.bin", secrets.token_bytes(MiB)) == "226"
        # 2.5 MiB does not fit beside 2 MiB on a 4 MiB disk: 552 (RFC 959, storage
        # allocation exceeded), nothing published, the old version intact.
        new = secrets.token_bytes(5 * MiB // 2)
        assert store(ftp, "report.bin", new) == "552"
        assert sha256(retrieve(ftp, "report.bin")) == sha256(old)
        assert_no_partial_visible(ftp, ["report.bin", "filler.bin"])
        # Space freed: the same server serves normally, no restart.
        assert ftp.sendcmd("DELE filler.bin")[:3] == "250"
        assert store(ftp, "report.bin", new) == "226"
        assert sha256(retrieve(ftp, "report.bin")) == sha256(new)
        assert_no_partial_visible(ftp, ["report.bin"])
        assert sorted(os.listdir(tmpfs_root)) == ["report.bin"]
        ftp.quit()
    finally:
        service.stop()


class SlowUpload(threading.Thread):
    """STOR of `data` in 64 KiB pieces with pauses, until the connection breaks."""

    def __init__(self, service: Service, password: str, name: str, data: bytes):
        super().__init__(daemon=True)
        self.ftp = login(service, password)
        self.name = name
        self.data = data

    def run(self):
        try:
            self.ftp.voidcmd("TYPE I")
            conn = self.ftp.transfercmd(f"STOR {self.name}")
            for offset in range(0, len(self.data), 64 * 1024):
                conn.sendall(self.data[offset:offset + 64 * 1024])
                time.sleep(0.02)
        except OSError:
            pass


def test_server_killed_mid_upload_leaves_no_visible_partial_and_expires_old_partial_data(
        ferroftp_bin, tmp_path):
    password = add_user(ferroftp_bin, tmp_path / "users.toml")
    root = tmp_path / "root"
    root.mkdir()
    config = '[storage]\npartial_expiry = "1h"\n'
    service = serve(ferroftp_bin, tmp_path, root, "42320-42330", config)
    uploads: list[SlowUpload] = []
    try:
        ftp = login(service, password)
        old = {name: secrets.token_bytes(MiB + i) for i, name in enumerate(["a.bin", "b.bin"])}
        for name, data in old.items():
            assert store(ftp, name, data) == "226"
        ftp.quit()
        # Two replacements and one new file under way, then SIGKILL.
        for name in ["a.bin", "b.bin", "new.bin"]:
            upload = SlowUpload(service, password, name, secrets.token_bytes(16 * MiB))
            upload.start()
            uploads.append(upload)
        deadline = time.monotonic() + 60
        while not all((root / (PARTIAL_PREFIX + u.name)).exists()
                      and (root / (PARTIAL_PREFIX + u.name)).stat().st_size >= 256 * 1024
                      for u in uploads):
            assert time.monotonic() < deadline, f"uploads did not start: {os.listdir(root)}"
            time.sleep(0.05)
        service.proc.send_signal(signal.SIGKILL)
        service.proc.wait(timeout=30)
    finally:
        service.stop()
        for upload in uploads:
            upload.join(timeout=30)
    # Partial data from long ago (an older crash), which the restart must remove.
    stale = root / (PARTIAL_PREFIX + "stale.bin")
    stale.write_bytes(b"stale")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    service = serve(ferroftp_bin, tmp_path, root, "42320-42330", config)
    try:
        deadline = time.monotonic() + 30
        while stale.exists():
            assert time.monotonic() < deadline, "stale partial data not removed at start"
            time.sleep(0.05)
        ftp = login(service, password)
        assert_no_partial_visible(ftp, ["a.bin", "b.bin"])
        for name, data in old.items():
            assert sha256(retrieve(ftp, name)) == sha256(data), name
        for name in ["new.bin", PARTIAL_PREFIX + "a.bin", PARTIAL_PREFIX + "new.bin"]:
            with pytest.raises(ftplib.error_perm) as refused:
                retrieve(ftp, name)
            assert str(refused.value)[:3] in ("550", "553"), (name, refused.value)
        # The recent partial data of the killed uploads stays for a resume: SIZE reports it.
        have = (root / (PARTIAL_PREFIX + "new.bin")).stat().st_size
        assert ftp.sendcmd("SIZE new.bin") == f"213 {have}"
        ftp.quit()
    finally:
        service.stop()
