"""Scenario 4: passive.advertise_ports, L4 port translation in front of the server (a
Kubernetes Service, a cloud load balancer or a NAT gateway that maps ports).

    cli (203.0.113.50) ---wan0--- rtr (203.0.113.1 | 10.0.0.1) ---lan0--- srv (10.0.0.2)

The router DNATs 2121 to 10.0.0.2:2121 and 60000-60100 to 10.0.0.2:50000-50100 one to one
(iptables DNAT with a shifted port range: 60000+k -> 50000+k; the rules of
docs/nat-and-firewalls.md). Ports 50000-50100 are *not*
forwarded, so a client can only reach a passive listener through its mapped port.
The server listens on 50000-50100 and announces 60000-60100 in PASV and EPSV.
"""

from __future__ import annotations

import pytest

from sysftp import (
    curl_in, doc_commands, ftplib_roundtrip, parse_epsv, parse_pasv, raw_in, sha256_file,
)

PUBLIC = "203.0.113.1"
CLIENT = "203.0.113.50"
ROUTER_LAN = "10.0.0.1"
SERVER = "10.0.0.2"
CONTROL = 2121
LISTEN = (50000, 50100)
ANNOUNCE = (60000, 60100)

CONFIG = f"""
[passive]
ports = "{LISTEN[0]}-{LISTEN[1]}"
advertise = "{PUBLIC}"
advertise_ports = "{ANNOUNCE[0]}-{ANNOUNCE[1]}"
"""


@pytest.fixture
def net(topo):
    cli, rtr, srv = topo.ns("cli"), topo.ns("rtr"), topo.ns("srv")
    topo.link(cli, "eth0", rtr, "wan0", f"{CLIENT}/24", f"{PUBLIC}/24")
    topo.link(rtr, "lan0", srv, "eth0", f"{ROUTER_LAN}/24", f"{SERVER}/24")
    srv.route("default", ROUTER_LAN)
    rtr.forwarding()
    # The block of docs/nat-and-firewalls.md, verbatim.
    for argv in doc_commands("port-translation", "iptables"):
        rtr.run(argv)
    return topo, cli, rtr, srv


def listening_for(srv, announced: int) -> bool:
    return announced - ANNOUNCE[0] + LISTEN[0] in srv.listening_tcp_ports()


def test_pasv_and_epsv_announce_the_mapped_ports(net, start_server):
    topo, cli, rtr, srv = net
    server = start_server(srv, config=CONFIG, passive_ports=None)
    with raw_in(cli, PUBLIC, CONTROL, login=(server.user, server.password)) as c:
        for verb in ("PASV", "EPSV", "PASV", "EPSV"):
            r = c.cmd(verb)
            if verb == "PASV":
                assert r.code == 227, r.text
                ip, port = parse_pasv(r.text)
                assert ip == PUBLIC, r.text
            else:
                assert r.code == 229, r.text
                port = parse_epsv(r.text)
            assert ANNOUNCE[0] <= port <= ANNOUNCE[1], r.text
            # The server listens on the port the mapping leads to (60000+k -> 50000+k).
            assert listening_for(srv, port), (port, sorted(srv.listening_tcp_ports()))
        # The data connection through the mapping is accepted.
        data = cli.connect(PUBLIC, port)
        with data:
            r = c.cmd("NLST")
            assert r.code == 150, r.text
            data.settimeout(30)
            while data.recv(65536):
                pass
        assert c.read_reply().code == 226
        assert c.cmd("QUIT").code == 221


def test_transfers_through_the_port_mapping(net, start_server, sample, sample2, tmp_path):
    topo, cli, rtr, srv = net
    server = start_server(srv, config=CONFIG, passive_ports=None)
    for opts, verb, code in ((["--disable-epsv", "--no-ftp-skip-pasv-ip"], "PASV", 227),
                             ([], "EPSV", 229)):
        name = f"{verb.lower()}.bin"
        up = curl_in(cli, *opts, "-T", sample.path, server.url(PUBLIC, name))
        up.assert_ok()
        ex = up.assert_exchange(verb, code)
        text = ex.replies[-1][1]
        port = parse_pasv(text)[1] if verb == "PASV" else parse_epsv(text)
        assert ANNOUNCE[0] <= port <= ANNOUNCE[1], text
        up.assert_exchange("STOR", (125, 150), 226)
        assert sha256_file(server.path(name)) == sample.sha256
        dest = tmp_path / f"{name}.down"
        down = curl_in(cli, *opts, "-o", dest, server.url(PUBLIC, name))
        down.assert_ok()
        down.assert_exchange(verb, code)
        down.assert_exchange("RETR", (125, 150), 226)
        assert sha256_file(dest) == sample.sha256

    res = ftplib_roundtrip(cli, PUBLIC, server, "ftplib.bin", sample2.bytes(), passive=True)
    assert res.downloaded == sample2.bytes()
    assert sha256_file(server.path("ftplib.bin")) == sample2.sha256
    ports = [parse_pasv(r[0])[1] for r in res.replies_to("PASV")]
    assert len(ports) == 2 and all(ANNOUNCE[0] <= p <= ANNOUNCE[1] for p in ports), ports
    assert res.codes("STOR") == [[150, 226]] and res.codes("RETR") == [[150, 226]], res.transcript
