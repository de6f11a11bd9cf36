"""ferroftp with its root in an S3 bucket (`[storage] kind = "s3"`), for
test_object_storage.py and test_object_storage_faults.py: the bucket's settings from the
environment (written by scripts/garage.sh), a boto3 view of the bucket, a unique `prefix` per
test, servers started on that prefix, and waits that poll the bucket.

Environment (scripts/object-storage.sh sets all of them):
  FERROFTP_S3_ENDPOINT, FERROFTP_S3_REGION, FERROFTP_S3_BUCKET, FERROFTP_S3_ACCESS_KEY_ID,
  FERROFTP_S3_SECRET_ACCESS_KEY   the bucket; without FERROFTP_S3_ENDPOINT the tests skip
  FERROFTP_REQUIRE_S3=1           ... unless this is set: then they fail

Every test gets its own prefix `t-<hex>/`, so tests never see each other's objects. At
teardown the fixture checks that nothing was written outside the prefix (the bucket's keys
and open multipart uploads outside it are exactly those that were there before the test),
then deletes the prefix's objects and aborts its multipart uploads.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

from ftp_helpers import (SOCKET_TIMEOUT, curl_popen, kill_hard, popen_stderr,
                         server_connected_sockets, write_random)

S3_VARIABLES = ("FERROFTP_S3_ENDPOINT", "FERROFTP_S3_REGION", "FERROFTP_S3_BUCKET",
                "FERROFTP_S3_ACCESS_KEY_ID", "FERROFTP_S3_SECRET_ACCESS_KEY")
# Where the backend keeps an interrupted upload's hidden state, under the prefix.
PARTIAL_DIR = ".ferroftp-partial/"
HIDDEN_MARK = ".ferroftp-partial"
MiB = 1 << 20
BIG = 40 * MiB          # several parts at the default part_size (8 MiB)
POLL_TIMEOUT = 60.0


# --------------------------------------------------------------------------------------------
# the bucket


@dataclass
class S3Settings:
    endpoint: str
    region: str
    bucket: str
    access_key_id: str
    secret_access_key: str

    @property
    def port(self) -> int:
        return urlparse(self.endpoint).port


class Bucket:
    """The bucket seen through boto3, and the prefix of one test."""

    def __init__(self, settings: S3Settings, prefix: str):
        import boto3
        from botocore.config import Config

        self.settings = settings
        self.name = settings.bucket
        self.prefix = prefix
        self.client = boto3.client(
            "s3", endpoint_url=settings.endpoint, region_name=settings.region,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required",
                          connect_timeout=10, read_timeout=60,
                          retries={"max_attempts": 3, "mode": "standard"}))

    def key(self, ftp_path: str) -> str:
        return self.prefix + ftp_path.lstrip("/")

    # whole bucket (prefix="") or under a prefix
    def keys(self, prefix: str | None = None) -> dict[str, int]:
        """key -> size for every object under `prefix` (default: this test's)."""
        prefix = self.prefix if prefix is None else prefix
        out: dict[str, int] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.name, Prefix=prefix):
            for item in page.get("Contents", []):
                out[item["Key"]] = item["Size"]
        return out

    def visible_keys(self) -> dict[str, int]:
        """This test's objects, relative to the prefix, without the hidden state."""
        return {k[len(self.prefix):]: size for k, size in self.keys().items()
                if not k[len(self.prefix):].startswith(PARTIAL_DIR)}

    def hidden_keys(self) -> dict[str, int]:
        return self.keys(self.prefix + PARTIAL_DIR)

    def uploads(self, prefix: str | None = None) -> list[tuple[str, str]]:
        """(key, upload id) of the open multipart uploads under `prefix` (default: this
        test's)."""
        prefix = self.prefix if prefix is None else prefix
        out = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.name, Prefix=prefix):
            for item in page.get("Uploads", []):
                out.append((item["Key"], item["UploadId"]))
        return out

    def uploads_of(self, ftp_path: str) -> list[str]:
        key = self.key(ftp_path)
        return [upload for k, upload in self.uploads() if k == key]

    def parts_bytes(self, ftp_path: str, exclude: frozenset[str] = frozenset()) -> int:
        """Bytes in the completed parts of the open multipart uploads on `ftp_path`'s key
        (but those in `exclude`)."""
        total = 0
        for upload in set(self.uploads_of(ftp_path)) - exclude:
            paginator = self.client.get_paginator("list_parts")
            for page in paginator.paginate(Bucket=self.name, Key=self.key(ftp_path),
                                           UploadId=upload):
                total += sum(p["Size"] for p in page.get("Parts", []))
        return total

    def head(self, ftp_path: str) -> dict | None:
        from botocore.exceptions import ClientError
        try:
            return self.client.head_object(Bucket=self.name, Key=self.key(ftp_path))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def get(self, ftp_path: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=self.key(ftp_path))["Body"].read()

    def sha256(self, ftp_path: str) -> str:
        h = hashlib.sha256()
        body = self.client.get_object(Bucket=self.name, Key=self.key(ftp_path))["Body"]
        for chunk in iter(lambda: body.read(1 << 20), b""):
            h.update(chunk)
        return h.hexdigest()

    def put(self, ftp_path: str, data: bytes):
        self.client.put_object(Bucket=self.name, Key=self.key(ftp_path), Body=data)

    def remove_prefix(self, prefix: str):
        for key, upload in self.uploads(prefix):
            self.client.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload)
        keys = list(self.keys(prefix))
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.name,
                Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})


def s3_settings_from_env() -> S3Settings | None:
    if not os.environ.get("FERROFTP_S3_ENDPOINT"):
        return None
    missing = [v for v in S3_VARIABLES if not os.environ.get(v)]
    assert not missing, f"FERROFTP_S3_ENDPOINT is set but not {missing}"
    return S3Settings(*(os.environ[v] for v in S3_VARIABLES))


def skip_or_fail(reason: str):
    if os.environ.get("FERROFTP_REQUIRE_S3") == "1":
        pytest.fail(f"{reason} (FERROFTP_REQUIRE_S3=1)", pytrace=False)
    pytest.skip(f"{reason}: run scripts/object-storage.sh")


@pytest.fixture(scope="session")
def s3_settings() -> S3Settings:
    settings = s3_settings_from_env()
    if settings is None:
        skip_or_fail("no S3 bucket: FERROFTP_S3_ENDPOINT is not set")
    try:
        import boto3  # noqa: F401
    except ImportError:
        skip_or_fail("boto3 is not installed")
    return settings


@pytest.fixture(scope="session")
def sample_40m(tmp_path_factory) -> tuple[Path, str]:
    """(path, sha256) of 40 MiB of random bytes."""
    path = tmp_path_factory.mktemp("s3-big") / "random-40MiB.bin"
    return path, write_random(path, BIG)


@pytest.fixture
def bucket(s3_settings) -> Bucket:
    """This test's prefix in the bucket; at teardown, nothing written outside it, and the
    prefix emptied."""
    b = Bucket(s3_settings, f"t-{uuid.uuid4().hex[:16]}/")
    outside_keys = {k: v for k, v in b.keys("").items() if not k.startswith(b.prefix)}
    outside_uploads = {u for u in b.uploads("") if not u[0].startswith(b.prefix)}
    yield b
    try:
        now_keys = {k: v for k, v in b.keys("").items() if not k.startswith(b.prefix)}
        now_uploads = {u for u in b.uploads("") if not u[0].startswith(b.prefix)}
        assert now_keys == outside_keys, (
            f"objects written outside the prefix {b.prefix}: "
            f"{sorted(set(now_keys) ^ set(outside_keys))}")
        assert now_uploads == outside_uploads, (
            f"multipart uploads opened outside the prefix {b.prefix}: "
            f"{sorted(now_uploads ^ outside_uploads)}")
    finally:
        b.remove_prefix(b.prefix)


# --------------------------------------------------------------------------------------------
# servers on the bucket


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def storage_toml(b: Bucket, directory: Path, prefix: str | None = None, **extra) -> str:
    """The `[storage]` table for the bucket: the secret in a file (never in argv)."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "s3-secret"
    secret.write_text(b.settings.secret_access_key + "\n")
    secret.chmod(0o600)
    values = {
        "kind": "s3",
        "endpoint": b.settings.endpoint,
        "region": b.settings.region,
        "bucket": b.name,
        "prefix": b.prefix if prefix is None else prefix,
        "access_key_id": b.settings.access_key_id,
        "secret_access_key_file": str(secret),
        **extra,
    }
    return "[storage]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())


@pytest.fixture
def s3_start(bucket, start_server, tmp_path):
    """Factory: s3_start(storage={extra [storage] keys}, **start_server options) -> Server on
    this test's prefix. The bucket fixture is set up first, so its teardown (the checks and
    the cleanup) runs after the servers are stopped."""

    def start(storage: dict | None = None, **kw):
        return start_server(storage=storage_toml(bucket, tmp_path, **(storage or {})), **kw)

    return start


@pytest.fixture
def s3_server(s3_start):
    return s3_start()


# --------------------------------------------------------------------------------------------
# ftplib


def ftp_login(server, tls_context=None, passive: bool = True) -> ftplib.FTP:
    if tls_context is None:
        ftp = ftplib.FTP(timeout=SOCKET_TIMEOUT, encoding="utf-8")
    else:
        ftp = ftplib.FTP_TLS(context=tls_context, timeout=SOCKET_TIMEOUT, encoding="utf-8")
    ftp.connect(server.host, server.port)
    ftp.login(server.user, server.password)
    if tls_context is not None:
        ftp.prot_p()
    ftp.set_pasv(passive)
    return ftp


def stor(ftp: ftplib.FTP, name: str, data: bytes, rest: int | None = None,
         verb: str = "STOR") -> str:
    """Upload `data` in binary mode; returns the final reply."""
    return ftp.storbinary(f"{verb} {name}", io.BytesIO(data), blocksize=1 << 16, rest=rest)


def retr(ftp: ftplib.FTP, name: str, rest: int | None = None) -> bytes:
    chunks: list[bytes] = []
    ftp.retrbinary(f"RETR {name}", chunks.append, rest=rest)
    return b"".join(chunks)


def listings(ftp: ftplib.FTP, path: str = "") -> dict[str, list[str]]:
    """The lines of LIST, LIST -a, NLST and MLSD of `path`."""
    out: dict[str, list[str]] = {"LIST": [], "LIST -a": [], "MLSD": []}
    ftp.retrlines(f"LIST {path}".rstrip(), out["LIST"].append)
    ftp.retrlines(f"LIST -a {path}".rstrip(), out["LIST -a"].append)
    ftp.retrlines(f"MLSD {path}".rstrip(), out["MLSD"].append)
    out["NLST"] = ftp.nlst(*([path] if path else []))
    return out


def mlsd_names(ftp: ftplib.FTP, path: str = "") -> dict[str, dict[str, str]]:
    return {name: facts for name, facts in ftp.mlsd(path) if facts.get("type") not in
            ("cdir", "pdir")}


def assert_no_hidden_state_listed(ftp: ftplib.FTP, path: str = ""):
    for verb, lines in listings(ftp, path).items():
        leaked = [line for line in lines if HIDDEN_MARK in line]
        assert not leaked, f"{verb} {path!r} shows the hidden state: {leaked}"


# --------------------------------------------------------------------------------------------
# waits (bounded polls; a bound reached is a failure, never an assertion on speed)


def wait_until(predicate, what: str, timeout: float = POLL_TIMEOUT, proc=None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"client exited ({proc.returncode}) before {what}\n"
                                 f"{popen_stderr(proc)[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


def wait_for_parts(b: Bucket, ftp_path: str, proc=None, at_least: int = 1,
                   exclude: frozenset[str] = frozenset()) -> int:
    """Until an open multipart upload on `ftp_path` (not one of `exclude`: those of an
    earlier, interrupted upload, which the new one discards when it starts) holds `at_least`
    bytes in completed parts: the upload is really under way in the bucket. Returns those
    bytes."""
    return wait_until(lambda: (n := b.parts_bytes(ftp_path, exclude)) >= at_least and n,
                      f"a completed part of the multipart upload on {ftp_path}", proc=proc)


def wait_for_tail(b: Bucket, ftp_path: str):
    """Until the tail object of an interrupted upload of `ftp_path` is in the bucket
    (`<prefix>.ferroftp-partial/<path>`, written whenever a multipart upload was open).

    The server writes it in the background once the client's connections are gone (SIZE
    and a new upload of the name wait for it; test_object_storage_faults.py resumes at once
    to check that); the tests that look at the bucket after a cut wait for it, as the fs
    tests wait until the server closed the partial file."""
    key = b.prefix + PARTIAL_DIR + ftp_path.lstrip("/")
    wait_until(lambda: key in b.hidden_keys(), f"the tail object {key}")


def wait_ftp_idle(server, s3_port: int, timeout: float = POLL_TIMEOUT):
    """Until the server holds no FTP connection (control or data); its connections to the
    S3 endpoint (a keep-alive pool) do not count."""
    wait_until(lambda: not [c for c in server_connected_sockets(server.pid)
                            if c[1] != s3_port],
               "the server to close the killed client's connections", timeout=timeout)


def cut_curl_upload(server, b: Bucket, src, name: str, limit_rate: str = "4M") -> int:
    """Upload `src` with curl through a rate limit and SIGKILL it once a multipart part of it
    is in the bucket; wait until the server has closed the session and kept the upload for a
    resume. Returns the bytes in completed parts before the cut."""
    earlier = frozenset(b.uploads_of(name))
    p = curl_popen("--ftp-pasv", "--limit-rate", limit_rate, "-T", src, server.url(name))
    try:
        parts = wait_for_parts(b, name, proc=p, exclude=earlier)
    finally:
        kill_hard(p)
    wait_ftp_idle(server, b.settings.port)
    wait_for_tail(b, name)
    return parts
