"""The upload rules on an S3 bucket when something dies (the object storage counterpart of
tests/system/test_storage_faults.py; loopback only, no namespaces, so it lives in the interop
suite):

- a client killed (SIGKILL, or its data connection reset first) in the middle of a 40 MiB
  upload onto an existing object: the object is unchanged (sha256), no new object appears, and
  a complete upload afterwards replaces it and leaves no resume state; 15 SIGKILLs in a row
  never publish a truncated object;
- a client whose upload is cut: `REST n` + `STOR` (ftplib) continues it to the exact bytes,
  from its end or from a part boundary (elsewhere 554); RMD of a directory holding only such
  resume state removes it; a second upload of a name while one runs gets 450;
- the server killed (SIGKILL) in the middle of an upload: no object; the multipart upload stays
  open as resume state, kept by a restart with `partial_expiry = "24h"`, then aborted (with the
  hidden objects under `<prefix>.ferroftp-partial/`) by a restart with `partial_expiry = "1s"`.

Every server here is a process of the test, stopped by PID; every wait is a bounded poll.
"""

from __future__ import annotations

import ftplib
import os
import signal
import socket
import struct

import pytest

from conftest import _start, _stop
from ftp_helpers import (BIG_PROC_TIMEOUT, MiB, curl, curl_popen, kill_hard, popen_stderr,
                         reset_data_connections, sha256_bytes)
from s3_helpers import (BIG, PARTIAL_DIR, assert_no_hidden_state_listed,  # noqa: F401 (fixtures)
                        bucket, cut_curl_upload, ftp_login, mlsd_names, retr, s3_server,
                        s3_settings, s3_start, sample_40m, stor, storage_toml, wait_for_parts,
                        wait_for_tail, wait_ftp_idle, wait_until)


@pytest.mark.time_limit(900)
@pytest.mark.parametrize("how", ["sigkill", "reset-then-sigkill"])
def test_killed_client_leaves_the_previous_version(s3_server, bucket, samples, sample_40m,
                                                   tmp_path, how):
    path, digest = sample_40m
    old = samples[MiB]
    curl("--ftp-pasv", "-T", old.path, s3_server.url("report.bin")).assert_ok()
    etag = bucket.head("report.bin")["ETag"]

    p = curl_popen("--ftp-pasv", "--limit-rate", "4M", "-T", path, s3_server.url("report.bin"))
    try:
        wait_for_parts(bucket, "report.bin", proc=p)
        if how == "reset-then-sigkill":
            os.kill(p.pid, signal.SIGSTOP)
            reset_data_connections(p.pid, s3_server.port)
    finally:
        kill_hard(p)
    wait_ftp_idle(s3_server, bucket.settings.port)
    wait_for_tail(bucket, "report.bin")

    assert bucket.visible_keys() == {"report.bin": MiB}, "the interrupted upload left an object"
    assert bucket.head("report.bin")["ETag"] == etag
    assert bucket.sha256("report.bin") == old.sha256
    out = tmp_path / "check.bin"
    curl("--ftp-pasv", "-o", out, s3_server.url("report.bin")).assert_ok()
    assert sha256_bytes(out.read_bytes()) == old.sha256
    ftp = ftp_login(s3_server)
    assert_no_hidden_state_listed(ftp)
    assert ftp.sendcmd("SIZE report.bin") == f"213 {MiB}"
    ftp.quit()

    # A complete upload (no REST) replaces it and drops the interrupted one's resume state.
    r = curl("--ftp-pasv", "-T", path, s3_server.url("report.bin"), timeout=BIG_PROC_TIMEOUT)
    r.assert_ok()
    r.assert_exchange("STOR", (125, 150), 226)
    assert bucket.sha256("report.bin") == digest
    assert bucket.visible_keys() == {"report.bin": BIG}
    assert bucket.hidden_keys() == {} and bucket.uploads() == []


@pytest.mark.time_limit(900)
def test_a_killed_client_never_publishes_a_truncated_object(s3_start, bucket, tmp_path):
    """The race of a killed client's two closes (data connection first, with an orderly FIN
    that is stream mode's end-of-file mark, the control connection some 100 us later), run
    15 times with part_size = 5MiB: the object stays the old one each time. Bounded: 15
    attempts; no timing is asserted."""
    server = s3_start(storage={"part_size": "5MiB"})
    old = os.urandom(1000)
    src = tmp_path / "new.bin"
    src.write_bytes(os.urandom(12 * MiB))
    ftp = ftp_login(server)
    assert stor(ftp, "report.bin", old)[:3] == "226"
    ftp.quit()
    etag = bucket.head("report.bin")["ETag"]
    for attempt in range(15):
        earlier = frozenset(bucket.uploads_of("report.bin"))
        p = curl_popen("--ftp-pasv", "--limit-rate", "8M", "-T", src, server.url("report.bin"))
        try:
            wait_for_parts(bucket, "report.bin", proc=p, exclude=earlier)
        finally:
            kill_hard(p)
        wait_ftp_idle(server, bucket.settings.port)
        wait_for_tail(bucket, "report.bin")
        assert bucket.head("report.bin")["ETag"] == etag, \
            f"attempt {attempt}: the killed upload replaced the object"
        assert bucket.visible_keys() == {"report.bin": len(old)}, attempt
    assert bucket.get("report.bin") == old


def reset_socket(sock: socket.socket):
    """Close with an RST (SO_LINGER 0): an unambiguous interruption, not an end of file."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def reset_control(ftp: ftplib.FTP):
    """The control connection closed with an RST (ftplib's file object holds the socket
    open until it is closed too)."""
    ftp.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ftp.close()


@pytest.mark.time_limit(900)
def test_rest_stor_after_a_cut_gives_the_exact_bytes(s3_server, bucket):
    data = os.urandom(30 * MiB + 12345)
    ftp = ftp_login(s3_server)
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("STOR cut.bin")
    conn.sendall(data[:20 * MiB])
    # At least one part is in the bucket before the cut (default part_size 8 MiB).
    parts = wait_for_parts(bucket, "cut.bin", at_least=8 * MiB)
    reset_socket(conn)
    reset_control(ftp)
    wait_ftp_idle(s3_server, bucket.settings.port)
    assert bucket.head("cut.bin") is None, "half an upload appeared under the final name"

    # At once, without waiting for the tail object the server writes in the background:
    # SIZE and the new upload wait for it (no 450, no SIZE of the parts alone).
    ftp = ftp_login(s3_server)
    ftp.voidcmd("TYPE I")
    reply = ftp.sendcmd("SIZE cut.bin")
    assert reply.startswith("213 "), reply
    have = int(reply[4:])
    assert bucket.key(PARTIAL_DIR + "cut.bin") in bucket.hidden_keys(), bucket.keys()
    assert parts <= have <= 20 * MiB, f"SIZE {have}; {parts} bytes in parts before the cut"
    assert_no_hidden_state_listed(ftp)
    assert "cut.bin" not in mlsd_names(ftp)
    assert stor(ftp, "cut.bin", data[have:], rest=have)[:3] == "226"
    assert bucket.sha256("cut.bin") == sha256_bytes(data)
    assert sha256_bytes(retr(ftp, "cut.bin")) == sha256_bytes(data)
    assert bucket.hidden_keys() == {} and bucket.uploads() == []
    ftp.quit()


@pytest.mark.time_limit(900)
def test_rest_inside_a_cut_upload_only_on_a_part_boundary(s3_start, bucket):
    """S3 cannot read back a part not yet in an object: inside a cut upload REST + STOR works
    at a part boundary (and at the end), elsewhere 554 (docs/object-storage.md). With
    part_size = 5MiB."""
    server = s3_start(storage={"part_size": "5MiB", "parts_in_flight": 2})
    part = 5 * MiB
    data = os.urandom(4 * part + 999)
    ftp = ftp_login(server)
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("STOR b.bin")
    conn.sendall(data[:3 * part + 12345])
    wait_for_parts(bucket, "b.bin", at_least=2 * part)
    reset_socket(conn)
    reset_control(ftp)
    wait_ftp_idle(server, bucket.settings.port)
    wait_for_tail(bucket, "b.bin")

    ftp = ftp_login(server)
    ftp.voidcmd("TYPE I")
    have = int(ftp.sendcmd("SIZE b.bin")[4:])
    assert 2 * part <= have <= 3 * part + 12345, have
    with pytest.raises(ftplib.error_perm, match="^554"):
        stor(ftp, "b.bin", data[part + 1:], rest=part + 1)
    with pytest.raises(ftplib.error_perm, match="^554"):
        stor(ftp, "b.bin", b"x", rest=have + 1)
    assert int(ftp.sendcmd("SIZE b.bin")[4:]) == have, "a refused REST changed the state"
    assert stor(ftp, "b.bin", data[part:], rest=part)[:3] == "226"
    assert bucket.sha256("b.bin") == sha256_bytes(data)
    assert bucket.hidden_keys() == {} and bucket.uploads() == []
    ftp.quit()


@pytest.mark.time_limit(900)
def test_rmd_of_a_directory_with_only_resume_state_removes_it(s3_server, bucket, sample_40m):
    """The resume state below a directory is invisible, so it does not keep RMD from working,
    and a new directory of the same name does not inherit it."""
    path, _ = sample_40m
    ftp = ftp_login(s3_server)
    assert ftp.mkd("d") == "/d"
    ftp.quit()
    cut_curl_upload(s3_server, bucket, path, "d/x.bin")
    ftp = ftp_login(s3_server)
    assert mlsd_names(ftp, "d") == {}
    assert ftp.sendcmd("RMD d")[:3] == "250"
    assert bucket.keys() == {} and bucket.uploads() == [], (bucket.keys(), bucket.uploads())
    assert ftp.mkd("d") == "/d"
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.sendcmd("SIZE d/x.bin")
    ftp.quit()


@pytest.mark.time_limit(900)
def test_a_second_upload_of_the_same_name_waits_its_turn(s3_server, bucket, sample_40m):
    """Two uploads of one name on one server are serialised: the second gets 450 while the
    first runs; the first completes with its own bytes."""
    path, digest = sample_40m
    p = curl_popen("--ftp-pasv", "--limit-rate", "8M", "-T", path, s3_server.url("one.bin"))
    try:
        wait_for_parts(bucket, "one.bin", proc=p)
        ftp = ftp_login(s3_server)
        with pytest.raises(ftplib.error_temp, match="^450"):
            stor(ftp, "one.bin", b"second")
        ftp.quit()
        assert p.wait(timeout=BIG_PROC_TIMEOUT) == 0, popen_stderr(p)
    finally:
        kill_hard(p)
    assert bucket.sha256("one.bin") == digest
    assert bucket.hidden_keys() == {} and bucket.uploads() == []


@pytest.mark.time_limit(900)
def test_server_killed_mid_upload_then_restarts_expire_the_resume_state(
        bucket, ferroftp_bin, sample_40m, tmp_path):
    path, _ = sample_40m
    servers = []

    def start(n: int, expiry: str):
        storage = storage_toml(bucket, tmp_path / f"s{n}", partial_expiry=expiry)
        s = _start(ferroftp_bin, tmp_path / f"server{n}", storage=storage)
        servers.append(s)
        return s

    try:
        # A client-cut upload (resume state: parts and the hidden tail), then an upload
        # during which the server is killed.
        first = start(0, "24h")
        cut_parts = cut_curl_upload(first, bucket, path, "cut.bin")
        ftp = ftp_login(first)
        kept = int(ftp.sendcmd("SIZE cut.bin")[4:])
        ftp.quit()
        assert cut_parts <= kept < BIG

        p = curl_popen("--ftp-pasv", "--limit-rate", "4M", "-T", path, first.url("crash.bin"))
        try:
            wait_for_parts(bucket, "crash.bin", proc=p)
            os.kill(first.pid, signal.SIGKILL)
            first.proc.wait(timeout=30)
        finally:
            kill_hard(p)
        assert bucket.head("crash.bin") is None, "the killed server published half an upload"
        assert bucket.visible_keys() == {}, bucket.keys()
        assert bucket.uploads_of("crash.bin"), "the open multipart upload was not kept"

        # A restart within the expiry keeps the resume state and shows none of it.
        second = start(1, "24h")
        ftp = ftp_login(second)
        assert_no_hidden_state_listed(ftp)
        assert mlsd_names(ftp) == {}
        with pytest.raises(ftplib.error_perm, match="^550"):
            retr(ftp, "crash.bin")
        assert ftp.sendcmd("SIZE cut.bin") == f"213 {kept}"
        ftp.quit()
        _stop(second.proc)
        assert bucket.uploads_of("crash.bin") and bucket.uploads_of("cut.bin")

        # With partial_expiry = 1s everything hidden goes (at start, or at the next sweep).
        third = start(2, "1s")
        wait_until(lambda: not bucket.uploads() and not bucket.hidden_keys(),
                   "the expired multipart uploads aborted and the hidden objects removed")
        ftp = ftp_login(third)
        with pytest.raises(ftplib.error_perm, match="^550"):
            ftp.sendcmd("SIZE cut.bin")
        assert stor(ftp, "after.bin", b"after")[:3] == "226"
        assert retr(ftp, "after.bin") == b"after"
        ftp.quit()
        assert bucket.visible_keys() == {"after.bin": 5}
    finally:
        for s in servers:
            _stop(s.proc)
            print(f"--- server {s.argv} (pid {s.pid}) log tail ---")
            print(s.log()[-6000:])
