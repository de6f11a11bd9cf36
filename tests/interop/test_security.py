"""Confinement and permissions: symlinks out of the root, user homes, `..` above the home,
read-only users, anonymous access."""

from __future__ import annotations

import ftplib
import io
import os
import re
import secrets
import subprocess
from pathlib import Path

import pytest

from conftest import User
from ftp_helpers import (SOCKET_TIMEOUT, assert_new_session_works, assert_session_alive,
                         cmd_with_data_connection, curl, raw_session, wait_for)


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
    server.path("pub.txt").write_bytes(b"public")
    ftp = ftplib.FTP()
    ftp.connect(server.host, server.port, timeout=SOCKET_TIMEOUT)
    try:
        assert ftp.login(name, "guest@example.com").startswith("230")
        buf = io.BytesIO()
        assert ftp.retrbinary("RETR pub.txt", buf.write).startswith("226")
        assert buf.getvalue() == b"public"
    finally:
        ftp.close()


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
