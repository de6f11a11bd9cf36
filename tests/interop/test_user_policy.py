"""Per-user limits with the real binary (docs/security.md, "Limits and quotas"): a
download_rate shared by all of a user's sessions, quota_bytes refusing an upload with 552 and
publishing nothing, and the zero-copy path kept for unthrottled downloads (strace)."""

from __future__ import annotations

import ftplib
import shutil
import subprocess
import threading
import time

import pytest

from conftest import User
from ftp_helpers import MiB, curl, sha256_file, write_random


def set_limits(ferroftp_bin: str, server, user: str, *options: str):
    """`ferroftp user limits`: the running server reads the users file again at the next
    login, as after any edit."""
    argv = [ferroftp_bin, "user", "limits", user, "--users", str(server.users_file), *options]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, (argv, p.stdout, p.stderr)
    return p.stdout.decode()


def parallel_downloads(server, user: str, names: list[str], tmp_path) -> tuple[float, list]:
    """Downloads every name at once, each over its own session of `user`; returns the time
    until the last one ended, and the curl runs."""
    runs: list = [None] * len(names)

    def fetch(index: int, name: str):
        runs[index] = curl("--ftp-pasv", "-o", tmp_path / f"got-{index}", server.url(name, user),
                           timeout=120)

    threads = [threading.Thread(target=fetch, args=(i, n)) for i, n in enumerate(names)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)
    return time.monotonic() - started, runs


@pytest.mark.time_limit(240)
def test_download_rate_is_shared_by_all_sessions_of_the_user(start_server, ferroftp_bin,
                                                             tmp_path):
    # Two 4 MiB downloads by one user over two sessions: 8 MiB at a shared 1 MB/s (burst 1 s)
    # take about 7.4 s; each session alone at 1 MB/s would finish in about 3.2 s.
    server = start_server(users=[User("shared", "pw-shared"), User("alice", "pw-alice")])
    shas = [write_random(server.path(f"big{i}.bin"), 4 * MiB) for i in range(2)]
    names = ["big0.bin", "big1.bin"]

    unthrottled, runs = parallel_downloads(server, "shared", names, tmp_path)
    for run in runs:
        run.assert_ok()

    assert "download_rate 1MB/s" in set_limits(ferroftp_bin, server, "shared",
                                               "--download-rate", "1MB/s")
    throttled, runs = parallel_downloads(server, "shared", names, tmp_path)
    for index, run in enumerate(runs):
        run.assert_ok()
        run.assert_exchange("RETR", (125, 150), 226)
        got = tmp_path / f"got-{index}"
        assert got.stat().st_size == 4 * MiB
        assert sha256_file(got) == shas[index]
    # Ratios and lower bounds only: a loaded machine can make a transfer slower, never make
    # a bucket hand out more than its rate. Per-connection buckets would take ~3.2 s.
    assert throttled >= 5 * unthrottled, (throttled, unthrottled)
    assert throttled >= 6.0, throttled

    # Another user is not held back by the shared user's bucket.
    other, runs = parallel_downloads(server, "alice", ["big0.bin"], tmp_path)
    runs[0].assert_ok()
    assert other < throttled / 2, (other, throttled)


def test_quota_bytes_refuses_the_upload_with_552_and_publishes_nothing(start_server,
                                                                      ferroftp_bin, tmp_path):
    server = start_server(users=[User("quota", "pw-quota", home="/q")])
    set_limits(ferroftp_bin, server, "quota", "--quota-bytes", "1MB")
    first = tmp_path / "first.bin"
    first_sha = write_random(first, 600_000)
    second = tmp_path / "second.bin"
    write_random(second, 600_000)

    ftp = ftplib.FTP()
    ftp.connect(server.host, server.port, timeout=30)
    ftp.login("quota", "pw-quota")
    with open(first, "rb") as f:
        assert ftp.storbinary("STOR first.bin", f).startswith("226")
    # 600 kB more would make 1.2 MB: refused while receiving.
    with open(second, "rb") as f, pytest.raises(ftplib.error_perm, match="^552 "):
        ftp.storbinary("STOR second.bin", f)
    # Replacing first.bin by a version that does not fit keeps the first version.
    big = tmp_path / "big.bin"
    write_random(big, 1_200_000)
    with open(big, "rb") as f, pytest.raises(ftplib.error_perm, match="^552 "):
        ftp.storbinary("STOR first.bin", f)
    # ALLO announces the size: refused before any byte is sent.
    assert ftp.sendcmd("ALLO 500000").startswith("200")
    with open(second, "rb") as f, pytest.raises(ftplib.error_perm, match="^552 Quota exceeded"):
        ftp.storbinary("STOR third.bin", f)
    quota = ftp.sendcmd("SITE QUOTA")
    assert "Bytes: 600000 of 1000000" in quota, quota
    assert ftp.nlst() == ["first.bin"]
    ftp.quit()

    home = server.path("q")
    assert sorted(p.name for p in home.iterdir() if not p.name.startswith(".")) == ["first.bin"]
    assert sha256_file(home / "first.bin") == first_sha


def sendfile_calls(pid: int, run_transfer) -> int:
    """Counts the server's sendfile calls while `run_transfer` runs (strace -c)."""
    out = subprocess.Popen(["strace", "-f", "-c", "-e", "trace=sendfile", "-p", str(pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # strace attaches to every thread before the transfer starts
        run_transfer()
    finally:
        out.send_signal(2)
        _, err = out.communicate(timeout=30)
    text = err.decode(errors="replace")
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[-1] == "sendfile":
            return int(fields[3])
    return 0


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_unthrottled_downloads_keep_sendfile_and_throttled_ones_do_not(start_server,
                                                                      ferroftp_bin, tmp_path):
    server = start_server(users=[User("fast", "pw-fast"), User("slow", "pw-slow")])
    sha = write_random(server.path("f.bin"), 2 * MiB)
    set_limits(ferroftp_bin, server, "slow", "--download-rate", "4MB/s")

    def fetch(user: str):
        def run():
            r = curl("--ftp-pasv", "-o", tmp_path / f"{user}.bin", server.url("f.bin", user))
            r.assert_ok()
            assert sha256_file(tmp_path / f"{user}.bin") == sha
        return run

    assert sendfile_calls(server.pid, fetch("fast")) >= 2
    assert sendfile_calls(server.pid, fetch("slow")) == 0
