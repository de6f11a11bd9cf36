"""The defender (auto-ban across connections) of the real binary: wrong passwords over several
connections ban one loopback address while another logs in; the ban ends after `ban_time`; an
allowlisted address is never banned; a ban survives SIGHUP and, with `persist`, a restart
(even after SIGKILL); the admin listener lists and lifts bans. Loopback only: the client
addresses 127.0.0.1, 127.0.0.2 and 127.0.0.3 are source addresses of the same host; every
server is a process of this test, stopped by PID.
"""

from __future__ import annotations

import ftplib
import json
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path

from test_service import add_user, services  # noqa: F401  (a fixture)

SERVER = "127.0.0.1"
BANNED = "127.0.0.1"
OTHER = "127.0.0.2"
ALLOWED = "127.0.0.3"
BOUND = 30


def write_config(path: Path, ban_time: str = "10m", extra: str = "") -> None:
    path.write_text(f"""
[[server.listeners]]
listen = "{SERVER}:0"

[server]
failed_login_delay = "0s"

[passive]
ports = "42200-42220"

[storage]
root = "root"

[auth]
path = "users.toml"

[admin]
listen = "127.0.0.1:0"

[defender]
ban_time = "{ban_time}"
allow = ["{ALLOWED}/32"]
persist = "bans"
{extra}
""")


def start(services, ferroftp_bin, config: Path):  # noqa: F811
    server = services([ferroftp_bin, "serve", "--config", str(config)])
    line = server.wait_for_line(r"^admin: listening on ")
    server.admin = re.search(r"listening on (\S+)", line).group(1)
    return server


def ftp_from(source: str, port: int) -> ftplib.FTP:
    ftp = ftplib.FTP()
    ftp.connect(SERVER, port, timeout=20, source_address=(source, 0))
    return ftp


def closed_without_greeting(source: str, port: int) -> bool:
    """Connects from `source`: True when the server closes the connection (FIN or reset)
    without sending a byte; False when it greets."""
    try:
        # The server resets (linger 0) at accept: the reset may even beat connect()'s return.
        with socket.create_connection((SERVER, port), timeout=20,
                                      source_address=(source, 0)) as sock:
            data = sock.recv(100)
    except ConnectionResetError:
        return True
    if data == b"":
        return True
    assert data.startswith(b"220 "), data
    return False


def guess_wrong(source: str, port: int, guesses: int) -> list[str]:
    """`guesses` wrong passwords for alice from `source`, one connection each: the PASS
    replies' codes, and "closed" for connections closed before any greeting."""
    outcomes: list[str] = []
    for _ in range(guesses):
        if closed_without_greeting(source, port):
            outcomes.append("closed")
            continue
        ftp = ftp_from(source, port)
        try:
            ftp.login("alice", "not-the-password")
            raise AssertionError("a wrong password logged in")
        except (ftplib.error_perm, ftplib.error_temp) as error:
            outcomes.append(str(error)[:3])
        finally:
            ftp.close()
    return outcomes


def bans(server) -> list[dict]:
    with urllib.request.urlopen(f"http://{server.admin}/bans", timeout=20) as answer:
        return json.load(answer)


def wait_for(condition, what: str, bound: float = BOUND) -> None:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {bound}s: {what}")


def test_wrong_passwords_ban_one_address_until_ban_time_and_not_the_others(
        ferroftp_bin, services, tmp_path):  # noqa: F811
    config = tmp_path / "ferroftp.toml"
    write_config(config, ban_time="5s")
    password = add_user(ferroftp_bin, tmp_path / "users.toml")
    server = start(services, ferroftp_bin, config)

    # The 5th failure (weight 3, threshold 15) bans: 421, and the 6th attempt finds the
    # connection closed before any greeting.
    outcomes = guess_wrong(BANNED, server.port, 6)
    assert outcomes == ["530", "530", "530", "530", "421", "closed"], outcomes
    assert closed_without_greeting(BANNED, server.port)
    assert closed_without_greeting(BANNED, server.port)
    # Logged once per ban, not per refused connection.
    server.wait_log(r"client address banned")
    assert len(re.findall(r"client address banned", server.log())) == 1
    assert [ban["address"] for ban in bans(server)] == [BANNED]

    other = ftp_from(OTHER, server.port)
    assert other.login("alice", password).startswith("230")
    other.quit()

    # The ban ends after ban_time (waited for as a condition, not timed).
    wait_for(lambda: not closed_without_greeting(BANNED, server.port), "the ban to end")
    ftp = ftp_from(BANNED, server.port)
    assert ftp.login("alice", password).startswith("230")
    ftp.quit()
    assert bans(server) == []


def test_an_allowlisted_address_is_never_banned(ferroftp_bin, services, tmp_path):  # noqa: F811
    config = tmp_path / "ferroftp.toml"
    write_config(config)
    password = add_user(ferroftp_bin, tmp_path / "users.toml")
    server = start(services, ferroftp_bin, config)
    outcomes = guess_wrong(ALLOWED, server.port, 12)
    assert outcomes == ["530"] * 12, outcomes
    ftp = ftp_from(ALLOWED, server.port)
    assert ftp.login("alice", password).startswith("230")
    ftp.quit()
    assert bans(server) == []


def test_a_ban_survives_sighup_and_a_restart_and_the_admin_lifts_it(
        ferroftp_bin, services, tmp_path):  # noqa: F811
    config = tmp_path / "ferroftp.toml"
    write_config(config)
    password = add_user(ferroftp_bin, tmp_path / "users.toml")
    server = start(services, ferroftp_bin, config)
    assert guess_wrong(BANNED, server.port, 6)[-1] == "closed"

    # SIGHUP with a changed [defender] section: the ban stays.
    write_config(config, extra="threshold = 30\n")
    server.signal(signal.SIGHUP)
    server.wait_log(r"SIGHUP: configuration reloaded")
    assert closed_without_greeting(BANNED, server.port)

    # The persist file is written shortly after the ban (temporary file, then rename);
    # a server killed without any chance to save keeps the ban across its restart.
    persisted = tmp_path / "bans"
    wait_for(lambda: persisted.exists() and BANNED + " " in persisted.read_text(),
             "the ban in the persist file")
    server.signal(signal.SIGKILL)
    server.wait()
    restarted = start(services, ferroftp_bin, config)
    restarted.wait_log(r"bans loaded from the persist file")
    assert closed_without_greeting(BANNED, restarted.port)
    (ban,) = bans(restarted)
    assert ban["address"] == BANNED and ban["bans"] == 1 and ban["until_unix"] > time.time()
    other = ftp_from(OTHER, restarted.port)
    assert other.login("alice", password).startswith("230")
    other.quit()

    # DELETE /bans/ADDR lifts it.
    request = urllib.request.Request(f"http://{restarted.admin}/bans/{BANNED}",
                                     method="DELETE")
    with urllib.request.urlopen(request, timeout=20) as answer:
        assert answer.status == 200
    ftp = ftp_from(BANNED, restarted.port)
    assert ftp.login("alice", password).startswith("230")
    ftp.quit()
    wait_for(lambda: BANNED + " " not in persisted.read_text(), "the persist file updated")
