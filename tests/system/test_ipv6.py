"""IPv6: PASV cannot carry an IPv6 address, so the server answers 425 and points to EPSV;
EPSV and EPRT work (curl, ftplib, raw commands), and EPRT is held to the same bounce rules.

    cli (2001:db8::50) ---- srv (2001:db8::10)
"""

from __future__ import annotations

import socket

import pytest

from sysftp import (
    RawFTP, curl_in, ftplib_roundtrip, parse_epsv, sha256_bytes, sha256_file,
)

CLIENT = "2001:db8::50"
SERVER = "2001:db8::10"


@pytest.fixture
def net(topo):
    cli, srv = topo.ns("cli", ipv6=True), topo.ns("srv", ipv6=True)
    topo.link(cli, "eth0", srv, "eth0", f"{CLIENT}/64", f"{SERVER}/64")
    return topo, cli, srv


def raw6(ns, server) -> RawFTP:
    def go():
        c = RawFTP.__new__(RawFTP)
        c.sock = socket.create_connection((SERVER, server.port), timeout=30)
        c.buf = b""
        return c
    c = ns.call(go)
    assert c.greeting().code == 220
    c.login(server.user, server.password)
    return c


def test_pasv_on_ipv6_points_to_epsv_and_epsv_eprt_work(net, start_server, sample, tmp_path):
    topo, cli, srv = net
    server = start_server(srv, listen="[::]:2121")
    url = f"ftp://{server.user}:{server.password}@[{SERVER}]:{server.port}/"

    with raw6(cli, server) as c:
        r = c.cmd("PASV")
        assert r.code == 425 and "EPSV" in r.text, r.text
        r = c.cmd("EPSV")
        assert r.code == 229 and 50000 <= parse_epsv(r.text) <= 50100, r.text
        lsock = cli.call(lambda: socket.create_server((CLIENT, 0), family=socket.AF_INET6))
        with lsock:
            port = lsock.getsockname()[1]
            r = c.cmd(f"EPRT |2|2001:db8::99|{port}|")
            assert r.code == 504, r.text
            r = c.cmd(f"EPRT |2|{CLIENT}|80|")
            assert r.code == 504, r.text
            r = c.cmd(f"EPRT |2|{CLIENT}|{port}|")
            assert r.code == 200 and f"Active mode to {CLIENT} port {port}" in r.text, r.text
            c.send_raw(b"NLST\r\n")
            lsock.settimeout(30)
            data, peer = lsock.accept()
            with data:
                assert peer[0] == SERVER
                while data.recv(65536):
                    pass
            codes = [c.read_reply().code]
            while codes[-1] < 200:
                codes.append(c.read_reply().code)
            assert codes == [150, 226], codes
        assert c.cmd("QUIT").code == 221

    up = curl_in(cli, "-g", "-T", sample.path, url + "epsv.bin")
    up.assert_ok()
    up.assert_exchange("EPSV", 229)
    assert "PASV" not in up.sent_verbs()
    assert sha256_file(server.path("epsv.bin")) == sample.sha256
    dest = tmp_path / "eprt.down"
    down = curl_in(cli, "-g", "-P", "-", "-o", dest, url + "epsv.bin")
    down.assert_ok()
    ex = down.assert_exchange("EPRT", 200)
    assert f"Active mode to {CLIENT} port" in ex.replies[-1][1]
    assert sha256_file(dest) == sample.sha256

    data = sample.bytes()
    for passive in (True, False):
        res = ftplib_roundtrip(cli, SERVER, server, "ftplib.bin", data, passive=passive)
        assert sha256_bytes(res.downloaded) == sample.sha256
        verb = "EPSV" if passive else "EPRT"
        expected = [[229], [229]] if passive else [[200], [200]]
        assert res.codes(verb) == expected, res.transcript
        assert res.codes("STOR") == [[150, 226]] and res.codes("RETR") == [[150, 226]]
