"""`ferroftp doctor` against real problems, built in network namespaces, for ferroftp and for
vsftpd and Pure-FTPd (Debian packages) configured the same wrong way; and the firewall rules of
`ferroftp check-config --firewall` applied in a namespace.

Topologies (addresses exist only inside the test's namespaces):

    direct      cli 198.51.100.20 ---- srv 198.51.100.10
    server-nat  out 203.0.113.50 ---- rtr 203.0.113.1 | 10.0.0.1 ---- srv 10.0.0.2
                (rtr forwards 2121 and 50000-50100 to srv, masquerades srv's own connections)
    client-nat  cli 192.168.1.10 ---- rtr 192.168.1.1 | 198.51.100.1 (MASQUERADE) ---- srv 198.51.100.10

Each scenario asserts the check that must report `error`, the remedy's exact setting for the
identified server, that a healthy setup reports no error, and that the run is bounded (well
under a minute). Where the remedy is a setting or a firewall rule, it is applied and the doctor
run again: the error is gone.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from doctor_peers import (PASSIVE, PeerServer, PeerUnavailable, create_account, make_certificate,
                          start_pure_ftpd, start_vsftpd)
from netns import stop_process
from sysftp import curl_in, sha256_file, start_ferroftp

SERVERS = ["ferroftp", "vsftpd", "pure-ftpd"]
SERVER_NAME = {"ferroftp": "ferroftp", "vsftpd": "vsftpd", "pure-ftpd": "Pure-FTPd"}
DOCTOR_BOUND = 55.0     # "well under a minute", with margin for a loaded machine

DIRECT_CLIENT, DIRECT_SERVER = "198.51.100.20", "198.51.100.10"
PUBLIC, OUTSIDE, ROUTER_LAN, NAT_SERVER = "203.0.113.1", "203.0.113.50", "10.0.0.1", "10.0.0.2"
NAT_CLIENT, CLIENT_ROUTER_LAN, CLIENT_ROUTER_WAN = "192.168.1.10", "192.168.1.1", "198.51.100.1"


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def account():
    """A system user for vsftpd and Pure-FTPd; its home is outside pytest's 0700 temp tree
    (the servers drop privileges to the user before entering it)."""
    base = Path(tempfile.mkdtemp(prefix="ffdoc-homes-"))
    base.chmod(0o755)
    acct = create_account(base)
    try:
        yield acct
    finally:
        acct.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def launch(ferroftp_bin, account, tmp_path):
    """launch(kind, ns, advertise=None) -> PeerServer on 0.0.0.0:2121 with passive ports
    50000-50100, a file to list, and the account's credentials."""
    counter = iter(range(100))

    def go(kind: str, ns, advertise: str | None = None, tls: bool = False,
           require_reuse: bool = False) -> PeerServer:
        """With `tls`: explicit FTPS offered, plain logins still allowed (ferroftp: unless
        `require_reuse`, which keeps its defaults: TLS required for accounts, reuse
        required), session reuse required only with `require_reuse`."""
        workdir = tmp_path / f"{kind}{next(counter)}"
        cert = make_certificate(tmp_path / "cert") if tls else None
        if kind == "ferroftp":
            # Not the start_server fixture: a test may stop a server and start it again
            # fixed; the topology stops every process by PID at teardown.
            config = None
            if tls:
                config = ferroftp_tls_config(cert, require_reuse)
            s = start_ferroftp(ferroftp_bin, ns, workdir, advertise=advertise, config=config)
            (s.root / "hello.txt").write_text("hello from the doctor's tests\n")
            return PeerServer(kind, ns, s.user, s.password, s.port, s.proc, s.log_path)
        try:
            if kind == "vsftpd":
                return start_vsftpd(ns, workdir, account, advertise=advertise, tls=cert,
                                    require_ssl_reuse=require_reuse)
            return start_pure_ftpd(ns, workdir, account, advertise=advertise, tls=cert)
        except PeerUnavailable as e:
            pytest.skip(f"{kind} unavailable: {e}")

    return go


def ferroftp_tls_config(cert, require_reuse: bool) -> str:
    certificate, key = cert
    policy = "" if require_reuse else 'require = "none"\nrequire_data = "none"\nrequire_reuse = false\n'
    return (f'[[server.listeners]]\nlisten = "0.0.0.0:2121"\ntls = "explicit"\n'
            f'[tls]\ncert = "{certificate}"\nkey = "{key}"\n{policy}')


@dataclass
class Report:
    data: dict
    returncode: int
    elapsed: float
    stderr: str

    def finding(self, check: str) -> dict:
        """The worst finding of `check` (the tls check may report two)."""
        found = [f for f in self.data["findings"] if f["check"] == check]
        assert found, f"no {check} finding\n{self.describe()}"
        rank = {"ok": 0, "warning": 1, "error": 2}
        return max(found, key=lambda f: rank[f["severity"]])

    def severity(self, check: str) -> str:
        return self.finding(check)["severity"]

    def errors(self) -> list[str]:
        return [f["check"] for f in self.data["findings"] if f["severity"] == "error"]

    def remedy(self, check: str) -> str:
        return self.finding(check)["remedy"] or ""

    def describe(self) -> str:
        return (f"exit {self.returncode} after {self.elapsed:.1f} s\n"
                f"{json.dumps(self.data, indent=2, ensure_ascii=False)}\nstderr: {self.stderr}")


def doctor(bin_path: str, ns, url: str, *extra: str) -> Report:
    started = time.monotonic()
    p = ns.run([bin_path, "doctor", url, "--json", "--quiet", *extra], check=False, timeout=90)
    elapsed = time.monotonic() - started
    out = p.stdout.decode(errors="replace")
    try:
        data = json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"doctor printed no JSON (exit {p.returncode}): {out!r} "
                             f"{p.stderr.decode(errors='replace')!r}")
    report = Report(data, p.returncode, elapsed, p.stderr.decode(errors="replace"))
    assert elapsed < DOCTOR_BOUND, report.describe()
    assert report.returncode == (1 if report.errors() else 0), report.describe()
    assert data["verdict"] == ("error" if report.errors() else data["verdict"])
    return report


def stop(server: PeerServer):
    if server.proc is not None:
        stop_process(server.proc)


def advertise_setting(kind: str, address: str) -> str:
    return {"ferroftp": f'advertise = "{address}"', "vsftpd": f"pasv_address={address}",
            "pure-ftpd": f"ForcePassiveIP {address}"}[kind]


def range_setting(kind: str) -> list[str]:
    first, last = PASSIVE
    return {"ferroftp": [f'ports = "{first}-{last}"'],
            "vsftpd": [f"pasv_min_port={first}", f"pasv_max_port={last}"],
            "pure-ftpd": [f"PassivePortRange {first} {last}"]}[kind]


@pytest.fixture
def direct(topo):
    cli, srv = topo.ns("cli"), topo.ns("srv")
    topo.link(cli, "eth0", srv, "eth0", f"{DIRECT_CLIENT}/24", f"{DIRECT_SERVER}/24")
    return cli, srv


@pytest.fixture
def server_nat(topo):
    out, rtr, srv = topo.ns("out"), topo.ns("rtr"), topo.ns("srv")
    topo.link(rtr, "lan0", srv, "eth0", f"{ROUTER_LAN}/24", f"{NAT_SERVER}/24")
    topo.link(rtr, "wan0", out, "eth0", f"{PUBLIC}/24", f"{OUTSIDE}/24")
    srv.route("default", ROUTER_LAN)
    rtr.forwarding()
    rtr.iptables("-t", "nat", "-A", "PREROUTING", "-i", "wan0", "-p", "tcp", "--dport", "2121",
                 "-j", "DNAT", "--to-destination", f"{NAT_SERVER}:2121")
    rtr.iptables("-t", "nat", "-A", "PREROUTING", "-i", "wan0", "-p", "tcp", "--dport",
                 f"{PASSIVE[0]}:{PASSIVE[1]}", "-j", "DNAT", "--to-destination", NAT_SERVER)
    rtr.iptables("-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE")
    return out, rtr, srv


@pytest.fixture
def client_nat(topo):
    cli, rtr, srv = topo.ns("cli"), topo.ns("rtr"), topo.ns("srv")
    topo.link(cli, "eth0", rtr, "lan0", f"{NAT_CLIENT}/24", f"{CLIENT_ROUTER_LAN}/24")
    topo.link(rtr, "wan0", srv, "eth0", f"{CLIENT_ROUTER_WAN}/24", f"{DIRECT_SERVER}/24")
    cli.route("default", CLIENT_ROUTER_LAN)
    rtr.forwarding()
    rtr.iptables("-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE")
    return cli, rtr, srv


# --------------------------------------------------------------------------------------------
# a healthy setup


@pytest.mark.parametrize("kind", SERVERS)
def test_healthy_setup_has_no_error(kind, direct, launch, ferroftp_bin):
    cli, srv = direct
    server = launch(kind, srv)
    report = doctor(ferroftp_bin, cli, server.url(DIRECT_SERVER))
    assert report.errors() == [], report.describe()
    assert report.returncode == 0
    assert report.data["server"] == SERVER_NAME[kind], report.describe()
    for check in ("login", "passive-address", "passive-reachability", "epsv", "active"):
        assert report.severity(check) == "ok", report.describe()
    assert report.data["verdict"] in ("ok", "warning")


# --------------------------------------------------------------------------------------------
# server behind NAT without a public address


@pytest.mark.parametrize("kind", SERVERS)
def test_server_behind_nat_without_public_address(kind, server_nat, launch, ferroftp_bin):
    out, rtr, srv = server_nat
    server = launch(kind, srv)
    report = doctor(ferroftp_bin, out, server.url(PUBLIC))
    address = report.finding("passive-address")
    assert address["severity"] == "error", report.describe()
    assert NAT_SERVER in address["summary"] and PUBLIC in address["summary"], report.describe()
    assert any(NAT_SERVER in line for line in address["evidence"]), report.describe()
    assert advertise_setting(kind, PUBLIC) in address["remedy"], report.describe()
    assert report.data["server"] == SERVER_NAME[kind]
    # The ports are forwarded: the data port answers at the public address, and EPSV works.
    assert report.severity("passive-reachability") != "error", report.describe()
    assert report.severity("epsv") != "error", report.describe()
    assert report.data["summary"].startswith("ERROR in passive-address"), report.describe()

    # The remedy, applied: the same server announcing the public address.
    stop(server)
    fixed = launch(kind, srv, advertise=PUBLIC)
    report = doctor(ferroftp_bin, out, fixed.url(PUBLIC))
    assert report.errors() == [], report.describe()
    assert report.severity("passive-address") == "ok"


# --------------------------------------------------------------------------------------------
# the passive range dropped by the server's firewall


@pytest.mark.parametrize("kind", SERVERS)
def test_passive_range_dropped_by_firewall(kind, direct, launch, ferroftp_bin):
    cli, srv = direct
    # --syn: only connections *to* the range are dropped. Without it the rule also drops the
    # SYN-ACK of the server's own active-mode connection whenever its ephemeral source port
    # happens to fall inside 50000-50100 (a real firewall accepts ESTABLISHED first).
    srv.iptables("-A", "INPUT", "-p", "tcp", "--syn", "--dport", f"{PASSIVE[0]}:{PASSIVE[1]}",
                 "-j", "DROP")
    server = launch(kind, srv)
    report = doctor(ferroftp_bin, cli, server.url(DIRECT_SERVER))
    reach = report.finding("passive-reachability")
    assert reach["severity"] == "error", report.describe()
    assert "dropped" in reach["summary"], report.describe()
    assert any("no answer (timed out)" in line for line in reach["evidence"]), report.describe()
    assert report.severity("passive-address") == "ok", report.describe()
    assert report.severity("epsv") == "error", report.describe()
    assert report.severity("active") == "ok", report.describe()
    remedy = reach["remedy"]
    for setting in range_setting(kind):
        assert setting in remedy, report.describe()
    iptables_lines = [line for line in remedy.splitlines() if line.startswith("iptables -I INPUT")]
    assert any(f"--dport {PASSIVE[0]}:{PASSIVE[1]}" in line for line in iptables_lines), remedy
    assert report.data["summary"].startswith("ERROR in passive-reachability")

    # The remedy's iptables commands, run on the server: the error is gone.
    for line in iptables_lines:
        srv.sh(line)
    report = doctor(ferroftp_bin, cli, server.url(DIRECT_SERVER))
    assert report.errors() == [], report.describe()


# --------------------------------------------------------------------------------------------
# the client behind NAT trying active mode


@pytest.mark.parametrize("kind", SERVERS)
def test_client_behind_nat_cannot_use_active_mode(kind, client_nat, launch, ferroftp_bin):
    cli, rtr, srv = client_nat
    server = launch(kind, srv)
    report = doctor(ferroftp_bin, cli, server.url(DIRECT_SERVER))
    active = report.finding("active")
    assert active["severity"] == "error", report.describe()
    assert "NAT" in active["summary"], report.describe()
    assert any(NAT_CLIENT in line for line in active["evidence"]), report.describe()
    assert "passive mode" in active["remedy"], report.describe()
    assert report.errors() == ["active"], report.describe()
    if kind == "ferroftp":
        # ferroftp's refusal names the address it sees: the router's.
        assert CLIENT_ROUTER_WAN in active["summary"], report.describe()


# --------------------------------------------------------------------------------------------
# a NAT helper rewriting PASV in front of a server that does not know its public address


@pytest.mark.parametrize("kind", SERVERS)
def test_nat_helper_rewriting_pasv_is_seen_under_tls(kind, server_nat, launch, ferroftp_bin):
    out, rtr, srv = server_nat
    # The kernel's FTP helper on the router, for the control port (as test_client_nat.py).
    rtr.run(["modprobe", "nf_conntrack_ftp"], check=False)
    if not __import__("os").path.exists("/sys/module/nf_conntrack_ftp"):
        pytest.skip("kernel FTP conntrack helper unavailable")
    rtr.iptables("-t", "raw", "-A", "PREROUTING", "-i", "wan0", "-p", "tcp", "--dport", "2121",
                 "-j", "CT", "--helper", "ftp")
    server = launch(kind, srv, tls=True)
    report = doctor(ferroftp_bin, out, server.url(PUBLIC))
    # In plain text the helper makes PASV right...
    assert report.severity("passive-address") == "ok", report.describe()
    assert report.severity("passive-reachability") == "ok", report.describe()
    # ...under TLS it cannot, and the server's own address shows.
    alg = report.finding("alg-rewrite")
    assert alg["severity"] == "error", report.describe()
    assert NAT_SERVER in alg["summary"] and PUBLIC in alg["summary"], report.describe()
    assert any(f"({NAT_SERVER.replace('.', ',')}," in line for line in alg["evidence"]), \
        report.describe()
    assert advertise_setting(kind, PUBLIC) in alg["remedy"], report.describe()
    assert report.errors() == ["alg-rewrite"], report.describe()

    # The remedy, applied: the server announces its public address itself.
    stop(server)
    fixed = launch(kind, srv, advertise=PUBLIC, tls=True)
    report = doctor(ferroftp_bin, out, fixed.url(PUBLIC))
    assert report.errors() == [], report.describe()
    assert report.severity("alg-rewrite") == "ok", report.describe()


# --------------------------------------------------------------------------------------------
# a server that requires TLS session reuse on data connections


def curl_lists_twice(cli, server: PeerServer, version: str) -> bool:
    """Whether curl, resuming sessions as it does, lists twice over PROT P with only TLS
    `version`."""
    versions = {"1.2": ["--tls-max", "1.2"], "1.3": ["--tlsv1.3"]}[version]
    run = curl_in(cli, "--ssl-reqd", "-k", *versions, "-o", "/dev/null",
                  server.url(DIRECT_SERVER), "-o", "/dev/null", server.url(DIRECT_SERVER))
    return run.returncode == 0


@pytest.mark.parametrize("kind", ["ferroftp", "vsftpd"])    # Pure-FTPd never requires it
def test_server_requiring_tls_session_reuse(kind, direct, launch, ferroftp_bin):
    """The doctor's verdict is what real clients experience: a server that requires reuse and
    serves clients that resume (curl, on TLS 1.2 and 1.3) is a warning, for the clients that
    cannot resume; one that refuses resuming clients is an error."""
    cli, srv = direct
    server = launch(kind, srv, tls=True, require_reuse=True)
    report = doctor(ferroftp_bin, cli, server.url(DIRECT_SERVER))
    # The second tls finding is the data channel's (the first, the certificate's).
    tls = [f for f in report.data["findings"] if f["check"] == "tls"][-1]
    assert "requires TLS session reuse" in tls["summary"], report.describe()
    # We resume, on both TLS versions; the full handshake is what is refused.
    assert any("resumed session" in line for line in tls["evidence"]), report.describe()
    remedy = {"ferroftp": "require_reuse = false", "vsftpd": "require_ssl_reuse=NO"}[kind]
    assert remedy in tls["remedy"], report.describe()
    curl_works = {version: curl_lists_twice(cli, server, version) for version in ("1.2", "1.3")}
    if kind == "ferroftp":
        assert all(curl_works.values()), curl_works
    if all(curl_works.values()):
        assert tls["severity"] == "warning", (curl_works, report.describe())
        assert report.errors() == [], report.describe()
    else:
        assert tls["severity"] == "error", (curl_works, report.describe())
        assert report.errors() == ["tls"], report.describe()
        for version, works in curl_works.items():
            if not works:
                assert f"TLS {version}" in tls["summary"], (curl_works, report.describe())
    if kind == "ferroftp":
        # ferroftp's defaults refuse plain logins for accounts: the doctor went on over TLS.
        assert any("requires TLS" in line for line in report.finding("login")["evidence"])

    stop(server)
    fixed = launch(kind, srv, tls=True, require_reuse=False)
    report = doctor(ferroftp_bin, cli, fixed.url(DIRECT_SERVER))
    assert report.errors() == [], report.describe()


@pytest.mark.parametrize("kind", SERVERS)
def test_healthy_ftps_setup_has_no_error(kind, direct, launch, ferroftp_bin):
    cli, srv = direct
    server = launch(kind, srv, tls=True)
    report = doctor(ferroftp_bin, cli, server.url(DIRECT_SERVER))
    assert report.errors() == [], report.describe()
    tls = [f for f in report.data["findings"] if f["check"] == "tls"]
    # The self-signed test certificate is a warning; PROT P itself is fine.
    assert [f["severity"] for f in tls] == ["warning", "ok"], report.describe()
    assert any("self-signed" in line for line in tls[0]["evidence"]), report.describe()
    explicit = doctor(ferroftp_bin, cli, server.url(DIRECT_SERVER), "--explicit-tls")
    assert explicit.errors() == [], explicit.describe()
    assert "over AUTH TLS" in explicit.finding("login")["summary"], explicit.describe()


def test_implicit_ftps(direct, ferroftp_bin, tmp_path):
    """ftps:// (TLS from the first byte) against an implicit ferroftp listener."""
    cli, srv = direct
    certificate, key = make_certificate(tmp_path / "cert")
    config = (f'[[server.listeners]]\nlisten = "0.0.0.0:990"\ntls = "implicit"\n'
              f'[tls]\ncert = "{certificate}"\nkey = "{key}"\nrequire_reuse = false\n')
    server = start_ferroftp(ferroftp_bin, srv, tmp_path / "implicit", config=config, listen=None)
    url = f"ftps://{server.user}:{server.password}@{DIRECT_SERVER}:990/"
    report = doctor(ferroftp_bin, cli, url)
    assert report.errors() == [], report.describe()
    assert "implicit TLS" in report.finding("login")["summary"], report.describe()
    for check in ("passive-address", "passive-reachability", "epsv", "active"):
        assert report.severity(check) == "ok", report.describe()


# --------------------------------------------------------------------------------------------
# a NAT helper on the client's side rewriting PORT


@pytest.mark.parametrize("kind", SERVERS)
def test_client_side_nat_helper_rewriting_port(kind, client_nat, launch, ferroftp_bin):
    """The router's FTP helper rewrites our PORT to its public address and forwards the
    server's connection: active mode works. ferroftp echoes the address it got, so the
    rewrite shows (a warning: it breaks under TLS); the others do not echo it."""
    cli, rtr, srv = client_nat
    rtr.run(["modprobe", "nf_conntrack_ftp"], check=False)
    if not __import__("os").path.exists("/sys/module/nf_conntrack_ftp"):
        pytest.skip("kernel FTP conntrack helper unavailable")
    rtr.iptables("-t", "raw", "-A", "PREROUTING", "-i", "lan0", "-p", "tcp", "--dport", "2121",
                 "-j", "CT", "--helper", "ftp")
    server = launch(kind, srv)
    report = doctor(ferroftp_bin, cli, server.url(DIRECT_SERVER))
    assert report.errors() == [], report.describe()
    assert report.severity("active") == "ok", report.describe()
    alg = report.finding("alg-rewrite")
    if kind == "ferroftp":
        assert alg["severity"] == "warning", report.describe()
        assert NAT_CLIENT in alg["summary"] and CLIENT_ROUTER_WAN in alg["summary"], \
            report.describe()
    else:
        assert alg["severity"] == "ok", report.describe()


# --------------------------------------------------------------------------------------------
# a black hole: the whole run stays bounded


def test_black_hole_is_reported_quickly(direct, ferroftp_bin):
    cli, srv = direct
    srv.iptables("-A", "INPUT", "-j", "DROP")
    report = doctor(ferroftp_bin, cli, f"ftp://alice:pw@{DIRECT_SERVER}:2121/",
                    "--timeout", "3s")
    assert report.errors() == ["login"], report.describe()
    login = report.finding("login")
    assert "no answer" in login["summary"], report.describe()
    assert report.elapsed < 15, report.describe()


def test_data_black_hole_with_default_timeouts_stays_under_a_minute(direct, launch,
                                                                      ferroftp_bin):
    """Control port open, every data connection in both directions dropped: each check waits
    its bound, and the run still ends well under a minute."""
    cli, srv = direct
    srv.iptables("-A", "INPUT", "-p", "tcp", "!", "--dport", "2121", "-m", "conntrack",
                 "--ctstate", "NEW", "-j", "DROP")
    srv.iptables("-A", "OUTPUT", "-p", "tcp", "--syn", "-j", "DROP")
    server = launch("ferroftp", srv)
    report = doctor(ferroftp_bin, cli, server.url(DIRECT_SERVER))
    assert set(report.errors()) >= {"passive-reachability", "epsv", "active"}, report.describe()


# --------------------------------------------------------------------------------------------
# check-config --firewall: the printed rules, applied, let a transfer through


FIREWALL_CONFIG = """
[[server.listeners]]
listen = "0.0.0.0:2121"
[passive]
ports = "50000-50100"
"""


def base_firewall(srv, kind: str):
    """A default-drop server firewall that lets in only replies to connections the server
    opened itself (as every such firewall does; active mode needs it)."""
    if kind == "iptables":
        srv.iptables("-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
                     "-j", "ACCEPT")
        srv.iptables("-P", "INPUT", "DROP")
    else:
        srv.nft(input="table inet filter {\n chain input {\n"
                      "  type filter hook input priority filter; policy drop;\n"
                      "  ct state established,related accept\n }\n}\n")


def can_connect(ns, host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        s = ns.connect(host, port, timeout=timeout)
    except OSError:
        return False
    s.close()
    return True


@pytest.mark.parametrize("kind", ["iptables", "nftables"])
def test_check_config_firewall_rules_open_exactly_control_and_passive(
        kind, direct, start_server, ferroftp_bin, sample, tmp_path):
    cli, srv = direct
    config = tmp_path / "ferroftp.toml"
    config.write_text(FIREWALL_CONFIG)
    p = srv.run([ferroftp_bin, "check-config", str(config), "--firewall", kind])
    rules = [line for line in p.stdout.decode().splitlines() if line and not line.startswith("#")]
    assert rules, p.stdout
    assert all(line.startswith("nft " if kind == "nftables" else "iptables ") for line in rules)

    base_firewall(srv, kind)
    server = start_server(srv, config=FIREWALL_CONFIG, listen=None, passive_ports=None)
    # A listener on another port: the rules must not open it.
    other = srv.listen("0.0.0.0", 2200)
    try:
        assert not can_connect(cli, DIRECT_SERVER, 2121), "the base firewall lets 2121 in"
        for line in rules:
            srv.sh(line)
        assert not can_connect(cli, DIRECT_SERVER, 2200), "the rules opened more than needed"
    finally:
        other.close()

    for opts, name in ((["--disable-epsv", "--no-ftp-skip-pasv-ip"], "pasv.bin"), ([], "epsv.bin")):
        up = curl_in(cli, *opts, "-T", sample.path, server.url(DIRECT_SERVER, name))
        up.assert_ok()
        assert sha256_file(server.path(name)) == sample.sha256
        dest = tmp_path / f"{name}.down"
        down = curl_in(cli, *opts, "-o", dest, server.url(DIRECT_SERVER, name))
        down.assert_ok()
        assert sha256_file(dest) == sample.sha256

    # And the doctor agrees: nothing is an error through these rules.
    report = doctor(ferroftp_bin, cli, server.url(DIRECT_SERVER))
    assert report.errors() == [], report.describe()


def test_check_config_firewall_refuses_an_invalid_config(direct, ferroftp_bin, tmp_path):
    cli, srv = direct
    config = tmp_path / "bad.toml"
    config.write_text('[passive]\nports = "2000-2200"\n[[server.listeners]]\n'
                      'listen = "0.0.0.0:2121"\n')
    p = srv.run([ferroftp_bin, "check-config", str(config), "--firewall", "ufw"], check=False)
    assert p.returncode == 1
    assert b"ufw allow" not in p.stdout
    assert b"passive.ports" in p.stdout

