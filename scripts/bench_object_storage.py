"""The measurements of scripts/bench-object-storage.sh (run by it: Garage is up, its
FERROFTP_S3_* variables are set, FERROFTP_BIN is the release binary, OUT a scratch tmpfs).

Every round measures, one after the other on the same Garage: a plain S3 client (curl
--aws-sigv4, one stream), boto3 (multipart, 8 MiB parts, 4 at once: what ferroftp does), and
ferroftp (curl over FTP, passive). Rounds interleave, so a drift of the machine touches all
alike. Bounded: ROUNDS rounds, every command with a timeout.
"""

import concurrent.futures
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig
from boto3.s3.transfer import TransferConfig

OUT = Path(os.environ["OUT"])
BIN = os.environ["FERROFTP_BIN"]
ENDPOINT = os.environ["FERROFTP_S3_ENDPOINT"]
REGION = os.environ["FERROFTP_S3_REGION"]
BUCKET = os.environ["FERROFTP_S3_BUCKET"]
ACCESS = os.environ["FERROFTP_S3_ACCESS_KEY_ID"]
SECRET = os.environ["FERROFTP_S3_SECRET_ACCESS_KEY"]
SIZE_MIB = int(os.environ.get("SIZE_MIB", "1024"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
LIST_OBJECTS = int(os.environ.get("LIST_OBJECTS", "10000"))
IDLE_WAIT = int(os.environ.get("IDLE_WAIT", "70"))
PART = 8 * 1024 * 1024
IN_FLIGHT = 4
TIMEOUT = 600
PASSWORD = "bench-password-1"

s3 = boto3.client(
    "s3", endpoint_url=ENDPOINT, region_name=REGION, aws_access_key_id=ACCESS,
    aws_secret_access_key=SECRET,
    config=BotoConfig(s3={"addressing_style": "path"}, max_pool_connections=32),
)
transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART,
                          max_concurrency=IN_FLIGHT, use_threads=True)
results = []


def record(line, value, unit, **extra):
    entry = {"line": line, "value": value, "unit": unit, **extra}
    results.append(entry)
    print(json.dumps(entry), flush=True)


def timed(argv):
    start = time.perf_counter()
    subprocess.run(argv, check=True, timeout=TIMEOUT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def rate(seconds):
    return SIZE_MIB * 1024 * 1024 / seconds / 1e6


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def start_server():
    work = OUT / "ferroftp"
    work.mkdir()
    (work / "secret").write_text(SECRET + "\n")
    (work / "ftp.toml").write_text(f"""
[[server.listeners]]
listen = "127.0.0.1:0"
[passive]
ports = "52000-52100"
[storage]
kind = "s3"
endpoint = "{ENDPOINT}"
region = "{REGION}"
bucket = "{BUCKET}"
prefix = "ftp/"
access_key_id = "{ACCESS}"
secret_access_key_file = "secret"
[auth]
path = "users.toml"
""")
    subprocess.run([BIN, "user", "add", "bench", "--users", str(work / "users.toml")],
                   input=f"{PASSWORD}\n{PASSWORD}\n", text=True, check=True, timeout=60,
                   stdout=subprocess.DEVNULL)
    log = open(work / "serve.log", "w")
    server = subprocess.Popen([BIN, "serve", "--config", str(work / "ftp.toml")],
                              stdout=subprocess.PIPE, stderr=log, text=True)
    for _ in range(100):
        line = server.stdout.readline()
        if line.startswith("listening on "):
            port = int(line.rsplit(":", 1)[1].split()[0])
            return server, port
    server.kill()
    raise SystemExit("ferroftp did not start: " + (work / "serve.log").read_text())


def cpu_seconds(pid):
    # utime + stime, fields 14 and 15 of /proc/PID/stat (after the command's parentheses).
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_reset(pid):
    # Writing 5 to clear_refs resets VmHWM (the peak resident set) to the current RSS.
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mib(pid, field="VmHWM"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    source = OUT / "object.bin"
    with open(source, "wb") as file:
        for _ in range(SIZE_MIB):
            file.write(os.urandom(1 << 20))
    expected = sha256(source)
    server, port = start_server()
    ftp = f"ftp://bench:{PASSWORD}@127.0.0.1:{port}"
    # Garage wants the payload hash header, which curl signs but does not add by itself.
    sigv4 = ["--aws-sigv4", f"aws:amz:{REGION}:s3", "--user", f"{ACCESS}:{SECRET}",
             "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]
    curl = ["curl", "-sS", "--fail", "--noproxy", "*"]
    downloaded = OUT / "downloaded.bin"
    try:
        record("server RSS at start", peak_rss_mib(server.pid, "VmRSS"), "MiB")
        for round_number in range(1, ROUNDS + 1):
            seconds = timed(curl + sigv4 + ["-T", str(source), f"{ENDPOINT}/{BUCKET}/direct/curl.bin"])
            record("STOR", rate(seconds), "MB/s", client="curl S3 PUT (one stream)", round=round_number)
            seconds = timed(curl + sigv4 + ["-o", "/dev/null", f"{ENDPOINT}/{BUCKET}/direct/curl.bin"])
            record("RETR", rate(seconds), "MB/s", client="curl S3 GET (one stream)", round=round_number)

            start = time.perf_counter()
            s3.upload_file(str(source), BUCKET, "direct/boto3.bin", Config=transfer)
            record("STOR", rate(time.perf_counter() - start), "MB/s",
                   client="boto3 multipart (8 MiB x 4)", round=round_number)
            start = time.perf_counter()
            s3.download_file(BUCKET, "direct/boto3.bin", "/dev/null", Config=transfer)
            record("RETR", rate(time.perf_counter() - start), "MB/s",
                   client="boto3 ranged GETs (8 MiB x 4)", round=round_number)

            peak_rss_reset(server.pid)
            cpu = cpu_seconds(server.pid)
            seconds = timed(curl + ["-T", str(source), f"{ftp}/big.bin"])
            record("STOR", rate(seconds), "MB/s", client="ferroftp (curl FTP, passive)", round=round_number)
            record("server peak RSS during STOR", peak_rss_mib(server.pid), "MiB", round=round_number)
            record("server CPU per GiB stored", (cpu_seconds(server.pid) - cpu) * 1024 / SIZE_MIB, "s",
                   round=round_number)
            peak_rss_reset(server.pid)
            cpu = cpu_seconds(server.pid)
            seconds = timed(curl + ["-o", str(downloaded), f"{ftp}/big.bin"])
            record("RETR", rate(seconds), "MB/s", client="ferroftp (curl FTP, passive)", round=round_number)
            record("server peak RSS during RETR", peak_rss_mib(server.pid), "MiB", round=round_number)
            record("server CPU per GiB retrieved", (cpu_seconds(server.pid) - cpu) * 1024 / SIZE_MIB, "s",
                   round=round_number)
            if sha256(downloaded) != expected:
                raise SystemExit("RETR through ferroftp returned other bytes")
            downloaded.unlink()

        # LIST of many objects: made directly (boto3, in parallel), listed both ways.
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda index: s3.put_object(Bucket=BUCKET, Key=f"ftp/many/f{index:06d}",
                                                       Body=b"x" * 100), range(LIST_OBJECTS)))
        for round_number in range(1, ROUNDS + 1):
            start = time.perf_counter()
            count = 0
            for page in s3.get_paginator("list_objects_v2").paginate(
                    Bucket=BUCKET, Prefix="ftp/many/", Delimiter="/"):
                count += len(page.get("Contents", []))
            record(f"LIST {LIST_OBJECTS}", time.perf_counter() - start, "s",
                   client="boto3 ListObjectsV2 pages", round=round_number, entries=count)
            peak_rss_reset(server.pid)
            start = time.perf_counter()
            listing = subprocess.run(curl + [f"{ftp}/many/"], check=True, timeout=TIMEOUT,
                                     capture_output=True).stdout
            lines = listing.count(b"\n")
            record(f"LIST {LIST_OBJECTS}", time.perf_counter() - start, "s",
                   client="ferroftp (curl LIST)", round=round_number, entries=lines)
            record("server peak RSS during LIST", peak_rss_mib(server.pid), "MiB", round=round_number)
            if lines != LIST_OBJECTS or count != LIST_OBJECTS:
                raise SystemExit(f"listed {lines} and {count} of {LIST_OBJECTS}")
        # The server gives retained memory back once its resident size has stood 64 MiB above
        # its lowest for 5 s, at most once a minute (crates/server/src/memory_release.rs).
        time.sleep(IDLE_WAIT)
        record(f"server RSS idle {IDLE_WAIT} s after the transfers",
               peak_rss_mib(server.pid, "VmRSS"), "MiB")
    finally:
        server.terminate()
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()
    summarize()


def summarize():
    (OUT / "results.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in results))
    lines = {}
    for entry in results:
        key = (entry["line"], entry.get("client", ""), entry["unit"])
        lines.setdefault(key, []).append(entry["value"])
    print()
    print("| line | client | median | runs |")
    print("|---|---|---|---|")
    for (line, client, unit), values in lines.items():
        runs = ", ".join(f"{value:.1f}" if unit != "s" else f"{value:.2f}" for value in values)
        median = statistics.median(values)
        shown = f"{median:.2f} {unit}" if unit == "s" else f"{median:.1f} {unit}"
        print(f"| {line} | {client} | {shown} | {runs} |")


if __name__ == "__main__":
    sys.exit(main())
