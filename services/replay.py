"""Replay: rebuild every read model from the log, verify, switch; export and import the log.

    python -m services.replay rebuild [--verify] [--switch]   # into a fresh generation
    python -m services.replay export FILE                      # the whole log as JSON lines
    python -m services.replay import FILE                      # restore a log, then rebuild

A rebuild folds each partition's log into a fresh generation of read models with the same
fold the live projector uses, while the live generation keeps serving. ``--verify`` compares
the two generations key by key wherever both reflect the same log position (a model whose
position differs was simply written by the live projector since, and is skipped);
``--switch`` makes the new generation active in one write: readers and the live projector
move to it. An import restores the log with its entry IDs, then the write-side state
(catalog, member states, idempotency keys) and the read models, all from the log alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from services.profile_projector.projector import Projector
from shared.adapters.catalog import catalog_entry
from shared.adapters.generation import active_generation
from shared.adapters.store import connect, text
from shared.domain import events as ev
from shared.domain.families import family_of
from shared.domain.member import MemberState, Rules, evolve
from shared.keys import (
    ACTIVE_GENERATION,
    PREFIX,
    Partition,
    all_partitions,
    family_images,
    image_key,
)
from shared.settings import Settings
from shared.taste.prior import TastePrior

GENERATIONS = f"{PREFIX}:rm:generations"
CHUNK = 500
NOT_FROM_INGEST = ev.SYSTEM_TYPES


class Progress:
    """One line on stderr, rewritten in place: done/total and rate."""

    def __init__(self, label: str, total: int, quiet: bool = False) -> None:
        self.label, self.total, self.quiet = label, total, quiet
        self.done, self.started, self.shown = 0, time.monotonic(), 0.0

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if not self.quiet and (now - self.shown > 0.5 or self.done >= self.total):
            rate = self.done / max(now - self.started, 1e-9)
            print(f"\r{self.label}: {self.done:,}/{self.total:,} events ({rate:,.0f}/s)",
                  end="", file=sys.stderr, flush=True)  # fmt: skip
            self.shown = now

    def close(self) -> None:
        if not self.quiet:
            print(file=sys.stderr, flush=True)


async def log_length(client: aioredis.Redis, partitions: int) -> int:
    return sum([await client.xlen(p.log) for p in all_partitions(partitions)])


async def new_generation(client: aioredis.Redis) -> int:
    active = await active_generation(client)
    while True:
        generation = int(await client.incr(GENERATIONS))
        if generation > active:
            return generation


async def rebuild(
    client: aioredis.Redis, settings: Settings, generation: int | None = None, quiet: bool = False
) -> int:
    """Fold the whole log into ``generation`` (a fresh one if None) until it reaches the head."""
    generation = generation or await new_generation(client)
    projector = Projector(
        client, settings, TastePrior.uninformed(settings.embed_dim), generation, emit_changes=False
    )
    progress = Progress(
        f"rebuild generation {generation}", await log_length(client, settings.partitions), quiet
    )
    behind = True
    while behind:
        behind = False
        for partition in all_partitions(settings.partitions):
            while entries := await _after(client, partition, projector.position_key(partition)):
                position = text(await client.get(projector.position_key(partition))) or "0-0"
                if not await projector.apply(partition, position, entries):
                    raise RuntimeError(f"generation {generation} was written by someone else")
                progress.add(len(entries))
                behind = True
    progress.close()
    return generation


async def _after(client: aioredis.Redis, partition: Partition, position_key: str) -> list[Any]:
    position = text(await client.get(position_key)) or "0-0"
    entries: Any = await client.xrange(partition.log, min=f"({position}", count=CHUNK)
    return [(text(i), fields) for i, fields in entries]


@dataclass
class Verification:
    compared: int = 0
    skipped: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


async def verify(
    client: aioredis.Redis, settings: Settings, live: int, rebuilt: int
) -> Verification:
    """Compare two generations wherever both models reflect the same log position."""
    result = Verification()
    for partition in all_partitions(settings.partitions):
        a = await _models(client, partition.read_model(live).base)
        b = await _models(client, partition.read_model(rebuilt).base)
        for suffix in sorted(a.keys() | b.keys()):
            if suffix == ":pos":
                continue
            left, right = a.get(suffix), b.get(suffix)
            if left == right:
                result.compared += 1
            elif left is not None and right is not None and _position(left) != _position(right):
                result.skipped += 1
            else:
                result.differences.append(f"{partition.tag}:rm:*{suffix}")
    return result


def _position(raw: bytes) -> str:
    return str(json.loads(raw).get("position", ""))


async def _models(client: aioredis.Redis, base: str) -> dict[str, bytes]:
    keys = sorted([text(k) async for k in client.scan_iter(match=f"{base}:*", count=1000)])
    values: list[Any] = []
    for start in range(0, len(keys), CHUNK):
        values += await client.mget(keys[start : start + CHUNK])
    return {k[len(base) :]: v for k, v in zip(keys, values, strict=True) if v is not None}


async def switch(client: aioredis.Redis, generation: int) -> int:
    """Make ``generation`` the one readers and the live projector use; returns the old one."""
    old = await active_generation(client)
    await client.set(ACTIVE_GENERATION, generation)
    return old


async def drop(client: aioredis.Redis, settings: Settings, generation: int) -> int:
    """Delete one generation's read models (never the active one). Readers cache the active
    generation for about a second: drop a generation only a few seconds after switching away."""
    if generation == await active_generation(client):
        raise ValueError(f"generation {generation} is active; switch away from it first")
    removed = 0
    for partition in all_partitions(settings.partitions):
        base = partition.read_model(generation).base
        keys = [k async for k in client.scan_iter(match=f"{base}:*", count=1000)]
        for start in range(0, len(keys), CHUNK):
            removed += await client.delete(*keys[start : start + CHUNK])
    return removed


async def export_log(
    client: aioredis.Redis, settings: Settings, path: Path, quiet: bool = False
) -> int:
    """Write every partition's log to ``path``, one JSON object a line."""
    progress = Progress(f"export to {path}", await log_length(client, settings.partitions), quiet)
    with path.open("w") as out:
        for partition in all_partitions(settings.partitions):
            position = "-"
            while entries := await _page(client, partition, position):
                for entry_id, fields in entries:
                    event = json.loads(fields[b"event"])
                    line = {"partition": partition.index, "id": text(entry_id), "event": event}
                    out.write(json.dumps(line, sort_keys=True) + "\n")
                position = f"({text(entries[-1][0])}"
                progress.add(len(entries))
    progress.close()
    return progress.done


async def _page(client: aioredis.Redis, partition: Partition, start: str) -> Any:
    return await client.xrange(partition.log, min=start, count=CHUNK)


def read_export(path: Path) -> Iterator[tuple[int, str, ev.LoggedEvent]]:
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                yield row["partition"], row["id"], ev.LoggedEvent.model_validate(row["event"])
            except (ValueError, KeyError) as error:
                raise ValueError(f"{path}:{number}: not an exported log line: {error}") from None


async def import_log(
    client: aioredis.Redis, settings: Settings, path: Path, quiet: bool = False
) -> int:
    """Restore an exported log into empty streams, then the state ingest keeps beside it."""
    for partition in all_partitions(settings.partitions):
        if await client.xlen(partition.log):
            raise ValueError(f"{partition.log} is not empty; import only into an empty server")
    rules = Rules(
        unlock={"v6": settings.unlock_v6, "v7": settings.unlock_v7},
        embed_dim=settings.embed_dim,
        grids_kept=settings.grids_kept,
    )
    states: dict[tuple[int, str], MemberState] = {}
    progress = Progress(f"import {path}", sum(1 for _ in path.open()), quiet)
    async with client.pipeline(transaction=False) as pipe:
        for index, entry_id, event in read_export(path):
            partition = Partition(index)
            if index >= settings.partitions:
                raise ValueError(
                    f"the export has partition {index}; this system has {settings.partitions}"
                )
            pipe.xadd(partition.log, {"event": event.to_bytes()}, id=entry_id)
            payload = event.typed_payload()
            if isinstance(payload, ev.ImageRegistered):
                entry = catalog_entry(payload, event.member_id, event.event_id.split("#", 1)[0])
                pipe.hset(image_key(payload.image_id), mapping=entry)
                family = family_of(payload.model_version)
                if family is not None:
                    pipe.sadd(family_images(family), payload.image_id)
            if event.type not in NOT_FROM_INGEST:
                key = (index, event.member_id)
                states[key] = evolve(states.get(key, MemberState()), payload, rules)
                idempotency = partition.idempotency(event.member_id, event.event_id.split("#")[0])
                digest = event.request_digest or "unknown"
                pipe.set(idempotency, digest, ex=settings.idempotency_ttl_s)
            if len(pipe) >= CHUNK:
                await pipe.execute()
            progress.add(1)
        for (index, member), state in states.items():
            pipe.set(
                Partition(index).member_state(member), f"{state.version} {state.model_dump_json()}"
            )
        await pipe.execute()
    progress.close()
    return progress.done


async def main_async(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    client = connect(settings.redis_url)
    try:
        if args.command == "export":
            count = await export_log(client, settings, Path(args.file))
            print(f"exported {count:,} events to {args.file}")
            return 0
        if args.command == "import":
            count = await import_log(client, settings, Path(args.file))
            print(f"imported {count:,} events from {args.file}")
        live = await active_generation(client)
        generation = await rebuild(client, settings)
        print(f"rebuilt generation {generation} from the log (live: {live})")
        if args.verify or args.command == "import":
            result = await verify(client, settings, live, generation)
            print(f"verify: {result.compared:,} models identical, {result.skipped:,} moved on "
                  f"since (skipped), {len(result.differences):,} different")  # fmt: skip
            for key in result.differences[:20]:
                print(f"  differs: {key}")
            if not result.ok:
                return 1
        if args.switch or args.command == "import":
            old = await switch(client, generation)
            print(f"switched: generation {generation} is active (was {old}; drop it with care)")
        return 0
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="Rebuild read models from the event log.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("rebuild", help="fold the log into a fresh generation")
    build.add_argument("--verify", action="store_true", help="compare with the live generation")
    build.add_argument("--switch", action="store_true", help="make the new generation active")
    commands.add_parser("export", help="write the log to a file").add_argument("file")
    commands.add_parser("import", help="restore a log from a file, then rebuild").add_argument(
        "file"
    )
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
