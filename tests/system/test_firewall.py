"""Scenario 5: the firewall examples of docs/nat-and-firewalls.md, applied verbatim in the
server's namespace (policy drop, control port and passive range accepted).

    cli (192.0.2.50) ---- srv (192.0.2.10, firewall)

Passive transfers work with the example; with the passive range rule removed they fail (the
data connection's SYN is dropped and curl's connect timeout expires) while the control
connection still works: the rule is what opens the range.
"""

from __future__ import annotations

import shutil

import pytest

from sysftp import curl_in, doc_block, doc_commands, parse_pasv, sha256_file

CLIENT = "192.0.2.50"
SERVER = "192.0.2.10"
PASSIVE_RULE = "ferroftp passive data"


@pytest.fixture
def net(topo):
    cli, srv = topo.ns("cli"), topo.ns("srv")
    topo.link(cli, "eth0", srv, "eth0", f"{CLIENT}/24", f"{SERVER}/24")
    return topo, cli, srv


def nft_apply(srv, ruleset: str):
    srv.nft(input=ruleset)


def assert_transfers_work(cli, server, sample, tmp_path, tag):
    for opts, verb, code in ((["--disable-epsv", "--no-ftp-skip-pasv-ip"], "PASV", 227),
                             ([], "EPSV", 229)):
        name = f"{tag}-{verb.lower()}.bin"
        up = curl_in(cli, *opts, "-T", sample.path, server.url(SERVER, name))
        up.assert_ok()
        up.assert_exchange(verb, code)
        up.assert_exchange("STOR", (125, 150), 226)
        assert sha256_file(server.path(name)) == sample.sha256
        dest = tmp_path / f"{name}.down"
        down = curl_in(cli, *opts, "-o", dest, server.url(SERVER, name))
        down.assert_ok()
        down.assert_exchange("RETR", (125, 150), 226)
        assert sha256_file(dest) == sample.sha256


def assert_pasv_transfer_blocked(cli, server, sample, tmp_path):
    shutil.copyfile(sample.path, server.path("blocked.bin"))
    dest = tmp_path / "blocked.down"
    run = curl_in(cli, "--disable-epsv", "--no-ftp-skip-pasv-ip", "-o", dest,
                  server.url(SERVER, "blocked.bin"), connect_timeout=3)
    # The control connection passes the firewall; the data connection does not.
    assert [c for c, _ in run.greeting] == [220], run.describe()
    run.assert_exchange("PASS", 230)
    ex = run.assert_exchange("PASV", 227)
    assert parse_pasv(ex.replies[-1][1])[0] == SERVER
    assert run.returncode == 28, run.describe()          # CURLE_OPERATION_TIMEDOUT
    assert "RETR" not in run.sent_verbs()


def test_nftables_example(net, start_server, sample, tmp_path):
    topo, cli, srv = net
    server = start_server(srv)
    ruleset = doc_block("nftables")
    assert PASSIVE_RULE in ruleset and "policy drop" in ruleset
    nft_apply(srv, ruleset)
    assert_transfers_work(cli, server, sample, tmp_path, "nft")

    without = "\n".join(l for l in ruleset.splitlines() if PASSIVE_RULE not in l) + "\n"
    nft_apply(srv, without)             # the example starts with `flush ruleset`
    listed = srv.nft("list", "ruleset").stdout.decode()
    assert "2121" in listed and "50000" not in listed, listed
    assert_pasv_transfer_blocked(cli, server, sample, tmp_path)


def test_iptables_example(net, start_server, sample, tmp_path):
    topo, cli, srv = net
    server = start_server(srv)
    lines = doc_commands("iptables", "iptables")
    assert ["iptables", "-P", "INPUT", "DROP"] in lines
    for argv in lines:
        srv.run(argv)
    assert_transfers_work(cli, server, sample, tmp_path, "ipt")

    passive = [a for a in lines if PASSIVE_RULE in a]
    assert len(passive) == 1 and passive[0][1] == "-A"
    srv.run(["iptables", "-D", *passive[0][2:]])
    listed = srv.run(["iptables", "-S", "INPUT"]).stdout.decode()
    assert "2121" in listed and "50000" not in listed, listed
    assert_pasv_transfer_blocked(cli, server, sample, tmp_path)
