"""The storage root in an S3 bucket (`[storage] kind = "s3"`, Garage in scripts/object-storage.sh)
driven by curl, lftp and Python's ftplib: exact bytes (sha256, small and 40 MiB, which takes
several multipart parts), several transfers per session, passive and active, explicit FTPS on
TLS 1.2 and 1.3, listings with an empty directory, MKD/RMD, renames of files and directories
(copy + delete), DELE, resumed uploads (curl -C -, lftp put -c), APPE, REST + STOR, REST +
RETR, SIZE/MDTM/MLST, names with spaces, `+`, `%` and non-ASCII, the hidden resume state never
listed, and nothing written outside the configured prefix (checked on the whole bucket by the
`bucket` fixture of s3_helpers.py after every test).

Skipped without FERROFTP_S3_ENDPOINT, failed instead when FERROFTP_REQUIRE_S3=1.
"""

from __future__ import annotations

import ftplib
import io
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import timezone

import pytest

from ftp_helpers import (BIG_PROC_TIMEOUT, MIRROR_TREE, MiB, curl, lftp, make_tree, nlst_names,
                         parse_unix_list, sha256_bytes, sha256_file, tree_hashes)
from s3_helpers import (BIG, HIDDEN_MARK, PARTIAL_DIR,  # noqa: F401 (fixtures)
                        assert_no_hidden_state_listed, bucket, cut_curl_upload, ftp_login,
                        mlsd_names, retr, s3_server, s3_settings, s3_start, sample_40m, stor)

MODES = {
    "passive-epsv": (["--ftp-pasv"], "EPSV", 229),
    "passive-pasv": (["--ftp-pasv", "--disable-epsv"], "PASV", 227),
    "active-eprt": (["-P", "127.0.0.1"], "EPRT", 200),
    "active-port": (["-P", "127.0.0.1", "--disable-eprt"], "PORT", 200),
}


def check_mode(run, mode):
    _, verb, code = MODES[mode]
    ex = run.exchanges(verb)
    assert ex and all(e.codes == [code] for e in ex), f"{verb}\n{run.describe()}"


# --------------------------------------------------------------------------------------------
# curl: bytes through every data-connection mode


@pytest.mark.parametrize("mode", list(MODES))
def test_curl_upload_download_small(s3_server, bucket, samples, tmp_path, mode):
    flags = MODES[mode][0]
    for size in (0, 1, MiB):
        sample = samples[size]
        name = f"f-{size}.bin"
        up = curl(*flags, "-T", sample.path, s3_server.url(name))
        up.assert_ok()
        up.assert_exchange("STOR", (125, 150), 226)
        check_mode(up, mode)
        assert bucket.visible_keys()[name] == size
        assert bucket.sha256(name) == sample.sha256

        out = tmp_path / f"down-{name}"
        down = curl(*flags, "-o", out, s3_server.url(name))
        down.assert_ok()
        down.assert_exchange("RETR", (125, 150), 226)
        got = out.read_bytes() if out.exists() else b""
        assert sha256_bytes(got) == sample.sha256
    assert bucket.hidden_keys() == {} and bucket.uploads() == []


@pytest.mark.time_limit(900)
@pytest.mark.parametrize("mode", ["passive-epsv", "active-port"])
def test_curl_upload_download_40mib(s3_server, bucket, sample_40m, tmp_path, mode):
    path, digest = sample_40m
    flags = MODES[mode][0]
    up = curl(*flags, "-T", path, s3_server.url("big.bin"), timeout=BIG_PROC_TIMEOUT)
    up.assert_ok()
    up.assert_exchange("STOR", (125, 150), 226)
    check_mode(up, mode)
    head = bucket.head("big.bin")
    assert head["ContentLength"] == BIG
    # Several parts: a multipart ETag ends in -N (default part_size 8 MiB: 5 parts).
    assert re.search(r"-\d+\"?$", head["ETag"]), head["ETag"]
    assert bucket.sha256("big.bin") == digest
    assert bucket.hidden_keys() == {} and bucket.uploads() == []

    out = tmp_path / "big.bin"
    down = curl(*flags, "-o", out, s3_server.url("big.bin"), timeout=BIG_PROC_TIMEOUT)
    down.assert_ok()
    down.assert_exchange("RETR", (125, 150), 226)
    assert sha256_file(out) == digest


def test_curl_size_and_resumed_download(s3_server, bucket, samples, tmp_path):
    data = samples[MiB].path.read_bytes()
    bucket.put("file.bin", data)
    out = tmp_path / "file.bin"
    cut = 300_001
    out.write_bytes(data[:cut])
    r = curl("--ftp-pasv", "-C", "-", "-o", out, s3_server.url("file.bin"))
    r.assert_ok()
    assert r.assert_exchange("SIZE", 213).replies[0][1].strip() == str(MiB)
    assert r.assert_exchange("REST", 350).command == f"REST {cut}"
    r.assert_exchange("RETR", (125, 150), 226)
    assert sha256_file(out) == samples[MiB].sha256


# --------------------------------------------------------------------------------------------
# FTPS (explicit) on TLS 1.2 and 1.3


@pytest.fixture(scope="session")
def s3_cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("s3-cert")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "server.key", "-out",
                    "server.pem", "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   cwd=d, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   timeout=60)
    return d / "server.pem", d / "server.key"


def tls_listener_config(cert, key) -> str:
    return f"""
[[server.listeners]]
listen = "127.0.0.1:0"
tls = "explicit"
[tls]
cert = "{cert}"
key = "{key}"
require = "accounts"
require_data = "accounts"
"""


CURL_VERSION = {"1.2": ["--tls-max", "1.2"], "1.3": ["--tlsv1.3"]}


@pytest.mark.time_limit(900)
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_curl_ftps_explicit(s3_start, bucket, s3_cert, samples, sample_40m, tmp_path, version):
    server = s3_start(config=tls_listener_config(*s3_cert))
    path, digest = sample_40m
    for name, src, want in (("tls-1m.bin", samples[MiB].path, samples[MiB].sha256),
                            ("tls-40m.bin", path, digest)):
        # One curl per transfer: curl cannot resume a TLS 1.3 session after an upload
        # (test_ftps.py), and the server requires resumption on data connections.
        up = curl("--ssl-reqd", "-k", *CURL_VERSION[version], "-T", src, server.url(name),
                  timeout=BIG_PROC_TIMEOUT)
        up.assert_ok()
        up.assert_exchange("AUTH", 234)
        up.assert_exchange("PROT", 200)
        up.assert_exchange("STOR", (125, 150), 226)
        used = set(re.findall(r"SSL connection using (TLSv1\.\d)", up.stderr))
        assert used == {f"TLSv{version}"}, (used, up.describe())
        assert bucket.sha256(name) == want
        out = tmp_path / name
        down = curl("--ssl-reqd", "-k", *CURL_VERSION[version], "-o", out, server.url(name),
                    timeout=BIG_PROC_TIMEOUT)
        down.assert_ok()
        down.assert_exchange("RETR", (125, 150), 226)
        assert sha256_file(out) == want


# --------------------------------------------------------------------------------------------
# lftp: several transfers per session


# The mirror tree, and a name whose bytes an S3 key must keep exactly.
OBJECT_TREE = {**MIRROR_TREE, "plus+percent%/ü.bin": 4321}


@pytest.mark.parametrize("passive", [True, False], ids=["passive-on", "passive-off"])
def test_lftp_mirror_up_and_down(s3_server, bucket, tmp_path, passive):
    src = tmp_path / "src"
    files = make_tree(src, OBJECT_TREE)
    want = tree_hashes(src)
    r = lftp(s3_server, [f"mirror -R {src} /tree"], passive=passive)
    r.assert_ok()
    for verb in ("MKD",):
        for e in r.exchanges(verb):
            assert e.codes == [257], f"{e.command}: {e.replies}\n{r.describe()}"
    stors = r.exchanges("STOR")
    assert len(stors) == len(files), r.describe()
    for e in stors:
        assert e.codes[-1] == 226, f"{e.command}: {e.replies}\n{r.describe()}"
    keys = bucket.visible_keys()
    for rel, size in files.items():
        assert keys["tree/" + rel] == size, keys
    assert "tree/emptydir/" in keys, f"no marker for the empty directory: {keys}"

    dst = tmp_path / "dst"
    r = lftp(s3_server, [f"mirror /tree {dst}"], passive=passive)
    r.assert_ok()
    assert tree_hashes(dst) == want


def test_lftp_ls_shows_files_dirs_and_empty_dir(s3_server, bucket):
    bucket.put("dir/a.txt", b"hello")
    bucket.put("dir/big.bin", b"x" * 70000)
    bucket.put("dir/empty", b"")
    bucket.put("dir/sub/inner", b"1")           # a directory only by its common prefix
    r = lftp(s3_server, ["mkdir /dir/made", "cd /dir", "ls"])
    r.assert_ok()
    listing = {k: v for k, v in parse_unix_list(r.stdout.decode()).items()
               if k not in (".", "..")}
    assert listing == {"a.txt": ("-", 5), "big.bin": ("-", 70000), "empty": ("-", 0),
                       "sub": ("d", listing.get("sub", ("d", 0))[1]),
                       "made": ("d", listing.get("made", ("d", 0))[1])}, listing


# --------------------------------------------------------------------------------------------
# ftplib: passive and active, many transfers in one session, file commands


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_ftplib_many_transfers_in_one_session(s3_server, bucket, passive):
    ftp = ftp_login(s3_server, passive=passive)
    blobs = {f"s/{i}.bin": os.urandom(1000 * i + 7) for i in range(6)}
    assert ftp.sendcmd("MKD s")[:3] == "257"
    for name, data in blobs.items():
        assert stor(ftp, name, data)[:3] == "226"
    assert sorted(n.rsplit("/", 1)[-1] for n in ftp.nlst("s")) == \
        sorted(n.split("/")[1] for n in blobs)
    for name, data in blobs.items():
        assert sha256_bytes(retr(ftp, name)) == sha256_bytes(data)
        assert bucket.get(name) == data
    facts = mlsd_names(ftp, "s")
    assert {n: int(f["size"]) for n, f in facts.items()} == \
        {n.split("/")[1]: len(d) for n, d in blobs.items()}
    ftp.quit()


def test_ftplib_size_mdtm_mlst_rest_retr(s3_server, bucket):
    data = os.urandom(3 * MiB + 5)
    bucket.put("d/x.bin", data)
    head = bucket.head("d/x.bin")
    ftp = ftp_login(s3_server)
    ftp.voidcmd("TYPE I")
    assert ftp.sendcmd("SIZE d/x.bin") == f"213 {len(data)}"
    mdtm = ftp.sendcmd("MDTM d/x.bin")
    m = re.fullmatch(r"213 (\d{14})(\.\d+)?", mdtm)
    assert m, mdtm
    assert m.group(1) == head["LastModified"].astimezone(timezone.utc).strftime("%Y%m%d%H%M%S")
    mlst = ftp.sendcmd("MLST d/x.bin")
    assert mlst.startswith("250"), mlst
    fact_line = mlst.splitlines()[1].strip()
    facts = dict(f.split("=", 1) for f in fact_line.split(" ", 1)[0].split(";") if f)
    facts = {k.lower(): v for k, v in facts.items()}
    assert facts["type"] == "file" and int(facts["size"]) == len(data), mlst
    assert facts["modify"][:14] == m.group(1), mlst
    mlst_dir = ftp.sendcmd("MLST d")
    assert "type=dir" in mlst_dir.lower(), mlst_dir
    for offset in (0, 1, 8 * MiB // 3, len(data) - 1, len(data)):
        assert retr(ftp, "d/x.bin", rest=offset) == data[offset:], offset
    with pytest.raises(ftplib.error_perm, match="^554"):
        retr(ftp, "d/x.bin", rest=len(data) + 1)
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.sendcmd("SIZE d/missing.bin")
    with pytest.raises(ftplib.error_perm, match="^550"):
        retr(ftp, "d/missing.bin")
    ftp.quit()


def test_listing_pages_through_more_than_a_thousand_objects(s3_server, bucket):
    """ListObjectsV2 returns at most 1000 keys a page: the listings follow the continuation."""
    names = {f"n{i:05d}.txt" for i in range(1234)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: bucket.put("many/" + n, n.encode()), names))
    bucket.put("many/sub/x", b"x")
    ftp = ftp_login(s3_server)
    assert {n.rsplit("/", 1)[-1] for n in ftp.nlst("many")} == names | {"sub"}
    facts = mlsd_names(ftp, "many")
    assert set(facts) == names | {"sub"}
    assert facts["sub"]["type"] == "dir"
    assert all(int(facts[n]["size"]) == len(n) for n in names)
    lines: list[str] = []
    ftp.retrlines("LIST many", lines.append)
    assert set(parse_unix_list("\n".join(lines))) - {".", ".."} == names | {"sub"}
    ftp.quit()


def test_ascii_mode_converts_line_ends(s3_server, bucket):
    ftp = ftp_login(s3_server)
    text = b"first\r\nsecond\r\n\r\nno end"
    ftp.storlines("STOR t.txt", io.BytesIO(text))
    assert bucket.get("t.txt") == b"first\nsecond\n\nno end\n"
    lines: list[str] = []
    ftp.retrlines("RETR t.txt", lines.append)
    assert lines == ["first", "second", "", "no end"]
    ftp.quit()


@pytest.mark.parametrize("what", ["secret", "bucket"])
def test_wrong_credentials_or_bucket_stop_the_start(s3_start, bucket, tmp_path, what):
    """`serve` makes one request to the store at start: a wrong secret or a missing bucket
    stops it with the reason (docs/object-storage.md), rather than failing every login."""
    if what == "secret":
        storage = {"secret_access_key_file": str(tmp_path / "wrong-secret")}
        (tmp_path / "wrong-secret").write_text("0" * 64 + "\n")
    else:
        storage = {"bucket": "no-such-bucket-" + bucket.prefix.strip("/")}
    with pytest.raises(AssertionError, match=r"server exited \((?!0\))\d+\) before listening"
                       ) as refused:
        s3_start(storage=storage)
    assert "[storage]" in str(refused.value), refused.value


def test_mkd_rmd_dele_and_empty_directory_listed(s3_server, bucket):
    ftp = ftp_login(s3_server)
    assert ftp.mkd("empty") == "/empty"
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.mkd("empty")                                # exists
    assert bucket.head("empty/") is not None, bucket.keys()
    assert bucket.head("empty/")["ContentLength"] == 0
    assert mlsd_names(ftp)["empty"]["type"] == "dir"
    assert ftp.nlst() == ["empty"]
    lines: list[str] = []
    ftp.retrlines("LIST", lines.append)
    assert parse_unix_list("\n".join(lines))["empty"][0] == "d"
    assert mlsd_names(ftp, "empty") == {}
    assert ftp.cwd("empty")[:3] == "250"
    assert ftp.pwd() == "/empty"
    assert stor(ftp, "inside.bin", b"data")[:3] == "226"
    ftp.cwd("/")
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.sendcmd("RMD empty")
    assert bucket.get("empty/inside.bin") == b"data"
    assert ftp.sendcmd("DELE empty/inside.bin")[:3] == "250"
    assert bucket.head("empty/inside.bin") is None
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.sendcmd("DELE empty/inside.bin")
    # The directory stays (its marker) after its last file went.
    assert mlsd_names(ftp)["empty"]["type"] == "dir"
    assert ftp.sendcmd("RMD empty")[:3] == "250"
    assert bucket.visible_keys() == {}
    assert mlsd_names(ftp) == {}
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.cwd("empty")
    ftp.quit()


def test_rename_file_is_copy_and_delete_and_says_so(s3_server, bucket):
    data = os.urandom(6 * MiB + 3)
    bucket.put("old.bin", data)
    bucket.put("keep/other.bin", b"o")
    ftp = ftp_login(s3_server)
    r350 = ftp.sendcmd("RNFR old.bin")
    assert r350[:3] == "350", r350
    r250 = ftp.sendcmd("RNTO keep/new name.bin")
    assert r250[:3] == "250", r250
    assert "atomic" in (r350 + r250).lower(), (r350, r250)
    assert bucket.visible_keys() == {"keep/new name.bin": len(data), "keep/other.bin": 1}
    assert bucket.sha256("keep/new name.bin") == sha256_bytes(data)
    assert retr(ftp, "keep/new name.bin") == data
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.sendcmd("RNFR old.bin")
    ftp.quit()


def test_rename_directory(s3_server, bucket):
    objects = {"src/a": b"a", "src/b c": b"bc", "src/sub/d": b"d" * 1000, "src/sub/e/": b""}
    for k, v in objects.items():
        bucket.put(k, v)
    bucket.put("srcx/not-mine", b"n")            # a sibling sharing the name's start
    ftp = ftp_login(s3_server)
    assert ftp.sendcmd("RNFR src")[:3] == "350"
    assert ftp.sendcmd("RNTO dst")[:3] == "250"
    keys = bucket.visible_keys()
    want = {k.replace("src/", "dst/", 1): len(v) for k, v in objects.items()}
    want["srcx/not-mine"] = 1
    # The source directory's marker, if the backend made one, went with it.
    assert {k: v for k, v in keys.items() if k != "dst/"} == want, keys
    assert bucket.get("dst/sub/d") == b"d" * 1000
    assert sorted(mlsd_names(ftp, "dst")) == ["a", "b c", "sub"]
    assert "src" not in mlsd_names(ftp)
    ftp.quit()


def test_rename_directory_over_the_limit_is_refused(s3_start, bucket):
    server = s3_start(storage={"rename_max_objects": 3})
    objects = {f"big/{i}": bytes([i]) for i in range(4)}
    for k, v in objects.items():
        bucket.put(k, v)
    bucket.put("small/1", b"1")
    bucket.put("small/2", b"2")
    ftp = ftp_login(server)
    assert ftp.sendcmd("RNFR big")[:3] == "350"
    with pytest.raises(ftplib.error_perm, match="^550") as refused:
        ftp.sendcmd("RNTO moved")
    # A clear text: the setting, or why.
    assert re.search(r"rename_max_objects|too many", str(refused.value), re.I), refused.value
    assert bucket.visible_keys() == {**{k: 1 for k in objects}, "small/1": 1, "small/2": 1}
    # At the limit it is done.
    assert ftp.sendcmd("RNFR small")[:3] == "350"
    assert ftp.sendcmd("RNTO moved")[:3] == "250"
    # (The rename may leave a marker moved/ for the new directory.)
    assert {k: v for k, v in bucket.visible_keys().items() if k != "moved/"} == \
        {**{k: 1 for k in objects}, "moved/1": 1, "moved/2": 1}
    ftp.quit()


def test_odd_names_map_to_keys_and_back(s3_server, bucket):
    names = ["a b.txt", "c+d.txt", "50%.txt", "%2F.txt", "ünïcødé ✓.txt", "日本語/ファイル.bin",
             "dir with space/x+y%z.bin", "quote's \"double\".txt"]
    ftp = ftp_login(s3_server)
    for dir_name in ("日本語", "dir with space"):
        assert ftp.sendcmd(f"MKD {dir_name}")[:3] == "257"
    for name in names:
        data = name.encode() * 3
        assert stor(ftp, name, data)[:3] == "226", name
        assert bucket.get(name) == data, f"{name!r} not stored under the key {bucket.key(name)!r}"
    keys = set(bucket.visible_keys())
    # MKD made a marker for each directory.
    assert keys == set(names) | {"日本語/", "dir with space/"}, keys
    top = mlsd_names(ftp)
    assert set(top) == {n.split("/")[0] for n in names}, top
    assert [n.rsplit("/", 1)[-1] for n in ftp.nlst("dir with space")] == ["x+y%z.bin"]
    for name in names:
        assert retr(ftp, name) == name.encode() * 3, name
        assert ftp.sendcmd(f"SIZE {name}") == f"213 {len(name.encode()) * 3}"
    assert ftp.sendcmd("RNFR 50%.txt")[:3] == "350"
    assert ftp.sendcmd("RNTO 100% + ü.txt")[:3] == "250"
    assert bucket.get("100% + ü.txt") == b"50%.txt" * 3
    assert bucket.head("50%.txt") is None
    for bad in ("../escape.txt", "a/../../escape.txt"):
        with pytest.raises(ftplib.error_perm):
            stor(ftp, bad, b"x")
    assert not [k for k in bucket.keys("") if k.endswith("escape.txt")]
    ftp.quit()


# --------------------------------------------------------------------------------------------
# APPE and REST + STOR on committed objects


@pytest.mark.parametrize("old_size,new_size", [(1000, 2000), (12 * MiB + 1, 6 * MiB + 7)],
                         ids=["small", "multipart"])
def test_appe_onto_committed_object(s3_server, bucket, old_size, new_size):
    old, new = os.urandom(old_size), os.urandom(new_size)
    ftp = ftp_login(s3_server)
    assert stor(ftp, "log.bin", old)[:3] == "226"
    assert stor(ftp, "log.bin", new, verb="APPE")[:3] == "226"
    assert bucket.sha256("log.bin") == sha256_bytes(old + new)
    assert ftp.sendcmd("SIZE log.bin") == f"213 {old_size + new_size}"
    assert sha256_bytes(retr(ftp, "log.bin")) == sha256_bytes(old + new)
    # APPE to a name that does not exist creates it.
    assert stor(ftp, "fresh.bin", new, verb="APPE")[:3] == "226"
    assert bucket.sha256("fresh.bin") == sha256_bytes(new)
    assert bucket.hidden_keys() == {} and bucket.uploads() == []
    ftp.quit()


@pytest.mark.parametrize("old_size,rest,new_size",
                         [(10_000, 4_000, 3_000), (10 * MiB + 3, 6 * MiB, 4 * MiB + 1),
                          (6 * MiB, 6 * MiB, 1)],
                         ids=["small", "multipart", "at-end"])
def test_rest_stor_onto_committed_object_keeps_first_bytes(s3_server, bucket, old_size, rest,
                                                           new_size):
    old, new = os.urandom(old_size), os.urandom(new_size)
    ftp = ftp_login(s3_server)
    assert stor(ftp, "r.bin", old)[:3] == "226"
    with pytest.raises(ftplib.error_perm, match="^554"):
        stor(ftp, "r.bin", new, rest=old_size + 1)      # beyond the end (docs/uploads.md)
    assert bucket.sha256("r.bin") == sha256_bytes(old)
    assert stor(ftp, "r.bin", new, rest=rest)[:3] == "226"
    assert bucket.sha256("r.bin") == sha256_bytes(old[:rest] + new)
    assert bucket.hidden_keys() == {} and bucket.uploads() == []
    ftp.quit()


# --------------------------------------------------------------------------------------------
# interrupted uploads, resumed (the fault cases themselves: test_object_storage_faults.py)


@pytest.mark.time_limit(900)
def test_curl_resumes_a_cut_upload(s3_server, bucket, sample_40m):
    path, digest = sample_40m
    parts = cut_curl_upload(s3_server, bucket, path, "resumed.bin")
    assert bucket.head("resumed.bin") is None, "half an upload appeared under the final name"
    listing = curl("--ftp-pasv", "-l", s3_server.url(""))
    listing.assert_ok()
    assert nlst_names(listing.stdout.decode()) == []
    r = curl("--ftp-pasv", "-C", "-", "-T", path, s3_server.url("resumed.bin"),
             timeout=BIG_PROC_TIMEOUT)
    r.assert_ok()
    have = int(r.assert_exchange("SIZE", 213).replies[0][1].strip())
    assert parts <= have < BIG, f"SIZE {have}, {parts} bytes in parts before the cut"
    r.assert_exchange("APPE", (125, 150), 226)
    assert bucket.sha256("resumed.bin") == digest
    assert bucket.visible_keys() == {"resumed.bin": BIG}
    assert bucket.hidden_keys() == {} and bucket.uploads() == []


@pytest.mark.time_limit(900)
def test_lftp_put_c_resumes_a_cut_upload(s3_server, bucket, sample_40m):
    path, digest = sample_40m
    parts = cut_curl_upload(s3_server, bucket, path, "lftp.bin")
    r = lftp(s3_server, [f"put -c {path} -o lftp.bin"], timeout=BIG_PROC_TIMEOUT)
    r.assert_ok()
    have = int(r.assert_exchange("SIZE", 213, index=0).replies[0][1].strip())
    assert parts <= have < BIG, f"SIZE {have}, {parts} bytes in parts before the cut"
    if r.exchanges("REST"):
        assert r.assert_exchange("REST", 350).command == f"REST {have}"
        r.assert_exchange("STOR", (125, 150), 226)
    else:
        r.assert_exchange("APPE", (125, 150), 226)
    assert bucket.sha256("lftp.bin") == digest
    assert bucket.hidden_keys() == {} and bucket.uploads() == []


@pytest.mark.time_limit(900)
def test_hidden_state_is_never_listed(s3_server, bucket, sample_40m):
    path, _ = sample_40m
    bucket.put("visible.txt", b"v")
    bucket.put("sub/inner.txt", b"i")
    cut_curl_upload(s3_server, bucket, path, "sub/cut.bin")
    assert bucket.uploads_of("sub/cut.bin") or bucket.hidden_keys(), \
        f"no resume state kept: {bucket.keys()}"
    ftp = ftp_login(s3_server)
    for where in ("", "/", "sub", "/sub"):
        assert_no_hidden_state_listed(ftp, where)
    assert set(mlsd_names(ftp)) == {"visible.txt", "sub"}
    assert set(mlsd_names(ftp, "sub")) == {"inner.txt"}
    nlst = ftp.nlst()
    assert sorted(n.lstrip("/") for n in nlst) == ["sub", "visible.txt"], nlst
    # The reserved name cannot be entered, read or written.
    for command in (f"CWD /{HIDDEN_MARK}", f"MLST /{PARTIAL_DIR}",
                    f"SIZE /{PARTIAL_DIR}sub/cut.bin"):
        with pytest.raises(ftplib.error_perm, match="^55"):
            ftp.sendcmd(command)
    with pytest.raises(ftplib.error_perm, match="^55"):
        stor(ftp, f"{PARTIAL_DIR}x.bin", b"x")
    with pytest.raises(ftplib.error_perm, match="^55"):
        ftp.sendcmd(f"MKD /{HIDDEN_MARK}")
    ftp.quit()
    assert not [k for k in bucket.hidden_keys() if k.endswith("x.bin")]


def test_nothing_is_written_outside_the_prefix(s3_start, bucket, samples, tmp_path):
    """Every file command and transfer on a prefix two levels deep; then the whole bucket:
    every key and open upload this test made is under the prefix (the bucket fixture checks
    the rest of the bucket is as it was)."""
    deep = bucket.prefix + "tenants/acme/"
    server = s3_start(storage={"prefix": deep})
    ftp = ftp_login(server)
    ftp.sendcmd("MKD d")
    stor(ftp, "d/a.bin", samples[MiB].path.read_bytes())
    stor(ftp, "d/a.bin", b"more", verb="APPE")
    stor(ftp, "b.bin", b"b")
    ftp.sendcmd("RNFR b.bin")
    ftp.sendcmd("RNTO d/c.bin")
    ftp.sendcmd("RNFR d")
    ftp.sendcmd("RNTO e")
    ftp.sendcmd("MKD f")
    ftp.sendcmd("RMD f")
    ftp.sendcmd("DELE e/c.bin")
    assert retr(ftp, "e/a.bin") == samples[MiB].path.read_bytes() + b"more"
    for bad in ("/../x", "../../x"):
        with pytest.raises(ftplib.error_perm):
            stor(ftp, bad, b"x")
    ftp.quit()
    everything = bucket.keys("")
    mine = {k for k in everything if k.startswith(bucket.prefix)}
    # MKD d made the marker d/, renamed with the directory.
    assert mine == {deep + "e/", deep + "e/a.bin"}, mine
    assert not [u for u in bucket.uploads("") if u[0].startswith(bucket.prefix)]
