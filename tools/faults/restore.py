"""The last fault of ``make faults``: export the log, import it into an empty server, start the
services there, and prove that the restored system answers exactly like the original and
appends nothing by itself (no code minted twice, no event doubled).

What is compared, member by member: the profiles listing (profiles, progress, every code and
its names) and the resolution of a bare ``--p`` and of ``--p`` with each of the member's codes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from shared.adapters.server import EmbeddedServer
from shared.client import Client
from shared.keys import all_partitions
from shared.settings import Settings
from tools.replay import export_log
from tools.supervisor import Stack

from .config import Say

QUIET_S = 4.0


@dataclass
class RestoreReport:
    exported: int = 0
    restored_events: int = 0
    new_events: int = 0
    compared: int = 0
    differences: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.new_events == 0 and not self.differences and self.exported > 0

    def summary(self) -> dict[str, Any]:
        return {
            "restore_exported": self.exported,
            "restore_new_events": self.new_events,
            "restore_compared": self.compared,
            "restore_differences": len(self.differences),
            "restore_s": round(self.seconds, 1),
        }


async def answers(url: str, partitions: int, members: list[str]) -> dict[str, Any]:
    """What the system says about each member: its listing and its resolutions."""
    found: dict[str, Any] = {}
    async with Client(url, partitions) as client:
        for member in members:
            listing = await client.profiles(member, include_deleted=True, timeout=10)
            found[f"{member}: listing"] = listing.model_dump(mode="json")
            prompts = ["a lighthouse --p"] + [f"a lighthouse --p {c.code}" for c in listing.codes]
            for prompt in prompts:
                reply = await client.resolve(member, prompt, timeout=10)
                found[f"{member}: {prompt}"] = reply.model_dump(mode="json")
    return found


async def log_lengths(client: aioredis.Redis, partitions: int) -> int:
    return sum([int(await client.xlen(p.log)) for p in all_partitions(partitions)])


async def restore_cycle(
    settings: Settings,
    original_url: str,
    members: list[str],
    data_dir: Path,
    say: Say,
    acl: bool = True,
) -> RestoreReport:
    """Export from ``original_url`` (its services still running and drained), restore into a
    fresh server, run the services there, compare."""
    started = time.monotonic()
    report = RestoreReport()
    path = data_dir / "exported-log.jsonl"
    client = aioredis.Redis.from_url(original_url)
    try:
        report.exported = await export_log(client, settings, path, quiet=True)
        before = await answers(original_url, settings.partitions, members)
    finally:
        await client.aclose()
    say(f"restore: exported {report.exported:,} events; importing into an empty server...")
    server = EmbeddedServer(data_dir / "restored-valkey").start()
    try:
        await _import(server.url, path)
        restored = aioredis.Redis.from_url(server.url)
        report.restored_events = await log_lengths(restored, settings.partitions)
        stack = await asyncio.to_thread(_start_stack, server.url, data_dir / "restored-run", acl)
        try:
            await asyncio.sleep(QUIET_S)
            after = await answers(server.url, settings.partitions, members)
            report.new_events = await log_lengths(restored, settings.partitions) - report.exported
        finally:
            await asyncio.to_thread(stack.stop)
            await restored.aclose()
    finally:
        server.stop()
    for key in sorted(before.keys() | after.keys()):
        report.compared += 1
        if before.get(key) != after.get(key):
            report.differences.append(f"{key}: {before.get(key)!r} != {after.get(key)!r}"[:400])
    report.seconds = time.monotonic() - started
    say(f"restore: {report.compared} answers compared, {len(report.differences)} differ, "
        f"{report.new_events} new events after {QUIET_S:g}s of the restored services")  # fmt: skip
    return report


async def _import(url: str, path: Path) -> None:
    """``python -m tools.replay import FILE``, as an operator runs it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.replay", "import", str(path),
        env={**os.environ, "REDIS_URL": url, "PZ_GENERATION_GRACE_S": "0"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"import failed ({process.returncode}):\n{out.decode()[-2000:]}")


def _start_stack(url: str, data_dir: Path, acl: bool) -> Stack:
    saved = os.environ.get("REDIS_URL")
    os.environ["REDIS_URL"] = url
    try:
        stack = Stack(data_dir, quiet=True, acl=acl)
        stack.start(120.0)
        return stack
    finally:
        if saved is None:
            os.environ.pop("REDIS_URL", None)
        else:
            os.environ["REDIS_URL"] = saved
