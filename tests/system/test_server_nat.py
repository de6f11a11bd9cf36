"""Scenario 1: the server behind a NAT router (a home router or a cloud NAT with port
forwarding).

    out (203.0.113.50) ---wan0--- rtr (203.0.113.1 | br0 10.0.0.1) ---+--- srv (10.0.0.2)
                                                                      +--- lan (10.0.0.3)

The router DNATs TCP 2121 and 50000-50100 arriving on its public side to 10.0.0.2 (port
forwarding). The outside client has no route to 10.0.0.0/24, as on the Internet: connecting to
a private address fails at once (ENETUNREACH).

curl is run with --no-ftp-skip-pasv-ip and ftplib with trust_server_pasv_ipv4_address = True so
that both use the address of the 227 reply like most clients; their defaults ignore it (see
docs/nat-and-firewalls.md), which would hide what the server announces.
"""

from __future__ import annotations

import errno
import re
import shutil
import time

import pytest

from sysftp import (
    curl_in, doc_commands, ftplib_roundtrip, parse_epsv, parse_pasv, raw_in, sha256_file,
)

PUBLIC = "203.0.113.1"
OUTSIDE = "203.0.113.50"
ROUTER_LAN = "10.0.0.1"
SERVER = "10.0.0.2"
LAN_CLIENT = "10.0.0.3"
CONTROL = 2121
PASSIVE = (50000, 50100)

# The port forwarding of the router (DNAT of 2121 and 50000-50100 arriving on wan0 to
# 10.0.0.2): the block of docs/nat-and-firewalls.md, verbatim.
ROUTER_RULES = doc_commands("router-port-forwarding", "iptables")


@pytest.fixture
def net(topo):
    rtr, srv, lan, out = (topo.ns(r) for r in ("rtr", "srv", "lan", "out"))
    topo.link(rtr, "lan-srv", srv, "eth0", None, f"{SERVER}/24")
    topo.link(rtr, "lan-cli", lan, "eth0", None, f"{LAN_CLIENT}/24")
    topo.bridge(rtr, "br0", ["lan-srv", "lan-cli"], f"{ROUTER_LAN}/24")
    topo.link(rtr, "wan0", out, "eth0", f"{PUBLIC}/24", f"{OUTSIDE}/24")
    srv.route("default", ROUTER_LAN)
    lan.route("default", ROUTER_LAN)
    rtr.forwarding()
    for argv in ROUTER_RULES:
        rtr.run(argv)
    return topo, rtr, srv, lan, out


def put_file(server, name, sample):
    shutil.copyfile(sample.path, server.path(name))


def in_range(port: int) -> bool:
    return PASSIVE[0] <= port <= PASSIVE[1]


def pasv_reply(ns, host, server) -> tuple[str, int, str]:
    with raw_in(ns, host, server.port, login=(server.user, server.password)) as c:
        r = c.cmd("PASV")
        assert r.code == 227, r.text
        ip, port = parse_pasv(r.text)
        q = c.cmd("QUIT")
        assert q.code == 221, q.text
    return ip, port, r.text


def curl_roundtrip(ns, host, server, sample, tmp_path, name, *opts):
    """Upload `sample` as `name` with curl, download it back; both byte-exact. Returns the two
    curl runs (their transcripts are asserted by the caller)."""
    up = curl_in(ns, *opts, "-T", sample.path, server.url(host, name))
    up.assert_ok()
    up.assert_exchange("STOR", (125, 150), 226)
    assert sha256_file(server.path(name)) == sample.sha256
    dest = tmp_path / f"{name}.down"
    down = curl_in(ns, *opts, "-o", dest, server.url(host, name))
    down.assert_ok()
    down.assert_exchange("RETR", (125, 150), 226)
    assert sha256_file(dest) == sample.sha256
    return up, down


def pasv_address_in(run) -> str:
    ex = run.assert_exchange("PASV", 227)
    return parse_pasv(ex.replies[-1][1])[0]


def chosen(log: str) -> list[tuple[str, str]]:
    """(address, rule) of every `passive address chosen ... address=IP:PORT rule=RULE` debug
    line; RULE runs to the end of the line (e.g. `passive.advertise_by_client 10.0.0.0/24`)."""
    out = []
    for line in log.splitlines():
        if "passive address chosen" in line:
            m = re.search(r'\baddress="?([0-9.]+):\d+"? rule="?(.*?)"?$', line)
            assert m, f"unparseable log line {line!r}"
            out.append((m.group(1), m.group(2)))
    return out


def test_outside_client_gets_the_public_address_and_transfers_both_ways(
        net, start_server, sample, sample2, tmp_path):
    topo, rtr, srv, lan, out = net
    server = start_server(srv, advertise=PUBLIC)

    ip, port, text = pasv_reply(out, PUBLIC, server)
    assert ip == PUBLIC and in_range(port), text

    up, down = curl_roundtrip(out, PUBLIC, server, sample, tmp_path, "curl.bin",
                              "--disable-epsv", "--no-ftp-skip-pasv-ip")
    assert pasv_address_in(up) == PUBLIC and pasv_address_in(down) == PUBLIC
    assert "EPSV" not in up.sent_verbs() + down.sent_verbs()

    res = ftplib_roundtrip(out, PUBLIC, server, "ftplib.bin", sample2.bytes(), passive=True,
                           trust_pasv_address=True)
    assert sha256_file(server.path("ftplib.bin")) == sample2.sha256
    assert res.downloaded == sample2.bytes()
    assert res.codes("PASV") == [[227], [227]], res.transcript
    assert {parse_pasv(r[0])[0] for r in res.replies_to("PASV")} == {PUBLIC}
    assert res.codes("STOR") == [[150, 226]] and res.codes("RETR") == [[150, 226]], res.transcript
    assert set(chosen(server.log())) == {(PUBLIC, "passive.advertise")}


def test_lan_client_gets_the_lan_address_by_client_rule(net, start_server, sample, tmp_path):
    topo, rtr, srv, lan, out = net
    config = f"""
[passive]
ports = "{PASSIVE[0]}-{PASSIVE[1]}"
advertise = "{PUBLIC}"

[[passive.advertise_by_client]]
cidr = "10.0.0.0/24"
address = "{SERVER}"
"""
    server = start_server(srv, config=config, passive_ports=None)

    ip, port, text = pasv_reply(lan, SERVER, server)
    assert ip == SERVER and in_range(port), text
    ip, port, text = pasv_reply(out, PUBLIC, server)
    assert ip == PUBLIC and in_range(port), text

    up, down = curl_roundtrip(lan, SERVER, server, sample, tmp_path, "lan.bin",
                              "--disable-epsv", "--no-ftp-skip-pasv-ip")
    assert pasv_address_in(up) == SERVER and pasv_address_in(down) == SERVER
    up, down = curl_roundtrip(out, PUBLIC, server, sample, tmp_path, "wan.bin",
                              "--disable-epsv", "--no-ftp-skip-pasv-ip")
    assert pasv_address_in(up) == PUBLIC and pasv_address_in(down) == PUBLIC

    # Each choice is logged at debug level with the rule that made it.
    choices = chosen(server.log())
    assert set(choices) == {(SERVER, "passive.advertise_by_client 10.0.0.0/24"),
                            (PUBLIC, "passive.advertise")}, choices


def test_without_advertise_the_outside_client_gets_the_private_address(
        net, start_server, sample, tmp_path):
    """The problem `ferroftp doctor` diagnoses: no passive.advertise behind NAT. PASV announces
    10.0.0.2, which the outside client cannot reach; EPSV (port only) works."""
    topo, rtr, srv, lan, out = net
    server = start_server(srv)
    put_file(server, "file.bin", sample)

    with raw_in(out, PUBLIC, server.port, login=(server.user, server.password)) as c:
        r = c.cmd("PASV")
        assert r.code == 227, r.text
        ip, port = parse_pasv(r.text)
        assert ip == SERVER and in_range(port), r.text
        r = c.cmd("EPSV")
        assert r.code == 229 and in_range(parse_epsv(r.text)), r.text
        assert c.cmd("QUIT").code == 221

    # A client that uses the announced address fails to open the data connection.
    dest = tmp_path / "pasv.down"
    run = curl_in(out, "--disable-epsv", "--no-ftp-skip-pasv-ip", "-o", dest,
                  server.url(PUBLIC, "file.bin"))
    assert run.returncode == 7, run.describe()          # CURLE_COULDNT_CONNECT
    assert pasv_address_in(run) == SERVER
    assert f"Immediate connect fail for {SERVER}: Network is unreachable" in run.stderr, \
        run.describe()
    assert "RETR" not in run.sent_verbs()

    with pytest.raises(OSError) as e:
        ftplib_roundtrip(out, PUBLIC, server, "x.bin", b"x", trust_pasv_address=True)
    assert e.value.errno == errno.ENETUNREACH, e.value

    # EPSV needs no address: it works through the same NAT.
    dest = tmp_path / "epsv.down"
    run = curl_in(out, "-o", dest, server.url(PUBLIC, "file.bin"))
    run.assert_ok()
    run.assert_exchange("EPSV", 229)
    run.assert_exchange("RETR", (125, 150), 226)
    assert sha256_file(dest) == sample.sha256
    up = curl_in(out, "-T", sample.path, server.url(PUBLIC, "up.bin"))
    up.assert_ok()
    up.assert_exchange("EPSV", 229)
    assert sha256_file(server.path("up.bin")) == sample.sha256

    # curl's default (--ftp-skip-pasv-ip, since 7.74) ignores the 227 address and reuses the
    # control connection's: it hides the problem for curl, not for other clients.
    dest = tmp_path / "skip.down"
    run = curl_in(out, "--disable-epsv", "-o", dest, server.url(PUBLIC, "file.bin"))
    run.assert_ok()
    assert pasv_address_in(run) == SERVER
    assert sha256_file(dest) == sample.sha256

    # The server chose its local address and warned, once for this client, that it is
    # announcing a private address to a public client.
    log = server.log()
    assert set(chosen(log)) == {(SERVER, "control connection local address")}
    warnings = [l for l in log.splitlines()
                if " WARN " in l and "announcing a private passive address" in l]
    assert len(warnings) == 1 and f"client={OUTSIDE} address={SERVER}" in warnings[0], warnings


def pasv_address(ns, host, port, server) -> str:
    with raw_in(ns, host, port, login=(server.user, server.password)) as c:
        r = c.cmd("PASV")
        assert r.code == 227, r.text
        assert c.cmd("QUIT").code == 221
    return parse_pasv(r.text)[0]


@pytest.mark.time_limit(120)
def test_address_order_listener_rule_and_a_dns_name_resolved_again(net, start_server):
    """advertise_by_client before the listener's advertise before passive.advertise, which is
    a DNS name (resolved from the server namespace's own /etc/hosts) re-resolved every
    advertise_refresh."""
    topo, rtr, srv, lan, out = net
    rtr.iptables("-t", "nat", "-A", "PREROUTING", "-i", "wan0", "-p", "tcp", "--dport", "2122",
                 "-j", "DNAT", "--to-destination", f"{SERVER}:2122")
    hosts = topo.etc_file(srv, "hosts", f"127.0.0.1 localhost\n{PUBLIC} ftp.example.test\n")
    config = f"""
[[server.listeners]]
listen = "0.0.0.0:2121"

[[server.listeners]]
listen = "0.0.0.0:2122"
advertise = "198.51.100.1"

[passive]
ports = "{PASSIVE[0]}-{PASSIVE[1]}"
advertise = "ftp.example.test"
advertise_refresh = "1s"

[[passive.advertise_by_client]]
cidr = "10.0.0.0/24"
address = "{SERVER}"
"""
    server = start_server(srv, config=config, listen=None, passive_ports=None)
    assert sorted(server.listening) == ["0.0.0.0:2121", "0.0.0.0:2122"]

    assert pasv_address(out, PUBLIC, 2121, server) == PUBLIC            # passive.advertise
    assert pasv_address(out, PUBLIC, 2122, server) == "198.51.100.1"    # the listener's
    assert pasv_address(lan, SERVER, 2122, server) == SERVER            # the client rule
    assert pasv_address(lan, SERVER, 2121, server) == SERVER

    # The name now resolves elsewhere: within a bounded wait, PASV follows.
    with open(hosts, "r+") as f:          # same inode: the bind mount shows the new content
        f.truncate(0)
        f.write("127.0.0.1 localhost\n203.0.113.99 ftp.example.test\n")
    deadline = time.monotonic() + 60
    while (got := pasv_address(out, PUBLIC, 2121, server)) != "203.0.113.99":
        assert got == PUBLIC, got
        assert time.monotonic() < deadline, "PASV still announces the old address after 60 s"
        time.sleep(0.5)
    assert pasv_address(out, PUBLIC, 2122, server) == "198.51.100.1"

    assert set(chosen(server.log())) == {
        (PUBLIC, "passive.advertise"), ("203.0.113.99", "passive.advertise"),
        ("198.51.100.1", "server.listeners.advertise"),
        (SERVER, "passive.advertise_by_client 10.0.0.0/24")}
