"""Scenario 2: the client behind a masquerading router (a home or office NAT).

    cli (192.168.1.10) ---lan0--- rtr (192.168.1.1 | 198.51.100.1, MASQUERADE) ---wan0--- srv (198.51.100.10)

Passive mode works. Active mode cannot work as such: the client's PORT/EPRT names its private
address, which is not the address its control connection comes from (198.51.100.1), and the
server refuses it as a bounce attempt (504) without any connection attempt. With
active.nat_fallback the server connects to 198.51.100.1 instead, which the router drops, and
answers 425 after active.connect_timeout. With the kernel's FTP conntrack/NAT helper on the
router, the router rewrites PORT/EPRT and forwards the server's connection: active mode works.

The server namespace counts the TCP SYNs it sends (an iptables OUTPUT rule with a counter), so
"no connection attempt" is checked, not assumed.
"""

from __future__ import annotations

import os
import shutil

import pytest

from sysftp import (
    curl_in, ftplib_roundtrip, parse_pasv, port_arg, raw_in, sha256_bytes, sha256_file,
)

CLIENT = "192.168.1.10"
ROUTER_LAN = "192.168.1.1"
ROUTER_WAN = "198.51.100.1"
SERVER = "198.51.100.10"
CONTROL = 2121
SYN_OUT = "ffsys-syn-out"
DROPPED_IN = "ffsys-dropped-in"


@pytest.fixture
def net(topo):
    cli, rtr, srv = topo.ns("cli"), topo.ns("rtr"), topo.ns("srv")
    topo.link(cli, "eth0", rtr, "lan0", f"{CLIENT}/24", f"{ROUTER_LAN}/24")
    topo.link(rtr, "wan0", srv, "eth0", f"{ROUTER_WAN}/24", f"{SERVER}/24")
    cli.route("default", ROUTER_LAN)
    rtr.forwarding()
    rtr.iptables("-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE")
    srv.iptables("-A", "OUTPUT", "-p", "tcp", "--syn", "-m", "comment", "--comment", SYN_OUT,
                 "-j", "ACCEPT")
    return topo, cli, rtr, srv


def server_syns(srv) -> int:
    return srv.rule_packets("filter", "OUTPUT", SYN_OUT)


def put_file(server, name, sample):
    shutil.copyfile(sample.path, server.path(name))


def eprt_arg(ip: str, port: int) -> str:
    return f"|1|{ip}|{port}|"


def final_replies(c, first) -> list:
    """`first` and, after a preliminary 1xx, the replies up to the final one."""
    replies = [first]
    while replies[-1].code < 200:
        replies.append(c.read_reply())
    return replies


def test_passive_works_behind_masquerade(net, start_server, sample, sample2, tmp_path):
    topo, cli, rtr, srv = net
    server = start_server(srv)

    up = curl_in(cli, "-T", sample.path, server.url(SERVER, "epsv.bin"))
    up.assert_ok()
    up.assert_exchange("EPSV", 229)
    up.assert_exchange("STOR", (125, 150), 226)
    assert sha256_file(server.path("epsv.bin")) == sample.sha256
    dest = tmp_path / "epsv.down"
    down = curl_in(cli, "-o", dest, server.url(SERVER, "epsv.bin"))
    down.assert_ok()
    down.assert_exchange("RETR", (125, 150), 226)
    assert sha256_file(dest) == sample.sha256

    dest = tmp_path / "pasv.down"
    down = curl_in(cli, "--disable-epsv", "--no-ftp-skip-pasv-ip", "-o", dest,
                   server.url(SERVER, "epsv.bin"))
    down.assert_ok()
    ex = down.assert_exchange("PASV", 227)
    assert parse_pasv(ex.replies[-1][1])[0] == SERVER
    down.assert_exchange("RETR", (125, 150), 226)
    assert sha256_file(dest) == sample.sha256

    res = ftplib_roundtrip(cli, SERVER, server, "ftplib.bin", sample2.bytes(), passive=True)
    assert res.downloaded == sample2.bytes()
    assert sha256_file(server.path("ftplib.bin")) == sample2.sha256
    assert res.codes("STOR") == [[150, 226]] and res.codes("RETR") == [[150, 226]], res.transcript

    # The server sees the router's public address, and never connected anywhere.
    assert f"peer={ROUTER_WAN}:" in server.log()
    assert f"peer={CLIENT}" not in server.log()
    assert server_syns(srv) == 0


def test_active_mode_behind_nat_is_refused_as_a_bounce(net, start_server, sample, tmp_path):
    topo, cli, rtr, srv = net
    server = start_server(srv)
    put_file(server, "file.bin", sample)

    # curl -P -: EPRT with the private address, refused; curl falls back to PORT, refused too.
    dest = tmp_path / "active.down"
    run = curl_in(cli, "-P", "-", "-o", dest, server.url(SERVER, "file.bin"))
    assert run.returncode == 30, run.describe()         # CURLE_FTP_PORT_FAILED
    assert run.codes("EPRT") == [[504]] and run.codes("PORT") == [[504]], run.describe()
    assert CLIENT in run.exchanges("EPRT")[0].command
    assert "RETR" not in run.sent_verbs()

    # The same by hand, with a listener the server would have to connect to.
    lsock = cli.listen(CLIENT)
    port = lsock.getsockname()[1]
    with lsock, raw_in(cli, SERVER, server.port, login=(server.user, server.password)) as c:
        r = c.cmd(f"PORT {port_arg(CLIENT, port)}")
        assert r.code == 504 and CLIENT in r.text, r.text
        r = c.cmd(f"EPRT {eprt_arg(CLIENT, port)}")
        assert r.code == 504 and CLIENT in r.text, r.text
        # Not the client's address either: a third party (bounce), and a privileged port.
        r = c.cmd(f"PORT {port_arg('198.51.100.99', port)}")
        assert r.code == 504, r.text
        r = c.cmd(f"PORT {port_arg(ROUTER_WAN, 80)}")
        assert r.code == 504, r.text
        r = c.cmd(f"EPRT {eprt_arg(ROUTER_WAN, 1023)}")
        assert r.code == 504, r.text
        # Nothing was accepted as a data endpoint.
        r = c.cmd("RETR file.bin")
        assert r.code == 425, r.text
        assert c.cmd("NOOP").code == 200
        assert c.cmd("QUIT").code == 221
        lsock.settimeout(0)
        with pytest.raises(BlockingIOError):
            lsock.accept()
    assert server_syns(srv) == 0, "the server attempted a connection after a refused PORT/EPRT"


NAT_FALLBACK = """
[active]
enabled = true
connect_timeout = "3s"
nat_fallback = true
"""


def test_nat_fallback_connects_to_the_public_address_and_fails_cleanly(
        net, start_server, sample, tmp_path):
    topo, cli, rtr, srv = net
    # Like most routers: unsolicited inbound connections to the router itself are dropped, so
    # the server's connection attempt runs into active.connect_timeout.
    rtr.iptables("-A", "INPUT", "-i", "wan0", "-p", "tcp", "--syn", "-m", "comment",
                 "--comment", DROPPED_IN, "-j", "DROP")
    server = start_server(srv, config=NAT_FALLBACK)
    put_file(server, "file.bin", sample)

    lsock = cli.listen(CLIENT)
    port = lsock.getsockname()[1]
    with lsock, raw_in(cli, SERVER, server.port, login=(server.user, server.password)) as c:
        r = c.cmd(f"EPRT {eprt_arg(CLIENT, port)}")
        assert r.code == 200, r.text
        assert f"Active mode to {ROUTER_WAN} port {port}" in r.text, r.text
        r = c.cmd(f"PORT {port_arg(CLIENT, port)}")
        assert r.code == 200 and f"Active mode to {ROUTER_WAN} port {port}" in r.text, r.text
        # A public third party is still a bounce.
        r = c.cmd(f"PORT {port_arg('198.51.100.99', port)}")
        assert r.code == 504, r.text
        r = c.cmd(f"PORT {port_arg(CLIENT, port)}")
        assert r.code == 200, r.text
        replies = final_replies(c, c.cmd("RETR file.bin"))
        # The server connects before its 150, so a failed connection is a single 425.
        assert [x.code for x in replies] == [425], [x.text for x in replies]
        assert f"connecting to {ROUTER_WAN}:{port} timed out after 3s" in replies[0].text
        assert c.cmd("NOOP").code == 200
        assert c.cmd("QUIT").code == 221
        lsock.settimeout(0)
        with pytest.raises(BlockingIOError):
            lsock.accept()
    assert rtr.rule_packets("filter", "INPUT", DROPPED_IN) >= 1
    assert server_syns(srv) >= 1

    # curl -P - sees the same: EPRT accepted (with the substituted address), then 425.
    dest = tmp_path / "active.down"
    run = curl_in(cli, "-P", "-", "-o", dest, server.url(SERVER, "file.bin"))
    ex = run.assert_exchange("EPRT", 200)
    assert f"Active mode to {ROUTER_WAN} port" in ex.replies[-1][1], run.describe()
    assert run.codes("RETR") == [[425]], run.describe()
    assert run.returncode == 19, run.describe()        # CURLE_FTP_COULDNT_RETR_FILE
    assert not dest.exists() or dest.stat().st_size == 0


def enable_ftp_helper(rtr):
    """The kernel's FTP conntrack helper (and, with NAT, nf_nat_ftp) on the router, attached
    explicitly to the control port with the CT target (automatic helper assignment is gone
    since Linux 6.0, and the CT target needs no `ports=` module parameter for port 2121)."""
    p = rtr.run(["modprobe", "nf_conntrack_ftp"], check=False)
    loaded = os.path.exists("/sys/module/nf_conntrack_ftp")
    if not loaded:
        pytest.skip("kernel FTP conntrack helper unavailable: nf_conntrack_ftp is neither "
                    f"built in nor loadable (modprobe: {p.stderr.decode(errors='replace').strip()})")
    p = rtr.iptables("-t", "raw", "-A", "PREROUTING", "-i", "lan0", "-p", "tcp", "--dport",
                     str(CONTROL), "-j", "CT", "--helper", "ftp", check=False)
    if p.returncode != 0:
        pytest.skip("kernel FTP conntrack helper unavailable: `iptables -t raw ... -j CT "
                    f"--helper ftp` failed: {p.stderr.decode(errors='replace').strip()}")


def test_active_works_with_the_kernel_ftp_helper_on_the_router(
        net, start_server, sample, sample2, tmp_path):
    topo, cli, rtr, srv = net
    enable_ftp_helper(rtr)
    server = start_server(srv)

    # EPRT (curl's default): the router rewrites the address to its public one.
    up = curl_in(cli, "-P", "-", "-T", sample.path, server.url(SERVER, "eprt.bin"))
    up.assert_ok()
    ex = up.assert_exchange("EPRT", 200)
    assert f"Active mode to {ROUTER_WAN} port" in ex.replies[-1][1], up.describe()
    up.assert_exchange("STOR", (125, 150), 226)
    assert sha256_file(server.path("eprt.bin")) == sample.sha256
    dest = tmp_path / "eprt.down"
    down = curl_in(cli, "-P", "-", "-o", dest, server.url(SERVER, "eprt.bin"))
    down.assert_ok()
    down.assert_exchange("EPRT", 200)
    down.assert_exchange("RETR", (125, 150), 226)
    assert sha256_file(dest) == sample.sha256

    # PORT (curl --disable-eprt, and ftplib in active mode).
    dest = tmp_path / "port.down"
    down = curl_in(cli, "-P", "-", "--disable-eprt", "-o", dest, server.url(SERVER, "eprt.bin"))
    down.assert_ok()
    ex = down.assert_exchange("PORT", 200)
    assert f"Active mode to {ROUTER_WAN} port" in ex.replies[-1][1], down.describe()
    assert "EPRT" not in down.sent_verbs()
    assert sha256_file(dest) == sample.sha256

    res = ftplib_roundtrip(cli, SERVER, server, "ftplib.bin", sample2.bytes(), passive=False)
    assert res.downloaded == sample2.bytes()
    assert sha256_file(server.path("ftplib.bin")) == sample2.sha256
    assert res.codes("PORT") == [[200], [200]], res.transcript
    assert all(ROUTER_WAN in r[0] for r in res.replies_to("PORT")), res.transcript
    assert res.codes("STOR") == [[150, 226]] and res.codes("RETR") == [[150, 226]], res.transcript
    assert server_syns(srv) >= 4


# --------------------------------------------------------------------------------------------
# active.source_port, on a plain link (no NAT)


SOURCE_PORT_CONFIG = """
[active]
source_port = "control-minus-one"
"""


def active_retr(c, lsock, ip, name) -> tuple[tuple[str, int], bytes, list[int]]:
    """EPRT to our listener, RETR `name`; returns (server's source address, bytes, codes)."""
    port = lsock.getsockname()[1]
    r = c.cmd(f"EPRT {eprt_arg(ip, port)}")
    assert r.code == 200 and f"Active mode to {ip} port {port}" in r.text, r.text
    c.send_raw(f"RETR {name}\r\n".encode())
    lsock.settimeout(30)
    data_sock, peer = lsock.accept()
    with data_sock:
        data_sock.settimeout(30)
        buf = bytearray()
        while chunk := data_sock.recv(1 << 16):
            buf.extend(chunk)
    codes = [c.read_reply().code]
    while codes[-1] < 200:
        codes.append(c.read_reply().code)
    return peer, bytes(buf), codes


def test_active_source_port_control_minus_one(topo, start_server, sample):
    cli, srv = topo.ns("cli"), topo.ns("srv")
    topo.link(cli, "eth0", srv, "eth0", "192.0.2.50/24", "192.0.2.10/24")
    server = start_server(srv, config=SOURCE_PORT_CONFIG)
    put_file(server, "file.bin", sample)

    # A new listening port per transfer, as clients do: the same (source, target) pair again
    # would collide with the previous connection's TIME_WAIT.
    with raw_in(cli, "192.0.2.10", server.port, login=(server.user, server.password)) as c:
        for _ in range(2):
            with cli.listen("192.0.2.50") as lsock:
                peer, data, codes = active_retr(c, lsock, "192.0.2.50", "file.bin")
            assert peer == ("192.0.2.10", CONTROL - 1), peer
            assert sha256_bytes(data) == sample.sha256
            assert codes == [150, 226], codes

    # When port 2120 cannot be bound, the server connects from an ephemeral port and says so
    # once.
    with srv.listen("0.0.0.0", CONTROL - 1), raw_in(
            cli, "192.0.2.10", server.port, login=(server.user, server.password)) as c:
        for _ in range(2):
            with cli.listen("192.0.2.50") as lsock:
                peer, data, codes = active_retr(c, lsock, "192.0.2.50", "file.bin")
            assert peer[0] == "192.0.2.10" and peer[1] != CONTROL - 1, peer
            assert sha256_bytes(data) == sample.sha256
            assert codes == [150, 226], codes
    warnings = [l for l in server.log().splitlines()
                if " WARN " in l and ("2120" in l or "source port" in l.lower())]
    assert len(warnings) == 1, warnings
