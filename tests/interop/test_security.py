"""Confinement and permissions: symlinks out of the root, user homes, `..` above the home,
read-only users, anonymous access."""

from __future__ import annotations

import ftplib
import io
import json
import os
import re
import secrets
import socket
import subprocess
import unicodedata
from pathlib import Path

import pytest

from conftest import User
from ftp_helpers import (SOCKET_TIMEOUT, assert_new_session_works, assert_session_alive,
                         cmd_with_data_connection, curl, parse_pasv, raw_session, wait_for)


def login(server, user=None) -> ftplib.FTP:
    u = server.users[user or server.user]
    ftp = ftplib.FTP()
    ftp.connect(server.host, server.port, timeout=SOCKET_TIMEOUT)
    ftp.login(u.name, u.password)
    return ftp


def code(fn, *a, **kw) -> int:
    try:
        return int(fn(*a, **kw)[:3])
    except ftplib.Error as e:
        return int(str(e)[:3])


def test_symlink_to_etc_refused(server):
    os.symlink("/etc", server.path("etc"))
    os.symlink("/etc/passwd", server.path("passwd"))
    os.symlink("../../../../../../../../etc", server.path("relative-etc"))
    server.path("real.txt").write_bytes(b"ok")
    probe = f"ferroftp-interop-{secrets.token_hex(6)}"
    with raw_session(server) as c:
        for line in ("RETR etc/passwd", "RETR passwd", "RETR relative-etc/passwd",
                     "LIST etc", "NLST etc", "MLSD etc"):
            r = cmd_with_data_connection(c, line)
            assert r.code == 550, f"{line}: {r.text}"
        for line in ("CWD etc", "CWD /etc", "CWD relative-etc", "SIZE passwd",
                     "SIZE etc/passwd", "MLST etc/passwd", "MDTM passwd"):
            r = c.cmd(line)
            assert r.code == 550, f"{line}: {r.text}"
        r = c.cmd("PWD")
        assert r.text.startswith('257 "/"'), r.text
        assert_session_alive(c)
    ftp = login(server)
    try:
        assert code(ftp.storbinary, f"STOR etc/{probe}", io.BytesIO(b"x")) == 550
        assert not os.path.exists(f"/etc/{probe}")
        assert code(ftp.sendcmd, f"MKD etc/{probe}") == 550
        assert not os.path.exists(f"/etc/{probe}")
        assert code(ftp.sendcmd, "DELE passwd") == 550 or os.path.exists("/etc/passwd")
        assert os.path.exists("/etc/passwd")
        buf = io.BytesIO()
        assert code(ftp.retrbinary, "RETR real.txt", buf.write) == 226
        assert buf.getvalue() == b"ok"
    finally:
        ftp.close()
    r = curl("--ftp-pasv", "-o", "/dev/null", server.url("passwd"))
    assert r.returncode == 78, r.describe()        # CURLE_REMOTE_FILE_NOT_FOUND
    # curl asks SIZE first and gives up on its 550 before sending RETR.
    r.assert_exchange("SIZE", 550)
    assert not r.exchanges("RETR") or r.exchanges("RETR")[-1].codes == [550], r.describe()
    assert_new_session_works(server)


def test_dotdot_above_root_refused(server):
    server.path("d").mkdir()
    with raw_session(server) as c:
        for line in ("CWD /..", "CWD ..", "CDUP", "XCUP", "CWD d/../..", "SIZE /../etc/passwd",
                     "RETR ../x", "LIST ../", "STOR ../x"):
            if line.split()[0] in ("RETR", "LIST", "STOR"):
                r = cmd_with_data_connection(c, line)
            else:
                r = c.cmd(line)
            assert r.code == 550, f"{line}: {r.text}"
            assert c.cmd("PWD").text.startswith('257 "/"')
        assert c.cmd("CWD d").code == 250
        assert c.cmd("CDUP").code in (200, 250)
        assert c.cmd("PWD").text.startswith('257 "/"')
        assert_session_alive(c)


def test_user_home_is_its_root(start_server, tmp_path):
    users = [User("alice", "pw-" + secrets.token_hex(8)),
             User("bob", "pw-" + secrets.token_hex(8), home="/home/bob")]
    root = tmp_path / "shared-root"
    (root / "home" / "bob").mkdir(parents=True)
    server = start_server(users=users, root=root)
    server.path("secret.txt").write_bytes(b"alice's")
    ftp = login(server, "bob")
    try:
        assert ftp.pwd() == "/"
        assert ftp.storbinary("STOR mine.txt", io.BytesIO(b"bob's")).startswith("226")
        assert server.path("home/bob/mine.txt").read_bytes() == b"bob's"
        assert ftp.nlst() == ["mine.txt"]
        for line in ("RETR ../../secret.txt", "RETR /../../secret.txt", "CWD ..", "CWD /.."):
            assert code(ftp.sendcmd, line) == 550, line
        assert code(ftp.size, "/secret.txt") == 550
        assert ftp.pwd() == "/"
    finally:
        ftp.close()
    # alice sees the whole root, bob's file included
    ftp = login(server, "alice")
    try:
        ftp.voidcmd("TYPE I")
        assert ftp.size("/home/bob/mine.txt") == 5
    finally:
        ftp.close()


def test_missing_home_is_created_at_first_login(start_server, tmp_path):
    """`user add --home /team/carol` without the directory: the server makes it (and its
    parent) at carol's first login, inside the root; STOR and LIST then work."""
    users = [User("carol", "pw-" + secrets.token_hex(8), home="/team/carol")]
    root = tmp_path / "fresh-root"
    server = start_server(users=users, root=root)
    assert not server.path("team").exists()
    ftp = login(server, "carol")
    try:
        assert server.path("team/carol").is_dir()
        assert ftp.storbinary("STOR first.txt", io.BytesIO(b"carol's")).startswith("226")
        assert ftp.nlst() == ["first.txt"]
    finally:
        ftp.close()
    assert server.path("team/carol/first.txt").read_bytes() == b"carol's"
    assert "created the user's home directory" in server.log()


def test_site_chmod_stays_inside_and_refuses_special_bits(start_server, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    os.chmod(outside, 0o600)
    users = [User("alice", "pw-" + secrets.token_hex(8)),
             User("reader", "pw-" + secrets.token_hex(8), read_only=True)]
    server = start_server(users=users)
    os.symlink(str(outside), server.path("escape"))
    server.path("mine.txt").write_bytes(b"mine")
    os.chmod(server.path("mine.txt"), 0o600)
    ftp = login(server, "alice")
    try:
        assert ftp.sendcmd("SITE CHMOD 640 mine.txt") == "200 SITE CHMOD command successful"
        assert os.stat(server.path("mine.txt")).st_mode & 0o7777 == 0o640
        assert code(ftp.sendcmd, "SITE CHMOD 644 escape") == 550
        assert code(ftp.sendcmd, "SITE CHMOD 4755 mine.txt") == 550
        assert code(ftp.sendcmd, "SITE CHMOD 644 ../outside.txt") == 550
        assert code(ftp.sendcmd, "SITE CHMOD 644") == 501
        help_text = ftp.sendcmd("SITE HELP")
        assert "CHMOD <octal mode> <path>" in help_text, help_text
    finally:
        ftp.close()
    assert os.stat(outside).st_mode & 0o7777 == 0o600
    assert os.stat(server.path("mine.txt")).st_mode & 0o7777 == 0o640
    ftp = login(server, "reader")
    try:
        assert code(ftp.sendcmd, "SITE CHMOD 600 mine.txt") == 550
    finally:
        ftp.close()
    assert os.stat(server.path("mine.txt")).st_mode & 0o7777 == 0o640


def test_read_only_user(start_server):
    users = [User("reader", "pw-" + secrets.token_hex(8), read_only=True)]
    server = start_server(users=users)
    server.path("doc.txt").write_bytes(b"read me")
    server.path("dir").mkdir()
    ftp = login(server)
    try:
        buf = io.BytesIO()
        assert ftp.retrbinary("RETR doc.txt", buf.write).startswith("226")
        assert buf.getvalue() == b"read me"
        assert sorted(ftp.nlst()) == ["dir", "doc.txt"]
        assert code(ftp.storbinary, "STOR new.txt", io.BytesIO(b"x")) == 550
        assert code(ftp.storbinary, "APPE doc.txt", io.BytesIO(b"x")) == 550
        assert code(ftp.sendcmd, "DELE doc.txt") == 550
        assert code(ftp.sendcmd, "MKD newdir") == 550
        assert code(ftp.sendcmd, "RMD dir") == 550
        assert code(ftp.sendcmd, "RNFR doc.txt") == 550
        assert ftp.sendcmd("NOOP").startswith("200")
    finally:
        ftp.close()
    assert sorted(os.listdir(server.root)) == ["dir", "doc.txt"]
    assert server.path("doc.txt").read_bytes() == b"read me"


def test_wrong_password(server):
    with raw_session(server, login=False) as c:
        assert c.cmd(f"USER {server.user}").code == 331
        assert c.cmd("PASS wrong").code == 530
        assert c.cmd("PWD").code == 530
    with raw_session(server, login=False) as c:
        assert c.cmd("USER nobody-here").code == 331     # no user enumeration
        assert c.cmd("PASS whatever").code == 530
    assert_new_session_works(server)


def test_anonymous_disabled_by_default(server):
    with raw_session(server, login=False) as c:
        r = c.cmd("USER anonymous")
        if r.code == 331:
            r = c.cmd("PASS guest@example.com")
        assert r.code == 530, r.text


@pytest.mark.parametrize("name", ["anonymous", "ftp"])
def test_anonymous_enabled(start_server, name):
    server = start_server(anonymous=True)
    server.path("pub").mkdir()
    server.path("pub/pub.txt").write_bytes(b"public")
    server.path("private.txt").write_bytes(b"an account's file")
    ftp = ftplib.FTP()
    ftp.connect(server.host, server.port, timeout=SOCKET_TIMEOUT)
    try:
        assert ftp.login(name, "guest@example.com").startswith("230")
        buf = io.BytesIO()
        assert ftp.retrbinary("RETR pub.txt", buf.write).startswith("226")
        assert buf.getvalue() == b"public"
        # Confined to /pub (auth.anonymous_home), not the storage root.
        assert ftp.pwd() == "/"
        assert ftp.nlst() == ["pub.txt"]
        for path in ("/private.txt", "../private.txt"):
            with pytest.raises(ftplib.error_perm, match="^550"):
                ftp.retrbinary(f"RETR {path}", buf.write)
        with pytest.raises(ftplib.error_perm, match="^550"):
            ftp.storbinary("STOR new.txt", io.BytesIO(b"x"))
    finally:
        ftp.close()


def test_anonymous_home_is_configurable_and_created_if_missing(start_server, tmp_path):
    config = tmp_path / "anonymous.toml"
    config.write_text('[auth]\nanonymous = true\nanonymous_home = "/srv/public"\n')
    server = start_server(extra_args=["--config", str(config)])
    server.path("top.txt").write_bytes(b"not for anonymous")
    assert not server.path("srv/public").exists()
    with raw_session(server, login=False) as c:
        c.expect("USER anonymous", 331)
        c.expect("PASS guest@example.com", 230)
        assert server.path("srv/public").is_dir()
        assert cmd_with_data_connection(c, "RETR /top.txt").code == 550
        assert cmd_with_data_connection(c, "RETR ../../top.txt").code == 550
        c.expect("MKD x", 550)


# --------------------------------------------------------------------------------------------
# failed logins and fail2ban (contrib/fail2ban/filter.d/ferroftp.conf)

FAIL2BAN_FILTER = Path(__file__).resolve().parents[2] / "contrib/fail2ban/filter.d/ferroftp.conf"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_fail2ban_filter_matches_every_failed_login_and_only_its_address(
        start_server, tmp_path, log_format):
    log = tmp_path / f"ferroftp-{log_format}.log"
    config = tmp_path / f"log-{log_format}.toml"
    # Without the defender, which bans 127.0.0.1 at the third unknown name: this test is
    # about the lines fail2ban reads (docs/security.md).
    config.write_text(f'[log]\nformat = "{log_format}"\nfile = "{log}"\n'
                      '[defender]\nenabled = false\n')
    server = start_server(extra_args=["--config", str(config)])
    # User names are the client's to choose: one tries to end the line and forge an address.
    names = [b"bob", b"root", b'x\x1b[31m" reason=x client=198.51.100.7 \\', "\u00e9lan".encode()]
    for name in names:
        with raw_session(server, login=False) as c:
            assert c.cmd(b"USER " + name).code == 331
            assert c.cmd("PASS wrong").code == 530
    with raw_session(server) as c:  # a good login is not a failure
        assert_session_alive(c)
    wait_for(lambda: log.exists() and log.read_text(errors="replace").count("login failed")
             == len(names), "the failed logins in the log")
    text = log.read_text(errors="replace")
    assert "\x1b" not in text, "a raw control character reached the log"
    run = subprocess.run(["fail2ban-regex", "-v", str(log), str(FAIL2BAN_FILTER)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = run.stdout.decode("utf-8", "replace")
    assert run.returncode == 0, out
    total = re.search(r"^Failregex: (\d+) total", out, re.M)
    assert total and int(total.group(1)) == len(names), out
    # -v lists the address of each match: always the client's, never the forged one.
    found = re.findall(r"^\|\s+(\d+\.\d+\.\d+\.\d+)\s+\w{3} \w{3}", out, re.M)
    assert found == ["127.0.0.1"] * len(names), out


# Client text with every kind of control byte a line can carry: ESC (colours), BEL, a lone CR
# (a forged line on a terminal), DEL, a C1 CSI (U+009B), a tab. LF cannot be inside a line (it
# ends it) and NUL is refused by the framing (501); both are sent too. Names of files get the
# same text without CR (names with CR or LF are refused at creation).
HOSTILE = "x\x1b[31mRED\rFAKE user=admin logged in\x07\x7f\u009b\tend"
HOSTILE_NAME = HOSTILE.replace("\r", " ")


def _escaped(text: str) -> str:
    """What the event log writes for `text` (Rust's Debug escapes, without the quotes)."""
    out = []
    for ch in text:
        named = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0", "\\": "\\\\",
                 '"': '\\"'}
        if ch in named:
            out.append(named[ch])
        elif unicodedata.category(ch) == "Cc":
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return "".join(out)


def _control_bytes(data: bytes) -> list[bytes]:
    """The control characters (C0 but LF, DEL, C1 as UTF-8) in a log file's bytes."""
    return re.findall(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]", data)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_client_text_never_reaches_the_logs_raw(start_server, tmp_path, log_format,
                                                monkeypatch):
    events = tmp_path / f"events-{log_format}.log"
    xferlog = tmp_path / f"xferlog-{log_format}"
    config = tmp_path / f"log-{log_format}.toml"
    config.write_text(f'[log]\nformat = "{log_format}"\nfile = "{events}"\n'
                      f'transfer_log = "{xferlog}"\n')
    # Debug too: failed storage operations log the paths the client sent.
    monkeypatch.setenv("FERROFTP_LOG", "debug")
    server = start_server(extra_args=["--config", str(config)])
    hostile, name = HOSTILE.encode(), HOSTILE_NAME.encode()
    with raw_session(server, login=False) as c:
        assert c.cmd(b"USER " + hostile).code == 331
        assert c.cmd("PASS wrong").code == 530
        assert c.cmd(b"USER a\x00b\x1b").code == 501
        assert c.cmd(b"\x1b[31mVERB\x07 x").code == 500
    with raw_session(server) as c:
        c.expect(b"MKD d" + name, 257)
        c.expect(b"RNFR d" + name, 350)
        c.expect(b"RNTO e" + name, 250)
        c.expect(b"CWD nowhere" + hostile, 550)
        c.expect(b"SITE CHMOD 644 nowhere" + hostile, 550)
        c.expect("TYPE I", 200)
        host, port = parse_pasv(c.expect("PASV", 227).text)
        with socket.create_connection((host, port), timeout=SOCKET_TIMEOUT) as data:
            assert c.cmd(b"STOR f" + name).code == 150
            data.sendall(b"payload")
        assert c.read_reply().code == 226
        c.expect(b"DELE f" + name, 250)
        c.expect("QUIT", 221)
    wait_for(lambda: events.exists() and "DELE" in events.read_text(errors="replace"),
             "the DELE in the event log")
    wait_for(lambda: xferlog.exists() and xferlog.read_bytes().count(b"\n") == 1,
             "the STOR in the transfer log")
    for log in (events, xferlog):
        raw = log.read_bytes()
        assert not _control_bytes(raw), (log.name, _control_bytes(raw), raw[-3000:])
    text = events.read_text()
    if log_format == "text":
        assert f'login failed client=127.0.0.1 user="{_escaped(HOSTILE)}"' in text, text[-3000:]
        assert f'path="/f{_escaped(HOSTILE_NAME)}"' in text, text[-3000:]
        assert f'to="/e{_escaped(HOSTILE_NAME)}"' in text, text[-3000:]
    else:
        records = [json.loads(line) for line in text.splitlines()]
        failed = [r for r in records if r["event"] == "login failed"]
        assert [r["user"] for r in failed] == [_escaped(HOSTILE)], failed
        transfer = [r for r in records if r["event"] == "transfer"]
        assert [r["path"] for r in transfer] == [f"/f{_escaped(HOSTILE_NAME)}"], transfer
        renamed = [r for r in records if r.get("command") == "RNTO"]
        assert [r["to"] for r in renamed] == [f"/e{_escaped(HOSTILE_NAME)}"], renamed
    # xferlog: spaces and control characters as `_`, so the line keeps its 18 fields.
    fields = xferlog.read_text().split()
    assert len(fields) == 18, fields
    expected = "".join("_" if ch.isspace() or unicodedata.category(ch) == "Cc" else ch
                       for ch in "/f" + HOSTILE_NAME)
    assert fields[8] == expected, fields


# --------------------------------------------------------------------------------------------
# open sessions and changes to their account


def _user_command(bin_path: str, *args: str, password: str | None = None):
    run = subprocess.run([bin_path, "user", *args], input=(password + "\n").encode()
                         if password else None, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=60)
    assert run.returncode == 0, run.stdout


def test_open_sessions_lose_what_user_del_passwd_and_read_only_take_away(
        start_server, ferroftp_bin):
    users = [User(name, "pw-" + secrets.token_hex(8)) for name in ("alice", "bob", "carol")]
    server = start_server(users=users)
    sessions = {}
    for u in users:
        c = raw_session(server, login=False)
        c.login(u.name, u.password)
        c.expect(f"MKD {u.name}-before", 257)
        sessions[u.name] = c
    try:
        _user_command(ferroftp_bin, "del", "bob", "--users", str(server.users_file))
        _user_command(ferroftp_bin, "passwd", "carol", "--users", str(server.users_file),
                      password="pw-" + secrets.token_hex(8))
        # alice made read-only by an edit of the file: her password hash stays.
        text = server.users_file.read_text()
        start = text.index('name = "alice"')
        end = text.find("[[", start)
        end = len(text) if end < 0 else end
        block = text[start:end]
        assert "read_only = false" in block, block
        server.users_file.write_text(
            text[:start] + block.replace("read_only = false", "read_only = true") + text[end:])
        for name in ("bob", "carol"):
            r = sessions[name].cmd("NOOP")
            assert r.code == 421, (name, r.text)
            assert sessions[name].wait_closed() == b""
        alice = sessions["alice"]
        alice.expect("MKD alice-after", 550)
        alice.expect("PWD", 257)
        assert not server.path("alice-after").exists()
        assert server.path("bob-before").is_dir()
    finally:
        for c in sessions.values():
            c.close()
