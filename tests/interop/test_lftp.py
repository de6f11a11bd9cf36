"""lftp against ferroftp: passive on and off, put/get/mirror, `put -c` after an interrupted
upload, `ls` and `cls` parsed back, TLS not attempted (`ftp:ssl-allow no`)."""

from __future__ import annotations

import os
import signal

import pytest

from ftp_helpers import (MiB, file_size, kill_hard, lftp, lftp_popen, make_tree, nlst_names,
                         parse_unix_list, reset_data_connections, sha256_file, tree_hashes,
                         wait_for, wait_server_idle, write_random)

PARTIAL_PREFIX = ".ferroftp-partial."
PASSIVE_VERBS = {"PASV": 227, "EPSV": 229}
ACTIVE_VERBS = {"PORT": 200, "EPRT": 200}


def check_mode(run, server, passive: bool):
    """Every data connection was set up the requested way, and got the right reply."""
    want, other = (PASSIVE_VERBS, ACTIVE_VERBS) if passive else (ACTIVE_VERBS, PASSIVE_VERBS)
    used = [e for e in run.transcript if e.verb in want]
    assert used, f"no {list(want)} sent\n{run.describe()}"
    for e in used:
        assert e.codes == [want[e.verb]], f"{e.command}: {e.replies}\n{run.describe()}"
    assert not [e for e in run.transcript if e.verb in other], run.describe()
    assert "AUTH" not in run.sent_verbs(), "ftp:ssl-allow no, yet lftp sent AUTH"


def transfer_codes_ok(run, verb):
    ex = run.exchanges(verb)
    assert ex, f"{verb} never sent\n{run.describe()}"
    for e in ex:
        assert len(e.codes) == 2 and e.codes[0] in (125, 150) and e.codes[1] == 226, \
            f"{e.command}: {e.replies}\n{run.describe()}"


@pytest.mark.parametrize("passive", [True, False], ids=["passive-on", "passive-off"])
def test_put_get(server, samples, tmp_path, passive):
    for size in (0, 1, MiB):
        s = samples[size]
        name = f"f{size}.bin"
        r = lftp(server, [f"put {s.path} -o {name}"], passive=passive)
        r.assert_ok()
        transfer_codes_ok(r, "STOR")
        check_mode(r, server, passive)
        assert sha256_file(server.path(name)) == s.sha256

        out = tmp_path / f"out-{name}"
        r = lftp(server, [f"get {name} -o {out}"], passive=passive)
        r.assert_ok()
        if size:
            transfer_codes_ok(r, "RETR")
            check_mode(r, server, passive)
        assert sha256_file(out) == s.sha256


@pytest.mark.parametrize("passive", [True, False], ids=["passive-on", "passive-off"])
def test_mirror_up_and_down(server, tmp_path, passive):
    src = tmp_path / "src"
    make_tree(src)
    want = tree_hashes(src)

    r = lftp(server, [f"mirror -R {src} /tree"], passive=passive)
    r.assert_ok()
    check_mode(r, server, passive)
    for e in r.exchanges("MKD"):
        assert e.codes == [257], f"{e.command}: {e.replies}"
    transfer_codes_ok(r, "STOR")
    assert tree_hashes(server.path("tree")) == want

    dst = tmp_path / "dst"
    r = lftp(server, [f"mirror /tree {dst}"], passive=passive)
    r.assert_ok()
    check_mode(r, server, passive)
    assert tree_hashes(dst) == want


def test_mirror_reverse_verbose_applies_modes(server, tmp_path):
    """`mirror -R -v` sets each file's and directory's mode with SITE CHMOD: exit 0, no
    errors, every SITE CHMOD answered 200 and the modes on disk. The modes lie within lftp's
    umask (022, applied by default) and the server's default chmod_mask (0o755)."""
    src = tmp_path / "src"
    modes = {
        "run.sh": 0o755,
        "secret.txt": 0o600,
        "shared.txt": 0o640,
        "frozen.txt": 0o444,
        "sub/inner.bin": 0o700,
        "sub/deeper/readme": 0o644,
    }
    directory_modes = {"sub": 0o750, "sub/deeper": 0o711}
    for rel, mode in modes.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, 100)
        os.chmod(path, mode)
    for rel, mode in directory_modes.items():
        os.chmod(src / rel, mode)
    old_umask = os.umask(0o022)
    try:
        r = lftp(server, [f"mirror -R -v {src} /modes"])
    finally:
        os.umask(old_umask)
    r.assert_ok()
    refused = [e for e in r.transcript if any(code >= 400 for code in e.codes)]
    assert not refused, f"{[(e.command, e.replies) for e in refused]}\n{r.describe()}"
    chmods = r.exchanges("SITE")
    assert chmods, f"lftp sent no SITE CHMOD\n{r.describe()}"
    for e in chmods:
        assert e.codes == [200], f"{e.command}: {e.replies}\n{r.describe()}"
    assert tree_hashes(server.path("modes")) == tree_hashes(src)
    for rel, mode in {**modes, **directory_modes}.items():
        got = os.stat(server.path("modes/" + rel)).st_mode & 0o7777
        assert got == mode, f"{rel}: {oct(got)} on the server, {oct(mode)} sent"


def listing_tree(server):
    d = server.path("dir")
    d.mkdir()
    (d / "a.txt").write_bytes(b"hello")
    (d / "big.bin").write_bytes(b"x" * 70000)
    (d / "empty").write_bytes(b"")
    (d / "sub").mkdir()
    return {"a.txt": ("-", 5), "big.bin": ("-", 70000), "empty": ("-", 0), "sub": ("d", None)}


@pytest.mark.parametrize("passive", [True, False], ids=["passive-on", "passive-off"])
def test_ls_parsed(server, passive):
    expected = listing_tree(server)
    r = lftp(server, ["cd dir", "ls"], passive=passive)
    r.assert_ok()
    r.assert_exchange("CWD", 250)
    transfer_codes_ok(r, "LIST")
    listing = parse_unix_list(r.stdout.decode())
    listing = {k: v for k, v in listing.items() if k not in (".", "..")}
    assert set(listing) == set(expected), listing
    for name, (kind, size) in expected.items():
        assert listing[name][0] == kind, (name, listing[name])
        if size is not None:
            assert listing[name][1] == size, (name, listing[name])


def test_cls_parsed(server):
    expected = listing_tree(server)
    r = lftp(server, ["cls -1 /dir/", "echo ---", "cd /dir", "cls -1"])
    r.assert_ok()
    absolute, relative = r.stdout.decode().split("---\n")
    # lftp's cls marks directories with a trailing slash.
    want = sorted(n + "/" if k == "d" else n for n, (k, _) in expected.items())
    assert sorted(nlst_names(relative)) == want
    assert sorted(nlst_names(absolute)) == ["/dir/" + n for n in want]


def test_ssl_not_attempted(server, samples):
    r = lftp(server, ["ls"])
    r.assert_ok()
    assert "AUTH" not in r.sent_verbs()
    r.assert_exchange("USER", 331)
    r.assert_exchange("PASS", 230)


def test_rm_mkdir_mv(server):
    server.path("old.txt").write_bytes(b"data")
    server.path("gone.txt").write_bytes(b"x")
    r = lftp(server, ["mkdir newdir", "mv old.txt newdir/new.txt", "rm gone.txt",
                      "mkdir tmpdir", "rmdir tmpdir"])
    r.assert_ok()
    r.assert_exchange("MKD", 257, index=0)
    r.assert_exchange("RNFR", 350)
    r.assert_exchange("RNTO", 250)
    r.assert_exchange("DELE", 250)
    r.assert_exchange("RMD", 250)
    assert server.path("newdir/new.txt").read_bytes() == b"data"
    assert not server.path("old.txt").exists()
    assert not server.path("gone.txt").exists()
    assert not server.path("tmpdir").exists()


def test_failed_command_reports_550(server):
    r = lftp(server, ["rm does-not-exist"])
    assert r.returncode != 0, r.describe()
    r.assert_exchange("DELE", 550)


@pytest.mark.parametrize("how", ["sigkill", "reset-then-sigkill"])
@pytest.mark.parametrize("passive", [True, False], ids=["passive-on", "passive-off"])
def test_put_c_resumes_interrupted_upload(server, medium_sample, tmp_path, passive, how):
    s = medium_sample
    name = "resumed.bin"
    partial = server.path(PARTIAL_PREFIX + name)
    p = lftp_popen(server, [f"put {s.path} -o {name}"], passive=passive,
                   extra_settings=["set net:limit-rate 262144"])
    try:
        wait_for(lambda: file_size(partial) >= 512 * 1024,
                 f"the partial file {partial.name} to reach 512 KiB", proc=p)
        if how == "reset-then-sigkill":
            os.kill(p.pid, signal.SIGSTOP)      # no reaction (retry, reconnect) from lftp
            reset_data_connections(p.pid, server.port)
    finally:
        kill_hard(p)
    wait_server_idle(server, watch_dir=server.root)

    assert not server.path(name).exists(), "half an upload appeared under the final name"
    have = file_size(partial)
    assert 0 < have < s.size, f"partial file size {have}"

    r = lftp(server, [f"put -c {s.path} -o {name}"], passive=passive)
    r.assert_ok()
    size = r.assert_exchange("SIZE", 213, index=0)
    assert size.replies[0][1].strip() == str(have), "SIZE must report the partial's size"
    resumed = r.exchanges("REST") or r.exchanges("APPE")
    assert resumed, f"lftp did not resume\n{r.describe()}"
    if r.exchanges("REST"):
        rest = r.assert_exchange("REST", 350)
        assert rest.command == f"REST {have}"
        transfer_codes_ok(r, "STOR")
    else:
        transfer_codes_ok(r, "APPE")
    assert sha256_file(server.path(name)) == s.sha256
    assert [n for n in os.listdir(server.root) if n.startswith(PARTIAL_PREFIX)] == []


@pytest.mark.parametrize("how", ["sigkill", "reset-then-sigkill"])
def test_put_c_after_interruption_keeps_previous_version(server, samples, medium_sample, how):
    old = samples[MiB]
    name = "kept.bin"
    lftp(server, [f"put {old.path} -o {name}"]).assert_ok()
    p = lftp_popen(server, [f"put {medium_sample.path} -o {name}"],
                   extra_settings=["set net:limit-rate 262144"])
    partial = server.path(PARTIAL_PREFIX + name)
    try:
        wait_for(lambda: file_size(partial) >= 512 * 1024,
                 f"the partial file {partial.name} to reach 512 KiB", proc=p)
        if how == "reset-then-sigkill":
            os.kill(p.pid, signal.SIGSTOP)
            reset_data_connections(p.pid, server.port)
    finally:
        kill_hard(p)
    wait_server_idle(server, watch_dir=server.root)
    assert sha256_file(server.path(name)) == old.sha256, \
        "the interrupted upload replaced the previous version"
