"""Scenario 3: HAProxy in front of ferroftp, PROXY protocol v2 on the control port and on every
passive port.

    cli (203.0.113.50) ---wan0--- lb: HAProxy (203.0.113.7 | 10.0.0.1, 10.0.0.9) ---lan0--- srv (10.0.0.2)

HAProxy binds :2121 and :50000-50100 and forwards each connection to the same port on 10.0.0.2
(from 10.0.0.1) with `send-proxy-v2`. ferroftp trusts PROXY headers from 10.0.0.1 only
(proxy_protocol.trusted) and announces 203.0.113.7 in PASV. The server has no route to the
client: everything goes through HAProxy. 10.0.0.9 is another host on the server's LAN that is
*not* trusted.

Both configurations are the blocks of docs/nat-and-firewalls.md, verbatim.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess

import pytest

from sysftp import (
    curl_in, doc_block, ftplib_roundtrip, parse_epsv, parse_pasv, raw_in, sha256_bytes,
    sha256_file,
)

# The addresses of the example in docs/nat-and-firewalls.md, whose two configuration blocks
# (HAProxy's and ferroftp's) are used verbatim.
CLIENT = "203.0.113.50"
LB_PUBLIC = "203.0.113.7"
LB_PRIVATE = "10.0.0.1"
UNTRUSTED = "10.0.0.9"
SERVER = "10.0.0.2"
CONTROL = 2121
PASSIVE = (50000, 50100)


@pytest.fixture
def net(topo, tmp_path):
    cli, lb, srv = topo.ns("cli"), topo.ns("lb"), topo.ns("srv")
    topo.link(cli, "eth0", lb, "wan0", f"{CLIENT}/24", f"{LB_PUBLIC}/24")
    topo.link(lb, "lan0", srv, "eth0", f"{LB_PRIVATE}/24", f"{SERVER}/24")
    lb.add_addr("lan0", f"{UNTRUSTED}/24")
    # HAProxy connects to the server from the first address of lan0, LB_PRIVATE.
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(doc_block("haproxy-cfg"))
    p = lb.run(["haproxy", "-c", "-f", str(cfg)], check=False)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    log = open(tmp_path / "haproxy.log", "wb")
    # -db: stay in the foreground (the PID is haproxy's own, stopped at teardown)
    proc = lb.popen(["haproxy", "-db", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT)
    log.close()
    lb.wait_listening(CONTROL, proc=proc)
    lb.wait_listening(PASSIVE[1], proc=proc)
    return topo, cli, lb, srv, proc


def put_file(server, name, sample):
    shutil.copyfile(sample.path, server.path(name))


def test_transfers_through_haproxy_with_proxy_protocol(net, start_server, sample, sample2,
                                                       tmp_path):
    topo, cli, lb, srv, haproxy = net
    server = start_server(srv, config=doc_block("haproxy-ferroftp"), listen=None, passive_ports=None)

    # PASV announces HAProxy's public address; the data connection arrives through HAProxy
    # with a PROXY header naming the client, which is the control connection's real client.
    with raw_in(cli, LB_PUBLIC, CONTROL, login=(server.user, server.password)) as c:
        r = c.cmd("PASV")
        assert r.code == 227, r.text
        ip, port = parse_pasv(r.text)
        assert ip == LB_PUBLIC and PASSIVE[0] <= port <= PASSIVE[1], r.text
        data = cli.connect(LB_PUBLIC, port)
        with data:
            r = c.cmd("NLST")
            assert r.code == 150, r.text
            while data.recv(65536):
                pass
        assert c.read_reply().code == 226
        assert c.cmd("QUIT").code == 221

    for opts, verb, code in ((["--disable-epsv", "--no-ftp-skip-pasv-ip"], "PASV", 227),
                             ([], "EPSV", 229)):
        name = f"{verb.lower()}.bin"
        up = curl_in(cli, *opts, "-T", sample.path, server.url(LB_PUBLIC, name))
        up.assert_ok()
        up.assert_exchange(verb, code)
        up.assert_exchange("STOR", (125, 150), 226)
        assert sha256_file(server.path(name)) == sample.sha256
        dest = tmp_path / f"{name}.down"
        down = curl_in(cli, *opts, "-o", dest, server.url(LB_PUBLIC, name))
        down.assert_ok()
        ex = down.assert_exchange(verb, code)
        if verb == "PASV":
            assert parse_pasv(ex.replies[-1][1])[0] == LB_PUBLIC
        down.assert_exchange("RETR", (125, 150), 226)
        assert sha256_file(dest) == sample.sha256

    res = ftplib_roundtrip(cli, LB_PUBLIC, server, "ftplib.bin", sample2.bytes(), passive=True)
    assert res.downloaded == sample2.bytes()
    assert sha256_file(server.path("ftplib.bin")) == sample2.sha256
    assert res.codes("STOR") == [[150, 226]] and res.codes("RETR") == [[150, 226]], res.transcript

    # The server logged and checked the real client, never HAProxy's address.
    log = server.log()
    assert re.search(rf"session\{{peer={re.escape(CLIENT)}:\d+", log), log[-3000:]
    assert f"peer={LB_PRIVATE}" not in log, log[-3000:]
    assert "refused passive data connection" not in log
    assert haproxy.poll() is None


def test_data_connection_with_another_client_in_the_proxy_header_is_refused(
        net, start_server, sample):
    """The passive data connection is accepted *because* its PROXY header names the control
    connection's real client: one naming another address is refused, and the real client
    still gets its transfer."""
    topo, cli, lb, srv, haproxy = net
    server = start_server(srv, config=doc_block("haproxy-ferroftp"), listen=None, passive_ports=None)
    put_file(server, "file.bin", sample)

    with raw_in(cli, LB_PUBLIC, CONTROL, login=(server.user, server.password)) as c:
        assert c.cmd("TYPE I").code == 200
        r = c.cmd("EPSV")
        assert r.code == 229, r.text
        port = parse_epsv(r.text)
        # A trusted proxy (same source address as HAProxy) claiming another client connects
        # first; the server accepts data connections once RETR arrives, refuses this one
        # (closes it) and goes on waiting for the real client.
        intruder = lb.connect(SERVER, port, source=LB_PRIVATE)
        with intruder:
            intruder.sendall(proxy_v1("198.51.100.77", SERVER, 40000, port))
            c.send_raw(b"RETR file.bin\r\n")
            intruder.settimeout(30)
            assert intruder.recv(65536) == b"", "the server sent data to a foreign client"
        data = cli.connect(LB_PUBLIC, port)
        with data:
            r = c.read_reply()
            assert r.code == 150, r.text
            buf = bytearray()
            while chunk := data.recv(1 << 16):
                buf.extend(chunk)
        assert c.read_reply().code == 226
        assert sha256_bytes(bytes(buf)) == sample.sha256
        assert c.cmd("QUIT").code == 221
    log = server.log()
    refused = [l for l in log.splitlines() if "refused passive data connection" in l]
    assert len(refused) == 1 and "peer=198.51.100.77:40000" in refused[0], refused


def proxy_v1(src: str, dst: str, sport: int, dport: int) -> bytes:
    return f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode()


def proxy_v2(src: str, dst: str, sport: int, dport: int) -> bytes:
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    body = (bytes(map(int, src.split("."))) + bytes(map(int, dst.split(".")))
            + struct.pack("!HH", sport, dport))
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def read_until_closed(sock) -> list[str]:
    """Reply lines until the server closes the connection (bounded by the socket timeout)."""
    buf = b""
    while chunk := sock.recv(65536):
        buf += chunk
    return [l for l in buf.decode("utf-8", "replace").split("\r\n") if l]


@pytest.mark.parametrize("header", ["v1", "v2"])
def test_proxy_header_from_an_untrusted_address_gets_421_and_close(net, start_server, header):
    topo, cli, lb, srv, haproxy = net
    server = start_server(srv, config=doc_block("haproxy-ferroftp"), listen=None, passive_ports=None)
    make = proxy_v1 if header == "v1" else proxy_v2
    s = lb.connect(SERVER, CONTROL, source=UNTRUSTED)
    with s:
        # Sent at once, as a proxy does, before any greeting is read.
        s.sendall(make("198.51.100.66", SERVER, 40000, CONTROL))
        lines = read_until_closed(s)
    # An untrusted peer is greeted like any client; its PROXY line is then refused.
    assert lines == ["220 ferroftp ready", "421 PROXY protocol header from an untrusted address"]
    # The same address without a header is an ordinary client.
    with raw_in(lb, SERVER, CONTROL, source=UNTRUSTED,
                login=(server.user, server.password)) as c:
        assert c.cmd("NOOP").code == 200
        assert c.cmd("QUIT").code == 221
    log = server.log()
    assert f"peer={UNTRUSTED}:" in log
    assert "peer=198.51.100.66" not in log
