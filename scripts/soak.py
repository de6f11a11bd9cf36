#!/usr/bin/env python3
"""Soak test: many sessions held against one ferroftp server on loopback for a bounded time,
doing a bounded mix of work, while the server's RSS, open descriptors and passive ports in
use are sampled. Run through scripts/soak.sh, which builds the binary and plots the result.

Phases (each bounded in time):
  1. baseline: the server idle, sampled;
  2. ramp-up: SESSIONS control connections open and log in (a few at a time);
  3. hold for DURATION seconds: every session sends a NOOP now and then (so it stays within
     the idle timeout); WORKERS tasks keep picking a session and doing one item of the mix on
     it (LIST, a small RETR, a small STOR, a 1 MiB RETR, a RETR aborted with ABOR); a few
     other addresses (127.0.0.2-4) keep trying wrong passwords and get banned;
  4. every session QUITs; 5. settle: sampled until RSS and descriptors stop falling;
  phases 2-5 run ROUNDS times (default 2): a leak grows the plateau round after round.

Writes a CSV of samples and a summary (JSON) and exits non-zero when the server died, a
transfer's bytes were wrong, or descriptors or passive ports did not return to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import os
import random
import re
import resource
import time
import urllib.request

SMALL = os.urandom(4096)


class UnexpectedReply(Exception):
    """A reply other than the one expected: recorded as an error, the item ends."""
LARGE_SIZE = 1 << 20


def read_status(pid: int) -> dict:
    rss_kib = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_mib": rss_kib / 1024, "fds": fds}


def passive_ports_in_use(admin: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return -1
    match = re.search(r"^ferroftp_passive_ports_in_use(?:\{[^}]*\})? (\S+)$", text, re.M)
    return int(float(match.group(1))) if match else -1


class Control:
    """One control connection, replies read line by line (multi-line replies folded)."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host, port, source=None):
        reader, writer = await asyncio.open_connection(
            host, port, local_addr=(source, 0) if source else None)
        control = cls(reader, writer)
        await control.reply()
        return control

    async def reply(self) -> str:
        line = (await asyncio.wait_for(self.reader.readline(), 60)).decode("latin-1")
        if not line:
            raise ConnectionError("control connection closed")
        if len(line) > 3 and line[3] == "-":
            code = line[:3]
            while True:
                more = (await asyncio.wait_for(self.reader.readline(), 60)).decode("latin-1")
                if not more:
                    raise ConnectionError("control connection closed")
                if more.startswith(code + " "):
                    return more
        return line

    async def command(self, text: str) -> str:
        self.writer.write(text.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def passive(self):
        reply = await self.command("EPSV")
        port = int(re.search(r"\(\|\|\|(\d+)\|\)", reply).group(1))
        return await asyncio.open_connection("127.0.0.1", port)

    def close(self):
        self.writer.close()


class Soak:
    def __init__(self, args):
        self.args = args
        self.errors: list[str] = []
        self.counts = {"list": 0, "retr": 0, "stor": 0, "large": 0, "abor": 0, "noop": 0,
                       "banned_refusals": 0, "wrong_passwords": 0}
        self.samples: list[dict] = []
        self.phase = "baseline"
        self.round = 0
        self.started = time.monotonic()

    def sample(self):
        row = {"t": round(time.monotonic() - self.started, 1), "round": self.round,
               "phase": self.phase}
        row.update(read_status(self.args.pid))
        row["passive_ports"] = passive_ports_in_use(self.args.admin)
        self.samples.append(row)
        print(f"[{row['t']:7.1f}s] r{row['round']} {row['phase']:9} rss={row['rss_mib']:.1f} MiB "
              f"fds={row['fds']} passive={row['passive_ports']}", flush=True)

    async def sampler(self, stop: asyncio.Event):
        while not stop.is_set():
            self.sample()
            try:
                await asyncio.wait_for(stop.wait(), self.args.sample_every)
            except asyncio.TimeoutError:
                pass

    async def login(self) -> Control:
        control = await Control.open("127.0.0.1", self.args.port)
        await control.command(f"USER {self.args.user}")
        reply = await control.command(f"PASS {self.args.password}")
        if not reply.startswith("230"):
            raise RuntimeError(f"login: {reply.strip()}")
        await control.command("TYPE I")
        return control

    async def one_item(self, control: Control, index: int):
        kind = random.choice(["list", "retr", "stor", "large", "abor"])
        if kind == "list":
            reader, writer = await control.passive()
            await control.command("LIST")
            while await reader.read(65536):
                pass
            writer.close()
            self.expect(await control.reply(), "226", kind)
        elif kind in ("retr", "large"):
            name = "small.bin" if kind == "retr" else "large.bin"
            expected = self.args.small_sha if kind == "retr" else self.args.large_sha
            reader, writer = await control.passive()
            self.expect(await control.command(f"RETR {name}"), "150", kind)
            digest = hashlib.sha256()
            while chunk := await reader.read(65536):
                digest.update(chunk)
            writer.close()
            self.expect(await control.reply(), "226", kind)
            if digest.hexdigest() != expected:
                self.errors.append(f"{kind}: wrong bytes")
        elif kind == "stor":
            reader, writer = await control.passive()
            self.expect(await control.command(f"STOR up-{index}.bin"), "150", kind)
            writer.write(SMALL)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            self.expect(await control.reply(), "226", kind)
        else:
            reader, writer = await control.passive()
            self.expect(await control.command("RETR large.bin"), "150", kind)
            await reader.read(65536)
            control.writer.write(b"\xff\xf4\xff\xf2ABOR\r\nNOOP\r\n")
            await control.writer.drain()
            writer.close()
            # 426 then 226 when the transfer was cut; 226 alone (or 226 twice) when it had
            # already ended: read up to the NOOP's 200 whichever it was.
            replies = []
            while not (replies and replies[-1].startswith("200")):
                replies.append(await control.reply())
                if len(replies) > 4:
                    break
            self.expect(replies[-1], "200", kind)
            if not any(reply.startswith("226") for reply in replies):
                self.errors.append(f"abor: no 226 in {replies}")
        self.counts[kind] += 1

    def expect(self, reply: str, code: str, what: str):
        if not reply.startswith(code):
            self.errors.append(f"{what}: {reply.strip()}")
            raise UnexpectedReply(what)

    async def keepalive(self, sessions: list[Control], busy: set, stop: asyncio.Event):
        """A NOOP on every idle session once per keepalive period, spread out."""
        while not stop.is_set():
            per_step = max(1, len(sessions) // 20)
            for start in range(0, len(sessions), per_step):
                if stop.is_set():
                    return
                for index in range(start, min(start + per_step, len(sessions))):
                    if index in busy:
                        continue
                    busy.add(index)
                    try:
                        self.expect(await sessions[index].command("NOOP"), "200", "noop")
                        self.counts["noop"] += 1
                    except UnexpectedReply:
                        pass
                    except (OSError, asyncio.TimeoutError) as error:
                        self.errors.append(f"noop: {error!r}")
                    finally:
                        busy.discard(index)
                await asyncio.sleep(self.args.keepalive / 20)

    async def worker(self, sessions: list[Control], busy: set, stop: asyncio.Event):
        while not stop.is_set():
            index = random.randrange(len(sessions))
            if index in busy:
                await asyncio.sleep(0)
                continue
            busy.add(index)
            try:
                # Bounded: a data connection that never ends is an error, not a hang.
                await asyncio.wait_for(self.one_item(sessions[index], index), 60)
            except UnexpectedReply:
                pass
            except (OSError, asyncio.TimeoutError, AttributeError) as error:
                self.errors.append(f"work: {error!r}")
            finally:
                busy.discard(index)

    async def brute_force(self, stop: asyncio.Event):
        """Wrong passwords from 127.0.0.2-4, which the defender bans (the soak's own sessions
        come from 127.0.0.1, which the server's config allowlists)."""
        while not stop.is_set():
            for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
                try:
                    control = await Control.open("127.0.0.1", self.args.port, source)
                    await control.command("USER mallory")
                    await control.command("PASS wrong")
                    self.counts["wrong_passwords"] += 1
                    control.close()
                except (OSError, asyncio.TimeoutError, ConnectionError):
                    self.counts["banned_refusals"] += 1
            await asyncio.sleep(0.5)

    async def run(self) -> int:
        stop_sampling = asyncio.Event()
        sampling = asyncio.create_task(self.sampler(stop_sampling))
        await asyncio.sleep(self.args.settle)
        for round_number in range(1, self.args.rounds + 1):
            self.round = round_number
            await self.one_round()
        stop_sampling.set()
        await sampling
        return self.report()

    async def one_round(self):
        """Phases 2-5 once: a leak shows as a higher plateau in each round, while allocator
        retention (freed memory the allocator keeps for reuse) shows as the same plateau."""
        self.phase = "ramp-up"
        sessions: list[Control] = []
        semaphore = asyncio.Semaphore(64)

        async def open_one():
            async with semaphore:
                sessions.append(await self.login())

        await asyncio.wait_for(
            asyncio.gather(*(open_one() for _ in range(self.args.sessions))),
            self.args.ramp_limit)
        print(f"round {self.round}: {len(sessions)} sessions logged in", flush=True)

        self.phase = "hold"
        stop = asyncio.Event()
        busy: set = set()
        tasks = [asyncio.create_task(self.worker(sessions, busy, stop))
                 for _ in range(self.args.workers)]
        tasks.append(asyncio.create_task(self.keepalive(sessions, busy, stop)))
        tasks.append(asyncio.create_task(self.brute_force(stop)))
        await asyncio.sleep(self.args.duration)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)

        self.phase = "quit"
        for control in sessions:
            try:
                control.writer.write(b"QUIT\r\n")
            except OSError:
                pass
        await asyncio.sleep(2)
        for control in sessions:
            control.close()

        self.phase = "settle"
        await asyncio.sleep(self.args.settle)

    def report(self) -> int:
        with open(self.args.csv, "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(self.samples[0]))
            writer.writeheader()
            writer.writerows(self.samples)
        baseline = [s for s in self.samples if s["phase"] == "baseline"]
        rounds = []
        for number in range(1, self.args.rounds + 1):
            hold = [s for s in self.samples if s["round"] == number and s["phase"] == "hold"]
            after = [s for s in self.samples if s["round"] == number and s["phase"] == "settle"]
            rounds.append({
                "round": number,
                "hold_rss_mib": [min(s["rss_mib"] for s in hold), max(s["rss_mib"] for s in hold)]
                if hold else None,
                "hold_fds": [min(s["fds"] for s in hold), max(s["fds"] for s in hold)]
                if hold else None,
                "after": after[-1] if after else None,
            })
        after = [r["after"] for r in rounds if r["after"]]
        summary = {
            "sessions": self.args.sessions,
            "duration_s": self.args.duration,
            "rounds": rounds,
            "counts": self.counts,
            "errors": len(self.errors),
            "first_errors": self.errors[:10],
            "baseline": baseline[-1] if baseline else None,
        }
        with open(self.args.summary, "w") as out:
            json.dump(summary, out, indent=2)
        print(json.dumps(summary, indent=2))
        failed = bool(self.errors)
        if baseline and after:
            if after[-1]["fds"] > baseline[-1]["fds"] + 4:
                print("descriptors did not return to the baseline")
                failed = True
            if after[-1]["passive_ports"] > 0:
                print("passive ports still in use")
                failed = True
        if len(after) > 1 and after[-1]["rss_mib"] > after[0]["rss_mib"] * 1.10 + 4:
            print("RSS after the last round is above the first round's: memory grows per round")
            failed = True
        return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--keepalive", type=float, default=120)
    parser.add_argument("--sample-every", type=float, default=10)
    parser.add_argument("--settle", type=float, default=30)
    parser.add_argument("--ramp-limit", type=float, default=600)
    parser.add_argument("--small-sha", required=True)
    parser.add_argument("--large-sha", required=True)
    parser.add_argument("--csv", required=True)
    parser.add_argument("--summary", required=True)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return asyncio.run(Soak(args).run())


if __name__ == "__main__":
    raise SystemExit(main())
