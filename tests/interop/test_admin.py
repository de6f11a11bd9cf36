"""The admin listener of the real binary: /metrics read by the prometheus_client text parser
after real transfers (the byte counters equal the bytes moved), /healthz and /readyz, /status
rendered by Debian's headless Chromium while a slow reader holds a download open, and
`check-config` refusing a non-loopback admin.listen without admin.allow_remote."""

from __future__ import annotations

import ftplib
import io
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ftp_helpers import MiB, SOCKET_TIMEOUT, parse_epsv, raw_session, sha256_bytes, write_random

ADMIN_CONFIG = """
[[server.listeners]]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
per_user_metrics = true
"""


def admin_port(server) -> int:
    """The admin port from the `admin: listening on` line (printed after the FTP lines)."""
    for _ in range(600):
        for line in list(server.stdout_lines):
            m = re.search(r"^admin: listening on 127\.0\.0\.1:(\d+)$", line.strip())
            if m:
                return int(m.group(1))
        assert server.proc.poll() is None, server.log()
        time.sleep(0.05)
    raise AssertionError(f"no 'admin: listening on' line: {server.log()}")


def http_get(port: int, path: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=SOCKET_TIMEOUT) as answer:
            return answer.status, answer.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")


def sample_value(families, name: str, **labels) -> float:
    """The value of the one sample `name` whose labels are exactly `labels` (0 when absent)."""
    found = [s.value for family in families for s in family.samples
             if s.name == name and s.labels == labels]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


def test_metrics_count_exactly_the_bytes_moved(start_server, samples):
    server = start_server(config=ADMIN_CONFIG)
    port = admin_port(server)
    user = server.users[server.user]

    ftp = ftplib.FTP()
    ftp.connect(server.host, server.port, timeout=SOCKET_TIMEOUT)
    with pytest.raises(ftplib.error_perm, match="^530"):
        ftp.login(user.name, "wrong-password")
    ftp.login(user.name, user.password)
    ftp.set_pasv(True)
    uploaded = 0
    for size in (MiB, 1):
        with open(samples[size].path, "rb") as f:
            assert ftp.storbinary(f"STOR up-{size}.bin", f).startswith("226")
        uploaded += size
    downloaded = 0
    for size in (MiB, 1):
        received = io.BytesIO()
        assert ftp.retrbinary(f"RETR up-{size}.bin", received.write).startswith("226")
        assert sha256_bytes(received.getvalue()) == samples[size].sha256
        downloaded += len(received.getvalue())
    listing = io.BytesIO()
    assert ftp.retrbinary("LIST", listing.write).startswith("226")
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.retrbinary("RETR missing.bin", io.BytesIO().write)

    status, text = http_get(port, "/metrics")
    assert status == 200
    families = list(text_string_to_metric_families(text))
    by_name = {family.name: family for family in families}

    def value(name, **labels):
        return sample_value(families, name, **labels)

    assert value("ferroftp_transfer_bytes_total", direction="upload", result="ok") == uploaded
    assert value("ferroftp_transfer_bytes_total", direction="download", result="ok") \
        == downloaded == MiB + 1
    assert value("ferroftp_transfer_bytes_total", direction="listing", result="ok") \
        == len(listing.getvalue()) > 0
    assert value("ferroftp_transfers_total", direction="upload", result="ok") == 2
    assert value("ferroftp_transfers_total", direction="download", result="ok") == 2
    assert value("ferroftp_transfers_total", direction="download", result="failed") == 1
    assert value("ferroftp_transfer_bytes_total", direction="download", result="failed") == 0
    assert value("ferroftp_user_transfer_bytes_total", user=user.name, direction="upload",
                 result="ok") == uploaded
    assert value("ferroftp_user_transfer_bytes_total", user=user.name, direction="download",
                 result="ok") == downloaded
    assert value("ferroftp_logins_total", result="ok") == 1
    assert value("ferroftp_logins_total", result="rejected") == 1
    assert value("ferroftp_user_logins_total", user=user.name) == 1
    assert value("ferroftp_commands_total", verb="STOR") == 2
    assert value("ferroftp_commands_total", verb="RETR") == 3
    assert value("ferroftp_commands_total", verb="PASS") == 2
    assert value("ferroftp_replies_total", **{"class": "4xx"}) == 0
    assert value("ferroftp_replies_total", **{"class": "5xx"}) == 2
    listener = f"127.0.0.1:{server.port}"
    assert value("ferroftp_sessions_total", listener=listener) == 1
    assert value("ferroftp_sessions_open", listener=listener) == 1
    assert value("ferroftp_passive_ports_capacity") == 100
    assert value("ferroftp_passive_ports_in_use") == 0

    durations = by_name["ferroftp_transfer_duration_seconds"]
    assert durations.type == "histogram"
    assert value("ferroftp_transfer_duration_seconds_count", direction="upload") == 2
    assert value("ferroftp_transfer_duration_seconds_count", direction="download") == 3
    assert by_name["ferroftp_upload_commit_duration_seconds"].type == "histogram"
    assert value("ferroftp_upload_commit_duration_seconds_count") == 2
    # Every family is documented (HELP) and typed.
    for family in families:
        assert family.documentation, family.name
    assert by_name["ferroftp_transfer_bytes"].type == "counter"
    ftp.quit()


def test_health_and_readiness(start_server):
    server = start_server(config=ADMIN_CONFIG)
    port = admin_port(server)
    assert http_get(port, "/healthz") == (200, "ok\n")
    assert http_get(port, "/readyz") == (200, "ready\n")
    assert http_get(port, "/nothing-here")[0] == 404
    # Series with labels known in advance exist from the start, at 0: alerts on increase()
    # work before the first event.
    status, text = http_get(port, "/metrics")
    assert status == 200
    families = list(text_string_to_metric_families(text))
    for name, labels in [
        ("ferroftp_passive_exhausted_total", {}),
        ("ferroftp_reloads_total", {"result": "failed"}),
        ("ferroftp_logins_total", {"result": "rejected"}),
        ("ferroftp_transfers_total", {"direction": "upload", "result": "aborted"}),
        ("ferroftp_data_connections_refused_total", {"cause": "bounce"}),
        ("ferroftp_tls_handshakes_total", {"connection": "data", "result": "failed"}),
        ("ferroftp_proxy_headers_rejected_total", {"reason": "untrusted"}),
    ]:
        found = [s for family in families for s in family.samples
                 if s.name == name and s.labels == labels]
        assert [s.value for s in found] == [0.0], (name, labels, found)


def test_per_user_series_only_when_asked_for(start_server):
    server = start_server(config=ADMIN_CONFIG.replace("per_user_metrics = true",
                                                      "per_user_metrics = false"))
    port = admin_port(server)
    user = server.users[server.user]
    ftp = ftplib.FTP()
    ftp.connect(server.host, server.port, timeout=SOCKET_TIMEOUT)
    ftp.login(user.name, user.password)
    assert ftp.storbinary("STOR a.bin", io.BytesIO(b"12345")).startswith("226")
    ftp.quit()
    families = list(text_string_to_metric_families(http_get(port, "/metrics")[1]))
    assert sample_value(families, "ferroftp_transfer_bytes_total", direction="upload",
                        result="ok") == 5
    names = {s.name for family in families for s in family.samples}
    assert not [name for name in names if name.startswith("ferroftp_user_")], names
    assert user.name not in http_get(port, "/metrics")[1]


def test_tls_handshakes_and_reuse_refusals_are_counted(start_server):
    server = start_server(config=ADMIN_CONFIG, extra_args=["--tls", "self-signed"])
    port = admin_port(server)
    user = server.users[server.user]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # Stock ftplib does not resume the control connection's TLS session on the data
    # connection: the data handshake completes, then the reuse check refuses it (522).
    ftp = ftplib.FTP_TLS(context=context, timeout=SOCKET_TIMEOUT)
    ftp.connect(server.host, server.port)
    ftp.auth()
    ftp.login(user.name, user.password)
    ftp.prot_p()
    with pytest.raises((ftplib.error_perm, ssl.SSLError, OSError)) as refused:
        ftp.storbinary("STOR refused.bin", io.BytesIO(b"x"))
    if isinstance(refused.value, ftplib.error_perm):
        reply = str(refused.value)
    else:
        with pytest.raises(ftplib.error_perm) as final:
            ftp.getresp()
        reply = str(final.value)
    assert reply.startswith("522"), reply
    ftp.close()
    # A client that sends no TLS after AUTH TLS: a failed control handshake.
    with raw_session(server, login=False) as control:
        control.expect("AUTH TLS", 234)
        control.send_raw(b"this is not a ClientHello\r\n" * 8)
        control.wait_closed()

    families = list(text_string_to_metric_families(http_get(port, "/metrics")[1]))

    def value(name, **labels):
        return sample_value(families, name, **labels)

    assert value("ferroftp_tls_handshakes_total", connection="control", result="ok") == 1
    assert value("ferroftp_tls_handshakes_total", connection="control", result="failed") == 1
    assert value("ferroftp_tls_handshakes_total", connection="data", result="ok") == 1
    assert value("ferroftp_tls_reuse_refused_total") == 1
    assert value("ferroftp_transfers_total", direction="upload", result="failed") == 1


def slow_download(server, name: str):
    """Logs in, starts RETR `name` over EPSV with a small receive window and reads its first
    64 KiB only: the transfer stays open with a known part sent. Returns (control, data)."""
    control = raw_session(server)
    control.expect("TYPE I", 200)
    data_port = parse_epsv(control.expect("EPSV", 229).text)
    data = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    data.settimeout(SOCKET_TIMEOUT)
    data.connect((server.host, data_port))
    control.send_raw(f"RETR {name}\r\n".encode())
    assert control.read_reply().code == 150
    received = 0
    while received < 64 * 1024:
        chunk = data.recv(64 * 1024 - received)
        assert chunk, "the download ended early"
        received += len(chunk)
    return control, data


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium not installed (scripts/interop.sh installs it)")
def test_status_page_in_chromium_shows_the_running_download(start_server, tmp_path):
    server = start_server(config=ADMIN_CONFIG)
    port = admin_port(server)
    write_random(server.path("big.bin"), 64 * MiB)
    control, data = slow_download(server, "big.bin")
    try:
        # The page as served, until it shows bytes sent (the counter moves per chunk).
        for _ in range(400):
            status, page = http_get(port, "/status")
            assert status == 200
            m = re.search(r'data-bytes="(\d+)"', page)
            if m and int(m.group(1)) > 0:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the status page never showed bytes sent: {page}")

        profile = tempfile.mkdtemp(dir=tmp_path)
        browser = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--dump-dom",
             f"http://127.0.0.1:{port}/status"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=180)
        dom = browser.stdout.decode("utf-8", "replace")
        assert browser.returncode == 0, browser.stderr.decode("utf-8", "replace")[-4000:]
        # The browser parsed the page into the table the server wrote.
        assert re.search(r'<td class="user">alice</td>', dom), dom
        assert re.search(r'download <span class="path">/big\.bin</span>', dom), dom
        m = re.search(r'data-bytes="(\d+)">(\d+) bytes</td>', dom)
        assert m, dom
        sent = int(m.group(1))
        assert int(m.group(2)) == sent
        # At least what the client read, at most the file.
        assert 64 * 1024 <= sent <= 64 * MiB, dom
        assert "<title>ferroftp status</title>" in dom
        # The session's number is the one its log lines carry (session{… id=N …}).
        m = re.search(r'<td class="number">(\d+)</td><td class="user">alice</td>', dom)
        assert m, dom
        assert re.search(rf"session\{{[^}}]*\bid={m.group(1)}\b", server.log()), server.log()
    finally:
        data.close()
        # The download cannot finish now: 426 (or 451), then the session goes on.
        assert control.read_reply().code in (426, 451)
        control.expect("NOOP", 200)
        control.close()


def test_reloads_are_counted_and_readyz_fails_while_draining(start_server):
    server = start_server(config=ADMIN_CONFIG)
    port = admin_port(server)
    config_path = server.root.parent / "ferroftp.toml"

    def reloads(result: str) -> float:
        families = list(text_string_to_metric_families(http_get(port, "/metrics")[1]))
        return sample_value(families, "ferroftp_reloads_total", result=result)

    def wait_for_reloads(result: str, count: int):
        for _ in range(400):
            if reloads(result) == count:
                return
            time.sleep(0.05)
        raise AssertionError(f"ferroftp_reloads_total{{result={result!r}}} never reached "
                             f"{count}: {server.log()[-3000:]}")

    server.proc.send_signal(signal.SIGHUP)
    wait_for_reloads("ok", 1)
    assert reloads("failed") == 0
    good = config_path.read_text()
    config_path.write_text(good + "[server]\nno_such_key = 1\n")
    server.proc.send_signal(signal.SIGHUP)
    wait_for_reloads("failed", 1)
    config_path.write_text(good)
    assert http_get(port, "/readyz") == (200, "ready\n")

    # A download held open by a slow reader keeps the server draining after SIGTERM.
    write_random(server.path("big.bin"), 64 * MiB)
    control, data = slow_download(server, "big.bin")
    server.proc.send_signal(signal.SIGTERM)
    for _ in range(400):
        if http_get(port, "/readyz") == (503, "draining\n"):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"/readyz never answered 503 while draining: {server.log()[-3000:]}")
    assert http_get(port, "/healthz") == (200, "ok\n")
    status, page = http_get(port, "/status")
    assert status == 200 and '<span class="draining">draining</span>' in page, page
    assert "download <span class=\"path\">/big.bin</span>" in page, page
    # The session stays open (held by the server object until the fixture's teardown, which
    # stops the server), so the server is still draining, not gone, when the test ends.
    server.held_open = (control, data)


def test_check_config_refuses_a_remote_admin_listener(ferroftp_bin, tmp_path):
    config = tmp_path / "remote-admin.toml"
    config.write_text('[admin]\nlisten = "0.0.0.0:9121"\n')
    checked = subprocess.run([ferroftp_bin, "check-config", str(config)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    out = checked.stdout.decode()
    assert checked.returncode == 1, out
    assert "admin.listen: 0.0.0.0:9121 is not a loopback address" in out
    assert "admin.allow_remote" in out
    # `serve` refuses it too, before binding anything.
    served = subprocess.run([ferroftp_bin, "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                            cwd=tmp_path)
    assert served.returncode == 1
    assert "admin.listen" in served.stderr.decode()

    config.write_text('[admin]\nlisten = "0.0.0.0:9121"\nallow_remote = true\n')
    checked = subprocess.run([ferroftp_bin, "check-config", str(config)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert checked.returncode == 0, checked.stdout.decode()
