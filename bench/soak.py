"""``make soak``: a long run at constant membership; memory per member and per event must not grow.

Starts the system (embedded server and the four services), registers a catalog, then lets a
fixed set of members pick from grids, like and unlike, rank pairs, toggle, switch versions,
and create, rename and delete profiles over and over, with a share of invalid messages and
exact re-sends. After a warm-up it drains and takes a census of every key (``MEMORY USAGE``),
then publishes the rest, drains, and takes another. It prints both beside each other:
bytes of the hot state per member (what every message and prompt reads), per profile, per
log event and per idempotency key, and the lengths of the streams a retention rule bounds.
Exits 1 if any of them grew by more than ``--tolerance``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from bench.memory import Census, census
from shared.adapters.generation import read_generation
from shared.adapters.store import text
from shared.client import Client, inbound
from shared.keys import all_partitions, partition_for
from shared.settings import Settings
from tools.supervisor import Stack

IMAGES_V7, IMAGES_V6 = 400, 100
CHURNERS = 8


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Member:
    """One simulated member: enough memory of its own to send valid messages."""

    def __init__(self, name: str, rng: random.Random) -> None:
        self.name, self.rng = name, rng
        self.grids = 0
        self.liked: set[str] = set()
        self.profiles: list[str] = []

    def next_messages(self) -> list[dict[str, Any]]:
        roll = self.rng.random()
        if roll < 0.65 or self.grids < 15:
            return self._grid()
        if roll < 0.75:
            return [self._like()]
        if roll < 0.85:
            a, b = self.rng.sample(range(IMAGES_V7), 2)
            return [inbound("PairRanked", self.name, {"winner_image_id": f"s7-{a}", "loser_image_id": f"s7-{b}"})]  # fmt: skip
        if roll < 0.90:
            return [
                inbound("PersonalizationToggled", self.name, {"enabled": self.rng.random() < 0.5})
            ]
        if roll < 0.93:
            return [
                inbound("DefaultVersionSet", self.name, {"version": self.rng.choice(["7", "8"])})
            ]
        return [inbound("ImageLiked", self.name, {"image_id": "no-such-image"})]

    def _grid(self) -> list[dict[str, Any]]:
        self.grids += 1
        grid_id = f"{self.name}-g{self.grids}"
        shown = [f"s7-{i}" for i in self.rng.sample(range(IMAGES_V7), 9)]
        messages = [inbound("GridServed", self.name, {"grid_id": grid_id, "image_ids": shown})]
        messages += [
            inbound("ImagePicked", self.name, {"grid_id": grid_id, "image_id": image})
            for image in self.rng.sample(shown, 3)
        ]
        return messages

    def _like(self) -> dict[str, Any]:
        image = f"s6-{self.rng.randrange(IMAGES_V6)}"
        kind = "ImageUnliked" if image in self.liked else "ImageLiked"
        self.liked ^= {image}
        return inbound(kind, self.name, {"image_id": image})


async def publish_catalog(client: Client, settings: Settings) -> None:
    rng = np.random.default_rng(3)
    messages = [
        inbound("ImageRegistered", "artist", {
            "image_id": f"s{v}-{i}", "model_version": v,
            "embedding": rng.normal(size=settings.embed_dim).tolist()})
        for v, count in (("7", IMAGES_V7), ("6.1", IMAGES_V6)) for i in range(count)
    ]  # fmt: skip
    await client.publish_many(messages)
    await client.receipt(messages[-1], timeout=60)


async def churn(client: Client, members: list[Member], stop: asyncio.Event) -> int:
    """Create, rename and delete profiles of unlocked members, again and again (a few
    members at a time, each in its own loop, so the cycles keep pace with the load)."""
    loops = [_churn(client, members[i::CHURNERS], stop) for i in range(CHURNERS)]
    return sum(await asyncio.gather(*loops))


async def _churn(client: Client, members: list[Member], stop: asyncio.Event) -> int:
    cycles, turn = 0, 0
    while not stop.is_set():
        member, turn = members[turn % len(members)], turn + 1
        if member.grids < 15:
            await asyncio.sleep(0.05)
            continue
        created = await client.publish_and_wait(
            inbound("ProfileCreated", member.name, {"name": "tmp"}), 60
        )
        if created.status != "accepted":
            continue
        entry = created.entry_ids[-1]
        log = partition_for(member.name, client.partitions).log
        found: Any = await client.redis.xrange(log, entry, entry)
        profile_id = json.loads(found[0][1][b"event"])["payload"]["profile_id"]
        rename = {"profile_id": profile_id, "name": "renamed"}
        await client.publish(inbound("ProfileRenamed", member.name, rename))
        await client.publish(inbound("ProfileDeleted", member.name, {"profile_id": profile_id}))
        cycles += 1
    return cycles


async def drain(client: aioredis.Redis, settings: Settings) -> None:
    """Until every inbox is consumed and the projector and the minter reached their ends."""
    while True:
        generation = await read_generation(client)
        done = True
        for partition in all_partitions(settings.partitions):
            pending: Any = await client.xpending(partition.inbox, "ingest")
            groups: Any = await client.xinfo_groups(partition.inbox)
            last: Any = await client.xrevrange(partition.log, count=1)
            position = text(await client.get(partition.read_model(generation).position))
            changes: Any = await client.xrevrange(partition.changes, count=1)
            minted = text(await client.get(partition.minter_position))
            done &= not pending["pending"] and not any(g["lag"] for g in groups)
            done &= not last or text(last[0][0]) == position
            done &= not changes or text(changes[0][0]) <= minted
        if done:
            return
        await asyncio.sleep(0.2)


async def publish(
    client: Client, members: list[Member], count: int, rng: random.Random, label: str
) -> int:
    sent, started, shown = 0, time.monotonic(), 0.0
    recent: list[dict[str, Any]] = []
    while sent < count:
        batch: list[dict[str, Any]] = []
        while len(batch) < 1000:
            if recent and rng.random() < 0.02:
                batch.append(rng.choice(recent))
                continue
            new = rng.choice(members).next_messages()
            batch += new
            recent = (recent + new)[-500:]
        await client.publish_many(batch)
        sent += len(batch)
        while await _backlog(client) > 5000:
            await asyncio.sleep(0.05)
        if time.monotonic() - shown > 2:
            rate = sent / (time.monotonic() - started)
            say(f"  {label}: {sent:,}/{count:,} messages ({rate:,.0f}/s)")
            shown = time.monotonic()
    return sent


async def _backlog(client: Client) -> int:
    total = 0
    for partition in all_partitions(client.partitions):
        groups: Any = await client.redis.xinfo_groups(partition.inbox)
        total += sum(int(g["lag"] or 0) for g in groups)
    return total


def table(start: Census, end: Census) -> tuple[str, dict[str, float]]:
    rows = [
        ("hot state per member (B)", start.hot_per_member, end.hot_per_member),
        ("per profile read model (B)", start.per_profile, end.per_profile),
        ("log per event (B)", start.log_per_event, end.log_per_event),
        ("per idempotency key (B)", start.idempotency_per_key, end.idempotency_per_key),
    ]
    lines = ["| measure | after warm-up | at the end | ratio |", "|---|---|---|---|"]
    ratios = {}
    for name, a, b in rows:
        ratios[name] = b / a if a else 1.0
        lines.append(f"| {name} | {a:,.0f} | {b:,.0f} | {ratios[name]:.3f} |")
    for kind in ("inbox", "changes", "dead"):
        a, b = start.stream_lengths.get(kind, 0), end.stream_lengths.get(kind, 0)
        lines.append(f"| {kind} entries kept (all partitions) | {a:,} | {b:,} | |")
    lines.append(f"| members / log events | {start.members:,} / {start.log_events:,} | "
                 f"{end.members:,} / {end.log_events:,} | |")  # fmt: skip
    lines.append(f"| server used_memory (MiB) | {start.used_memory / 2**20:,.1f} | "
                 f"{end.used_memory / 2**20:,.1f} | |")  # fmt: skip
    return "\n".join(lines), ratios


async def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("PZ_PARTITIONS", "4")
    settings = Settings.from_env()
    rng = random.Random(args.seed)
    members = [Member(f"soak{i}", random.Random(args.seed * 1000 + i)) for i in range(args.members)]
    stack = Stack(args.data or Path(tempfile.mkdtemp(prefix="pz-soak-")), quiet=True)
    say("starting the server and the four services...")
    stack.start()
    try:
        async with Client(stack.url, settings.partitions) as client:
            await publish_catalog(client, settings)
            stop = asyncio.Event()
            churner = asyncio.create_task(churn(client, members, stop))
            warm = int(args.messages * args.warmup)
            await publish(client, members, warm, rng, "warm-up")
            stop.set()
            cycles = await churner
            await drain(client.redis, settings)
            say("census after the warm-up...")
            start = await census(client.redis, settings.partitions)
            stop = asyncio.Event()
            churner = asyncio.create_task(churn(client, members, stop))
            await publish(client, members, args.messages - warm, rng, "soak")
            stop.set()
            cycles += await churner
            await drain(client.redis, settings)
            say("census at the end...")
            end = await census(client.redis, settings.partitions)
    finally:
        stack.stop()
    text_, ratios = table(start, end)
    print(text_)
    bounded = end.stream_lengths.get("inbox", 0) <= 200 * settings.partitions
    flat = all(r <= 1 + args.tolerance for r in ratios.values())
    print(json.dumps({
        "messages": args.messages, "members": args.members, "profile_cycles": cycles,
        "ratios": {k: round(v, 3) for k, v in ratios.items()}, "flat": flat,
        "inbox_bounded": bounded, "start": start.figures(), "end": end.figures(),
    }))  # fmt: skip
    return 0 if flat and bounded else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument(
        "--warmup", type=float, default=0.4,
        help="share before the first census (long enough to fill every bounded structure: "
        "PZ_GRIDS_KEPT grids per member, likes of the whole V6 catalog)",
    )  # fmt: skip
    parser.add_argument("--tolerance", type=float, default=0.10, help="growth allowed")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--data", type=Path, default=None)
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
