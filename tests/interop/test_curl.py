"""curl against ferroftp: passive (EPSV and PASV) and active (EPRT and PORT) transfers of
0 B, 1 B, 1 MiB and 100 MiB, ASCII mode, listings, -Q commands, and resumed downloads and
uploads after the client was killed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest


from ftp_helpers import (BIG_PROC_TIMEOUT, MiB, curl, curl_popen, curl_traced, file_size, kill_hard,
                         reset_data_connections,
                         nlst_names, parse_epsv, parse_pasv, parse_unix_list, raw_session,
                         sha256_file, wait_for, wait_server_idle)

PARTIAL_PREFIX = ".ferroftp-partial."

# mode -> (curl flags, data-channel verb expected, its reply code, verbs that must not be sent)
MODES = {
    "passive-epsv": (["--ftp-pasv"], "EPSV", 229, ("PASV", "PORT", "EPRT")),
    "passive-pasv": (["--ftp-pasv", "--disable-epsv"], "PASV", 227, ("EPSV", "PORT", "EPRT")),
    "active-eprt": (["-P", "127.0.0.1"], "EPRT", 200, ("PORT", "PASV", "EPSV")),
    "active-port": (["-P", "127.0.0.1", "--disable-eprt"], "PORT", 200, ("EPRT", "PASV", "EPSV")),
}


def check_data_setup(run, server, mode):
    _, verb, code, forbidden = MODES[mode]
    exchanges = run.exchanges(verb)
    assert exchanges, f"{verb} never sent\n{run.describe()}"
    for ex in exchanges:
        assert ex.codes == [code], f"{verb}: {ex.replies}\n{run.describe()}"
        if verb == "EPSV":
            port = parse_epsv(ex.replies[0][1])
            assert server.in_passive_range(port), f"EPSV port {port} outside {server.passive_range}"
        elif verb == "PASV":
            host, port = parse_pasv(ex.replies[0][1])
            assert host == "127.0.0.1", f"PASV advertised {host}"
            assert server.in_passive_range(port), f"PASV port {port} outside {server.passive_range}"
    sent = run.sent_verbs()
    for v in forbidden:
        assert v not in sent, f"curl fell back to {v}: the server refused {verb}?\n{run.describe()}"


def no_partials(server, directory=""):
    d = server.path(directory)
    return [n for n in os.listdir(d) if n.startswith(PARTIAL_PREFIX)]


def read_or_empty(path) -> bytes:
    # curl does not create the output file when a download has no bytes at all.
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def roundtrip(server, tmp_path, mode, sample, name, timeout=120):
    flags = MODES[mode][0]
    up = curl(*flags, "-T", sample.path, server.url(name), timeout=timeout)
    up.assert_ok()
    up.assert_exchange("STOR", (125, 150), 226)
    check_data_setup(up, server, mode)
    assert sha256_file(server.path(name)) == sample.sha256
    assert no_partials(server) == []

    out = tmp_path / f"down-{name}"
    down = curl(*flags, "-o", out, server.url(name), timeout=timeout)
    down.assert_ok()
    down.assert_exchange("RETR", (125, 150), 226)
    check_data_setup(down, server, mode)
    if sample.size == 0:
        assert read_or_empty(out) == b""
    else:
        assert sha256_file(out) == sample.sha256


@pytest.mark.parametrize("size", [0, 1, MiB], ids=["0B", "1B", "1MiB"])
@pytest.mark.parametrize("mode", list(MODES))
def test_upload_download(server, samples, tmp_path, mode, size):
    roundtrip(server, tmp_path, mode, samples[size], f"file-{size}.bin")


@pytest.mark.time_limit(1200)
@pytest.mark.parametrize("mode", list(MODES))
def test_upload_download_100mib(server, big_sample, tmp_path, mode):
    roundtrip(server, tmp_path, mode, big_sample, "big.bin", timeout=BIG_PROC_TIMEOUT)


def test_size_after_upload(server, samples):
    s = samples[MiB]
    curl("--ftp-pasv", "-T", s.path, server.url("sized.bin")).assert_ok()
    r = curl("-Q", "TYPE I", "-Q", "SIZE sized.bin", "-l", server.url(""))
    r.assert_ok()
    ex = r.assert_exchange("SIZE", 213)
    assert ex.replies[0][1].strip() == str(MiB)


# --------------------------------------------------------------------------------------------
# ASCII mode

TEXT_LF = b"first line\nsecond line\n\nafter an empty line\nno newline at the end"
TEXT_CRLF = TEXT_LF.replace(b"\n", b"\r\n")


@pytest.mark.parametrize("how", ["--use-ascii", ";type=A"])
def test_ascii_download_converts_lf_to_crlf(server, tmp_path, how):
    server.path("text.txt").write_bytes(TEXT_LF)
    out = tmp_path / "text.out"
    if how == "--use-ascii":
        args = ["--use-ascii", "-o", out, server.url("text.txt")]
    else:
        args = ["-o", out, server.url("text.txt;type=A")]
    r = curl_traced("--ftp-pasv", *args, trace_path=tmp_path / "trace")
    r.assert_ok()
    assert r.exchanges("TYPE")[-1].command == "TYPE A"
    r.assert_exchange("TYPE", 200)
    r.assert_exchange("RETR", (125, 150), 226)
    assert r.data_in == TEXT_CRLF, "the server must send CRLF line ends in ASCII mode"
    # curl turns the network form back into LF line ends on Unix.
    assert out.read_bytes() == TEXT_LF


def test_ascii_upload_converts_crlf_to_lf(server, tmp_path):
    src = tmp_path / "lf.txt"
    src.write_bytes(TEXT_LF)
    r = curl_traced("--ftp-pasv", "--use-ascii", "-T", src, server.url("stored.txt"),
                    trace_path=tmp_path / "trace")
    r.assert_ok()
    assert r.exchanges("TYPE")[-1].command == "TYPE A"
    r.assert_exchange("STOR", (125, 150), 226)
    # curl sends the network (CRLF) form; the server stores the local (LF) form.
    assert r.data_out == TEXT_CRLF
    assert server.path("stored.txt").read_bytes() == TEXT_LF


def test_ascii_upload_type_a_url(server, tmp_path):
    src = tmp_path / "lf.txt"
    src.write_bytes(TEXT_LF)
    r = curl_traced("--ftp-pasv", "-T", src, server.url("stored.txt;type=A"),
                    trace_path=tmp_path / "trace")
    r.assert_ok()
    assert r.exchanges("TYPE")[-1].command == "TYPE A"
    r.assert_exchange("STOR", (125, 150), 226)
    assert r.data_out == TEXT_CRLF
    assert server.path("stored.txt").read_bytes() == TEXT_LF


def test_binary_mode_keeps_crlf(server, tmp_path):
    src = tmp_path / "crlf.bin"
    src.write_bytes(TEXT_CRLF)
    curl("--ftp-pasv", "-T", src, server.url("crlf.bin")).assert_ok()
    assert server.path("crlf.bin").read_bytes() == TEXT_CRLF
    out = tmp_path / "crlf.out"
    r = curl("--ftp-pasv", "-o", out, server.url("crlf.bin"))
    r.assert_ok()
    assert r.exchanges("TYPE")[-1].command == "TYPE I"
    assert out.read_bytes() == TEXT_CRLF


# --------------------------------------------------------------------------------------------
# listings


def make_tree(server):
    d = server.path("dir")
    d.mkdir()
    (d / "a.txt").write_bytes(b"hello")
    (d / "b.bin").write_bytes(b"\x00\x01\x02")
    (d / "empty").write_bytes(b"")
    (d / "with space.txt").write_bytes(b"1234567")
    (d / "sub").mkdir()
    return {"a.txt": ("-", 5), "b.bin": ("-", 3), "empty": ("-", 0),
            "with space.txt": ("-", 7), "sub": ("d", None)}


@pytest.mark.parametrize("mode", ["passive-epsv", "active-port"])
def test_list_directory(server, mode):
    expected = make_tree(server)
    r = curl(*MODES[mode][0], server.url("dir/"))
    r.assert_ok()
    r.assert_exchange("CWD", 250)
    r.assert_exchange("LIST", (125, 150), 226)
    listing = parse_unix_list(r.stdout.decode())
    listing = {k: v for k, v in listing.items() if k not in (".", "..")}
    assert set(listing) == set(expected), listing
    for name, (kind, size) in expected.items():
        assert listing[name][0] == kind, (name, listing[name])
        if size is not None:
            assert listing[name][1] == size, (name, listing[name])


def test_nlst_directory(server):
    expected = make_tree(server)
    r = curl("--ftp-pasv", "-l", server.url("dir/"))
    r.assert_ok()
    r.assert_exchange("NLST", (125, 150), 226)
    assert sorted(nlst_names(r.stdout.decode())) == sorted(expected)


def test_list_missing_directory(server):
    r = curl("--ftp-pasv", server.url("nope/"))
    assert r.returncode == 9, r.describe()        # CURLE_REMOTE_ACCESS_DENIED: CWD failed
    r.assert_exchange("CWD", 550)


# --------------------------------------------------------------------------------------------
# -Q commands


def test_quote_commands(server):
    server.path("old.txt").write_bytes(b"old")
    server.path("del.txt").write_bytes(b"del")
    r = curl("--ftp-pasv", "-Q", "MKD newdir", "-Q", "RNFR old.txt", "-Q", "RNTO new.txt",
             "-Q", "DELE del.txt", "-l", server.url(""))
    r.assert_ok()
    r.assert_exchange("MKD", 257)
    r.assert_exchange("RNFR", 350)
    r.assert_exchange("RNTO", 250)
    r.assert_exchange("DELE", 250)
    assert server.path("newdir").is_dir()
    assert server.path("new.txt").read_bytes() == b"old"
    assert not server.path("old.txt").exists()
    assert not server.path("del.txt").exists()
    assert sorted(nlst_names(r.stdout.decode())) == ["new.txt", "newdir"]

    r = curl("--ftp-pasv", "-Q", "RMD newdir", "-l", server.url(""))
    r.assert_ok()
    r.assert_exchange("RMD", 250)
    assert not server.path("newdir").exists()


def test_quote_command_failure(server):
    r = curl("--ftp-pasv", "-Q", "DELE missing.txt", "-l", server.url(""))
    assert r.returncode == 21, r.describe()       # CURLE_QUOTE_ERROR
    r.assert_exchange("DELE", 550)


# --------------------------------------------------------------------------------------------
# resumed downloads


def test_resume_download_from_partial_local_file(server, samples, tmp_path):
    s = samples[MiB]
    server.path("file.bin").write_bytes(s.path.read_bytes())
    out = tmp_path / "file.bin"
    cut = 300_001
    out.write_bytes(s.path.read_bytes()[:cut])
    r = curl("--ftp-pasv", "-C", "-", "-o", out, server.url("file.bin"))
    r.assert_ok()
    ex = r.assert_exchange("SIZE", 213)
    assert ex.replies[0][1].strip() == str(MiB)
    rest = r.assert_exchange("REST", 350)
    assert rest.command == f"REST {cut}"
    r.assert_exchange("RETR", (125, 150), 226)
    assert sha256_file(out) == s.sha256


def test_resume_killed_download(server, big_sample, tmp_path):
    s = big_sample
    server.path("file.bin").write_bytes(s.path.read_bytes())
    out = tmp_path / "file.bin"
    # curl lets a first burst through its rate limit, hence the 100 MiB file and the 12 MiB mark.
    p = curl_popen("--ftp-pasv", "--limit-rate", "2M", "-o", out, server.url("file.bin"))
    try:
        wait_for(lambda: file_size(out) >= 12 * MiB, "12 MiB of the download", proc=p)
    finally:
        kill_hard(p)
    have = file_size(out)
    assert 0 < have < s.size
    r = curl("--ftp-pasv", "-C", "-", "-o", out, server.url("file.bin"), timeout=BIG_PROC_TIMEOUT)
    r.assert_ok()
    rest = r.assert_exchange("REST", 350)
    assert rest.command == f"REST {have}"
    r.assert_exchange("RETR", (125, 150), 226)
    assert sha256_file(out) == s.sha256


# --------------------------------------------------------------------------------------------
# interrupted uploads


INTERRUPTIONS = ["sigkill", "reset-then-sigkill"]


def start_killed_upload(server, sample, name, mode="passive-epsv", how="sigkill",
                        limit_rate="256K", kill_after=512 * 1024):
    """Upload `sample` through a rate limit; once the server has written at least `kill_after`
    bytes (512 KiB) to the hidden partial file, interrupt it: `sigkill` kills curl (SIGKILL, by PID);
    `reset-then-sigkill` first stops curl, resets its data connection (RST, see
    reset_data_connections) and then kills it. Then wait until the server holds no connection
    and no file of the root any more."""
    partial = server.path(PARTIAL_PREFIX + name)
    p = curl_popen(*MODES[mode][0], "--limit-rate", limit_rate, "-T", sample.path,
                   server.url(name))
    try:
        wait_for(lambda: file_size(partial) >= kill_after,
                 f"the partial file {partial.name} to reach {kill_after} bytes", proc=p)
        if how == "reset-then-sigkill":
            os.kill(p.pid, signal.SIGSTOP)
            reset_data_connections(p.pid, server.port)
    finally:
        kill_hard(p)
    wait_server_idle(server, watch_dir=server.root)
    return partial


@pytest.mark.parametrize("how", INTERRUPTIONS)
@pytest.mark.parametrize("mode", ["passive-epsv", "active-port"])
def test_killed_upload_keeps_previous_version(server, samples, medium_sample, tmp_path, mode,
                                              how):
    old = samples[MiB]
    curl("--ftp-pasv", "-T", old.path, server.url("report.bin")).assert_ok()
    assert sha256_file(server.path("report.bin")) == old.sha256

    start_killed_upload(server, medium_sample, "report.bin", mode, how)
    assert sha256_file(server.path("report.bin")) == old.sha256, \
        "the interrupted upload replaced the previous version"
    out = tmp_path / "check.bin"
    r = curl("--ftp-pasv", "-o", out, server.url("report.bin"))
    r.assert_ok()
    assert sha256_file(out) == old.sha256

    # A complete upload afterwards replaces it and leaves no partial file behind.
    r = curl("--ftp-pasv", "-T", medium_sample.path, server.url("report.bin"))
    r.assert_ok()
    r.assert_exchange("STOR", (125, 150), 226)
    assert sha256_file(server.path("report.bin")) == medium_sample.sha256
    assert no_partials(server) == []


@pytest.mark.parametrize("fsync", ["fsync", "no-fsync", "tmpfs-root"])
def test_a_killed_client_never_replaces_the_previous_version_in_any_fsync_mode(
        start_server, samples, medium_sample, fsync):
    """The race of a killed client's two closes (data first, control some 100 us later),
    run 40 times: skipping fsync trades durability against power loss, never against a
    client that disappears. On a root in memory (/dev/shm, a tmpfs) the server publishes in
    place, on the session's own thread, and waits for the grace on its event loop: the same
    guarantee. Bounded: 40 attempts; no timing is asserted."""
    memory_root = None
    if fsync == "tmpfs-root":
        memory_root = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="ferroftp-interop-"))
    try:
        if memory_root:
            server = start_server(root=memory_root)
        else:
            server = start_server(extra_args=["--no-fsync-uploads"] if fsync == "no-fsync" else [])
        _killed_clients_leave_the_previous_version(server, samples, medium_sample)
    finally:
        if memory_root:
            shutil.rmtree(memory_root, ignore_errors=True)


def _killed_clients_leave_the_previous_version(server, samples, medium_sample):
    old = samples[MiB]
    curl("--ftp-pasv", "-T", old.path, server.url("report.bin")).assert_ok()
    for attempt in range(40):
        start_killed_upload(server, medium_sample, "report.bin", limit_rate="4M",
                            kill_after=256 * 1024 + attempt * 4096)
        assert sha256_file(server.path("report.bin")) == old.sha256, \
            f"attempt {attempt}: the killed upload replaced the previous version"
    assert [n for n in os.listdir(server.root) if not n.startswith(PARTIAL_PREFIX)] == \
        ["report.bin"]


@pytest.mark.parametrize("how", INTERRUPTIONS)
def test_killed_new_upload_resumes_with_curl(server, medium_sample, tmp_path, how):
    s = medium_sample
    partial = start_killed_upload(server, s, "new.bin", how=how)
    assert not server.path("new.bin").exists(), "half an upload appeared under the final name"
    listing = curl("--ftp-pasv", "-l", server.url(""))
    listing.assert_ok()
    assert "new.bin" not in nlst_names(listing.stdout.decode())
    have = file_size(partial)
    assert 0 < have < s.size, f"partial file size {have}"

    r = curl("--ftp-pasv", "-C", "-", "-T", s.path, server.url("new.bin"),
             timeout=BIG_PROC_TIMEOUT)
    r.assert_ok()
    size = r.assert_exchange("SIZE", 213)
    assert size.replies[0][1].strip() == str(have), "SIZE must report the partial's size"
    r.assert_exchange("APPE", (125, 150), 226)
    assert sha256_file(server.path("new.bin")) == s.sha256
    assert no_partials(server) == []


def test_killed_upload_then_fresh_upload(server, samples, medium_sample):
    # Without -C, a new STOR after an interruption starts over and yields exactly the new bytes.
    start_killed_upload(server, medium_sample, "again.bin")
    s = samples[MiB]
    r = curl("--ftp-pasv", "-T", s.path, server.url("again.bin"))
    r.assert_ok()
    assert sha256_file(server.path("again.bin")) == s.sha256
    assert no_partials(server) == []



def test_partial_files_are_hidden_and_unaddressable(server, medium_sample):
    partial = start_killed_upload(server, medium_sample, "hidden.bin", how="reset-then-sigkill")
    assert partial.exists()
    r = curl("--ftp-pasv", "-l", server.url(""))
    r.assert_ok()
    assert nlst_names(r.stdout.decode()) == []
    r = curl("--ftp-pasv", server.url(""))
    r.assert_ok()
    assert parse_unix_list(r.stdout.decode()).keys() <= {".", ".."}
    r = curl("--ftp-pasv", "-o", "/dev/null", server.url(partial.name))
    assert r.returncode != 0, r.describe()
    assert (r.exchanges("SIZE") or r.exchanges("RETR"))[-1].codes == [553], r.describe()
    r = curl("--ftp-pasv", "-Q", f"DELE {partial.name}", "-l", server.url(""))
    assert r.returncode == 21, r.describe()
    r.assert_exchange("DELE", 553)
    assert partial.exists()


# --------------------------------------------------------------------------------------------
# the transfer log ([log] transfer_log: xferlog)


def xferlog_records(path) -> list[dict]:
    """Parses xferlog(5) lines: a 5-field date, then 13 fields."""
    records = []
    for line in path.read_text().splitlines():
        f = line.split(" ")
        assert len(f) == 18, f"not an xferlog line: {line!r}"
        time.strptime(" ".join(f[:5]), "%a %b %d %H:%M:%S %Y")
        records.append({"seconds": int(f[5]), "host": f[6], "size": int(f[7]), "name": f[8],
                        "type": f[9], "action": f[10], "direction": f[11], "access": f[12],
                        "user": f[13], "service": f[14], "method": f[15], "auth_id": f[16],
                        "status": f[17]})
    return records


def test_transfer_log_has_one_xferlog_line_per_transfer_and_reopens_on_sighup(
        start_server, tmp_path, samples):
    xferlog = tmp_path / "xferlog"
    events = tmp_path / "ferroftp.log"
    config = tmp_path / "log.toml"
    config.write_text(f'[log]\nfile = "{events}"\ntransfer_log = "{xferlog}"\n')
    server = start_server(extra_args=["--config", str(config)])
    one = samples[MiB]
    assert curl("-T", one.path, server.url("my%20file.bin")).returncode == 0
    run = curl("-o", tmp_path / "back.bin", server.url("my%20file.bin"))
    assert run.returncode == 0 and sha256_file(tmp_path / "back.bin") == one.sha256
    assert curl("--append", "-T", samples[1].path, server.url("my%20file.bin")).returncode == 0
    # An upload interrupted by ABOR once the server has received 1 MiB of it.
    with raw_session(server) as c:
        c.expect("TYPE I", 200)
        host, port = parse_pasv(c.expect("PASV", 227).text)
        with socket.create_connection((host, port), timeout=30) as data:
            assert c.cmd("STOR cut.bin").code == 150
            with open(one.path, "rb") as f:
                data.sendall(f.read())
            wait_for(lambda: file_size(server.path(PARTIAL_PREFIX + "cut.bin")) == MiB,
                     "the upload's first MiB on disk")
            c.send_raw(b"ABOR\r\n")
            assert [c.read_reply().code, c.read_reply().code] == [426, 226]
    wait_for(lambda: xferlog.exists() and len(xferlog.read_text().splitlines()) == 4,
             "four transfer log lines")
    records = xferlog_records(xferlog)
    summary = [(r["direction"], r["name"], r["size"], r["status"]) for r in records]
    assert summary == [
        ("i", "/my_file.bin", MiB, "c"),
        ("o", "/my_file.bin", MiB, "c"),
        ("i", "/my_file.bin", 1, "c"),     # APPE
        ("i", "/cut.bin", MiB, "i"),       # interrupted, with the bytes received
    ], summary
    for r in records:
        assert (r["host"], r["type"], r["action"], r["access"], r["user"], r["service"],
                r["method"], r["auth_id"]) == ("127.0.0.1", "b", "_", "r", server.user, "ftp",
                                               "0", "*"), r
        assert r["seconds"] >= 1
    # The event log names them too, with the same paths (quoted: client text).
    text = events.read_text()
    assert 'command="APPE" path="/my file.bin" bytes=1 ' in text, text[-3000:]
    assert 'command="STOR" path="/cut.bin" bytes=1048576 ' in text, text[-3000:]

    # logrotate: move both files away, SIGHUP, and the next lines go to new files.
    os.rename(xferlog, tmp_path / "xferlog.1")
    os.rename(events, tmp_path / "ferroftp.log.1")
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: xferlog.exists() and events.exists(), "the log files reopened")
    assert curl("-o", tmp_path / "again.bin", server.url("my%20file.bin")).returncode == 0
    wait_for(lambda: len(xferlog.read_text().splitlines()) == 1, "a line in the new xferlog")
    assert [(r["direction"], r["size"]) for r in xferlog_records(xferlog)] == [("o", MiB + 1)]
    assert len((tmp_path / "xferlog.1").read_text().splitlines()) == 4
    # Storage changes name their paths in the client's form too, in the new event log.
    assert curl("-Q", "MKD new dir", server.url("")).returncode == 0
    wait_for(lambda: "storage changed" in events.read_text(), "the MKD in the new event log")
    assert 'storage changed command="MKD" path="/new dir"' in events.read_text()
    assert server.proc.poll() is None


def test_partial_data_older_than_the_expiry_is_removed_at_start_and_later(start_server,
                                                                          tmp_path):
    """storage.partial_expiry: abandoned partial data older than it goes at start and in the
    background; younger partial data and every published file stay. Waits are bounded."""
    root = tmp_path / "expiry-root"
    (root / "sub").mkdir(parents=True)
    hour_ago = time.time() - 3600
    in_an_hour = time.time() + 3600  # never expires during the test
    for rel, mtime in [(PARTIAL_PREFIX + "old.bin", hour_ago),
                       ("sub/" + PARTIAL_PREFIX + "old-nested.bin", hour_ago),
                       (PARTIAL_PREFIX + "young.bin", in_an_hour),
                       ("published.bin", hour_ago)]:
        (root / rel).write_bytes(b"data of " + rel.encode())
        os.utime(root / rel, (mtime, mtime))
    server = start_server(root=root, config='[storage]\npartial_expiry = "8s"\n',
                          extra_args=["--listen", "127.0.0.1:0"])
    wait_for(lambda: not (root / (PARTIAL_PREFIX + "old.bin")).exists()
             and not (root / "sub" / (PARTIAL_PREFIX + "old-nested.bin")).exists(),
             "the expired partial files to be removed at start", timeout=30)
    assert (root / (PARTIAL_PREFIX + "young.bin")).exists()
    assert (root / "published.bin").read_bytes() == b"data of published.bin"
    # Later: partial data that expires while the server runs goes in a background pass.
    later = root / "sub" / (PARTIAL_PREFIX + "later.bin")
    later.write_bytes(b"later")
    os.utime(later, (hour_ago, hour_ago))
    wait_for(lambda: not later.exists(), "a background pass to remove it", timeout=30)
    assert (root / (PARTIAL_PREFIX + "young.bin")).exists()
    assert sorted(os.listdir(root)) == sorted([PARTIAL_PREFIX + "young.bin", "published.bin",
                                               "sub"])
    r = curl("--ftp-pasv", server.url("published.bin"))
    r.assert_ok()
    assert r.stdout == b"data of published.bin"
