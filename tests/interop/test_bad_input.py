"""Hostile or broken input on the control connection. Each case asserts the exact reply, then
that the same session still works (NOOP 200, after logging in where the case happens before
login) and that a brand-new session works too."""

from __future__ import annotations

import ftplib
import os
import subprocess

import pytest

from ftp_helpers import (SOCKET_TIMEOUT, assert_new_session_works, assert_session_alive,
                         has_pending_connection, listener, port_arg, raw_session, wait_for)


def ftplib_session(server, login=True) -> ftplib.FTP:
    ftp = ftplib.FTP()
    ftp.connect(server.host, server.port, timeout=SOCKET_TIMEOUT)
    if login:
        ftp.login(server.user, server.password)
    return ftp


def sendcmd_code(ftp: ftplib.FTP, line: str) -> int:
    try:
        return int(ftp.sendcmd(line)[:3])
    except ftplib.Error as e:
        return int(str(e)[:3])


def ftplib_still_works(server, ftp: ftplib.FTP, logged_in: bool):
    if not logged_in:
        assert ftp.login(server.user, server.password).startswith("230")
    assert ftp.sendcmd("NOOP").startswith("200")
    ftp.quit()
    assert_new_session_works(server)


# (id, line sent with ftplib.sendcmd, expected codes, sent after login?)
FTPLIB_CASES = [
    ("line-9000-bytes", "NOOP " + "A" * (9000 - len("NOOP ") - 2), (500,), True),
    ("nul-byte", "CWD a\x00b", (501,), True),
    ("retr-dotdot-etc-passwd", "RETR ../../etc/passwd", (550,), True),
    ("cwd-slash-dotdot", "CWD /..", (550,), True),
    ("rnto-without-rnfr", "RNTO whatever", (503,), True),
    ("unknown-verb", "XYZZY plugh", (500, 502), True),
    ("pass-without-user", "PASS secret", (503,), False),
    ("retr-before-login", "RETR file.txt", (530,), False),
    ("cwd-before-login", "CWD /", (530,), False),
    ("pasv-before-login", "PASV", (530,), False),
]


@pytest.mark.parametrize("line,codes,logged_in",
                         [c[1:] for c in FTPLIB_CASES], ids=[c[0] for c in FTPLIB_CASES])
def test_bad_command_with_ftplib(server, line, codes, logged_in):
    server.path("file.txt").write_bytes(b"content")
    ftp = ftplib_session(server, login=logged_in)
    try:
        code = sendcmd_code(ftp, line)
        assert code in codes, f"{line[:60]!r}...: expected {codes}, got {code}"
        ftplib_still_works(server, ftp, logged_in)
    finally:
        ftp.close()


def test_long_line_under_the_limit_is_processed(server):
    """An 8000-byte line is within the 8 KiB limit: the command itself is carried out."""
    with raw_session(server) as c:
        c.send_raw(b"NOOP " + b"x" * (8000 - 7) + b"\r\n")
        r = c.read_reply()
        assert r.code == 200, r.text
        assert_session_alive(c)


def test_line_limit_boundary(server):
    """8192 bytes of command (CRLF not counted) are accepted, 8193 are "over 8 KiB"."""
    with raw_session(server) as c:
        c.send_raw(b"NOOP " + b"x" * (8192 - 5) + b"\r\n")
        r = c.read_reply()
        assert r.code == 200, r.text
        c.send_raw(b"NOOP " + b"x" * (8193 - 5) + b"\r\n")
        r = c.read_reply()
        assert r.code == 500, r.text
        assert_session_alive(c)


def test_many_long_lines_in_a_row(server):
    with raw_session(server) as c:
        for n in (8200, 9000, 20000, 100000):
            c.send_raw(b"NOOP " + b"A" * (n - 7) + b"\r\n")
            r = c.read_reply()
            assert r.code == 500, (n, r.text)
        assert_session_alive(c)
    assert_new_session_works(server)


@pytest.mark.parametrize("data", [b"CWD \xff\xfe\r\n", b"NOOP \xc3\x28\r\n", b"\xed\xa0\x80\r\n"],
                         ids=["ff-fe", "bad-continuation", "surrogate"])
def test_invalid_utf8(server, data):
    with raw_session(server) as c:
        c.send_raw(data)
        r = c.read_reply()
        assert r.code == 501, r.text
        assert_session_alive(c)
    assert_new_session_works(server)


def test_invalid_utf8_before_login(server):
    with raw_session(server, login=False) as c:
        c.send_raw(b"USER \xff\xfe\r\n")
        r = c.read_reply()
        assert r.code == 501, r.text
        c.login(server.user, server.password)
        assert_session_alive(c)
    assert_new_session_works(server)


def test_nul_byte_raw(server):
    with raw_session(server) as c:
        c.send_raw(b"NOOP\x00\r\n")
        r = c.read_reply()
        assert r.code == 501, r.text
        assert_session_alive(c)


# Active-mode bounce protection: the control client is 127.0.0.1.

def _privileged_listener():
    # We are usually root on test machines, so port 80 (or another low port) can be bound to
    # prove that no connection is attempted; if none is free, only the reply is checked.
    for port in (80, 1023, 1000):
        try:
            return listener("127.0.0.1", port)
        except OSError:
            continue
    return None


@pytest.mark.parametrize("verb", ["PORT", "EPRT"])
@pytest.mark.parametrize("target", ["other-ip", "port-80"])
def test_port_bounce_refused(server, verb, target):
    if target == "other-ip":
        lst = listener("127.0.0.2", 0)
        ip, port = "127.0.0.2", lst.getsockname()[1]
    else:
        lst = _privileged_listener()
        ip, port = "127.0.0.1", (lst.getsockname()[1] if lst else 80)
    server.path("file.txt").write_bytes(b"content")
    try:
        with raw_session(server) as c:
            assert c.local_ip() == "127.0.0.1"
            arg = port_arg(ip, port) if verb == "PORT" else f"|1|{ip}|{port}|"
            r = c.cmd(f"{verb} {arg}")
            assert r.code in (501, 504), r.text
            # No data connection may be set up by the refused command: the transfer fails
            # at once (425/503), or after a preliminary reply with 425.
            r = c.cmd("RETR file.txt")
            if r.code in (125, 150):
                r = c.read_reply()
                assert r.code == 425, r.text
            assert r.code in (425, 503), r.text
            if lst is not None:
                assert not has_pending_connection(lst), "the server connected to the target"
            assert_session_alive(c)
        assert_new_session_works(server)
    finally:
        if lst is not None:
            lst.close()


def test_port_to_own_ip_high_port_accepted(server):
    server.path("file.txt").write_bytes(b"content")
    lst = listener("127.0.0.1", 0)
    try:
        with raw_session(server) as c:
            r = c.cmd(f"PORT {port_arg('127.0.0.1', lst.getsockname()[1])}")
            assert r.code == 200, r.text
            r = c.cmd("NLST")
            assert r.code in (125, 150), r.text
            lst.settimeout(SOCKET_TIMEOUT)
            conn, peer = lst.accept()
            assert peer[0] == "127.0.0.1"
            data = b""
            with conn:
                conn.settimeout(SOCKET_TIMEOUT)
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            assert c.read_reply().code == 226
            assert data.split() == [b"file.txt"]
    finally:
        lst.close()


@pytest.mark.parametrize("arg", ["1,2,3", "127,0,0,1,300,1", "a,b,c,d,e,f", ""],
                         ids=["short", "octet-300", "letters", "empty"])
def test_malformed_port(server, arg):
    with raw_session(server) as c:
        r = c.cmd(f"PORT {arg}".rstrip())
        assert r.code == 501, r.text
        assert_session_alive(c)


@pytest.mark.parametrize("arg", ["|3|127.0.0.1|5000|", "|1|127.0.0.1|", "garbage", "|1|999.1.1.1|5000|"],
                         ids=["bad-af", "no-port", "garbage", "bad-ip"])
def test_malformed_eprt(server, arg):
    with raw_session(server) as c:
        r = c.cmd(f"EPRT {arg}")
        assert r.code in (501, 522), r.text
        assert_session_alive(c)


# --------------------------------------------------------------------------------------------
# the server's own environment


def test_invalid_log_filter_stops_the_server_at_start(ferroftp_bin, tmp_path):
    env = dict(os.environ, FERROFTP_LOG="ferroftp=loud")
    p = subprocess.run([ferroftp_bin, "serve", "--root", str(tmp_path / "root"), "--users",
                        str(tmp_path / "users.toml"), "--listen", "127.0.0.1:0"],
                       env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    assert p.returncode != 0
    err = p.stderr.decode()
    assert 'FERROFTP_LOG="ferroftp=loud" is not a valid log filter' in err, err
    assert b"listening on" not in p.stdout


def test_log_on_a_redirected_stderr_has_no_colour_codes(server):
    with raw_session(server) as c:
        assert_session_alive(c)
    wait_for(lambda: "logged in" in server.log_path.read_text(errors="replace"),
             "the login in the log")
    text = server.log_path.read_text(errors="replace")
    assert "\x1b[" not in text, text[-2000:]
