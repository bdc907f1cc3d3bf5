"""Where the server's memory goes: every key of the system, measured with ``MEMORY USAGE`` and
sorted into what must stay flat per member, what grows with the log by design, and what a
retention rule bounds. Used by ``make soak`` and ``make bench``."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from shared.adapters.generation import read_generation
from shared.adapters.store import text
from shared.domain.views import MemberView
from shared.keys import all_partitions

CLASSES = [
    ("hot: member state", r"pz:\{p\d+\}:agg:"),
    ("hot: member view", r"pz:\{p\d+\}:rm:{G}:member:"),
    ("profiles", r"pz:\{p\d+\}:rm:{G}:profile:"),
    ("minter memory", r"pz:\{p\d+\}:mint:profile:"),
    ("codes", r"pz:\{p\d+\}:(rm:{G}:code:|mint:code:)"),
    ("member histories (codes, deletions)", r"pz:\{p\d+\}:rm:{G}:(codes|deleted):"),
    ("deleted-profile sets", r"pz:\{p\d+\}:gone:"),
    ("log", r"pz:\{p\d+\}:log$"),
    ("idempotency keys", r"pz:\{p\d+\}:idem:"),
    ("receipts (expire)", r"pz:\{p\d+\}:receipt:"),
    ("inboxes", r"pz:\{p\d+\}:inbox$"),
    ("changes streams", r"pz:\{p\d+\}:changes$"),
    ("dead letters", r"pz:\{p\d+\}:dead$"),
    ("catalog", r"pz:(img:|catalog:)"),
    ("old generations", r"pz:\{p\d+\}:rm:\d+:"),
]


@dataclass
class Census:
    """Bytes and key counts per class, plus the counts that make them comparable."""

    bytes: Counter[str] = field(default_factory=Counter)
    keys: Counter[str] = field(default_factory=Counter)
    used_memory: int = 0
    members: int = 0
    active_profiles: int = 0
    log_events: int = 0
    stream_lengths: dict[str, int] = field(default_factory=dict)

    @property
    def hot_per_member(self) -> float:
        """What ingest and the resolver read per message or prompt of one member."""
        hot = self.bytes["hot: member state"] + self.bytes["hot: member view"]
        return hot / max(self.members, 1)

    @property
    def per_profile(self) -> float:
        return self.bytes["profiles"] / max(self.keys["profiles"], 1)

    @property
    def log_per_event(self) -> float:
        return self.bytes["log"] / max(self.log_events, 1)

    @property
    def idempotency_per_key(self) -> float:
        return self.bytes["idempotency keys"] / max(self.keys["idempotency keys"], 1)

    def figures(self) -> dict[str, Any]:
        return {
            "used_memory": self.used_memory,
            "members": self.members,
            "log_events": self.log_events,
            "hot_bytes_per_member": round(self.hot_per_member, 1),
            "bytes_per_profile": round(self.per_profile, 1),
            "log_bytes_per_event": round(self.log_per_event, 1),
            "bytes_per_idempotency_key": round(self.idempotency_per_key, 1),
            "bytes": dict(self.bytes),
            "keys": dict(self.keys),
            "stream_lengths": self.stream_lengths,
        }


async def census(client: aioredis.Redis, partitions: int) -> Census:
    generation = await read_generation(client)
    patterns = [(name, re.compile(p.replace("{G}", str(generation)))) for name, p in CLASSES]
    result = Census()
    keys = [text(k) async for k in client.scan_iter(match="pz:*", count=2000)]
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        async with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.memory_usage(key, samples=0)
            sizes = await pipe.execute()
        for key, size in zip(chunk, sizes, strict=True):
            name = next((n for n, p in patterns if p.match(key)), "other")
            result.bytes[name] += int(size or 0)
            result.keys[name] += 1
    result.members = result.keys["hot: member state"]
    info: Any = await client.info("memory")
    result.used_memory = int(info["used_memory"])
    for partition in all_partitions(partitions):
        result.log_events += int(await client.xlen(partition.log))
        for stream in (partition.inbox, partition.changes, partition.dead_letters):
            kind = stream.rsplit(":", 1)[1]
            result.stream_lengths[kind] = result.stream_lengths.get(kind, 0) + int(
                await client.xlen(stream)
            )
    result.active_profiles = await _active_profiles(client, partitions, generation)
    return result


async def _active_profiles(client: aioredis.Redis, partitions: int, generation: int) -> int:
    count = 0
    for partition in all_partitions(partitions):
        base = partition.read_model(generation)
        pattern = base.member("*")
        async for key in client.scan_iter(match=pattern, count=2000):
            raw = await client.get(key)
            if raw:
                view = MemberView.from_bytes(raw)
                count += sum(not p.deleted for p in view.profiles.values())
    return count
