"""Replay: rebuild every read model from the log, verify, switch; export and import the log.

    python -m tools.replay rebuild [--verify] [--switch]   # into a fresh generation
    python -m tools.replay drop GENERATION                  # delete one generation's models
    python -m tools.replay export FILE                      # the log (and its skips), JSON lines
    python -m tools.replay import FILE                      # restore a log, then rebuild

A rebuild first drops the generations earlier rebuilds left behind (neither active nor being
built), then folds each partition's log into a fresh generation with the fold the live
projector uses, while the live generation keeps serving, until it has caught up with the
live generation's position. It skips exactly the entries the live projector dead-lettered
(``pz:{pN}:skipped:profile-projector``) and reports them; any other entry it cannot fold
stops it with the partition, the entry and the error. ``--verify`` compares the two
generations wherever both reflect the same log position (every model carries the position
it reflects; one that reflects a position the other generation has not reached yet has
simply moved on). ``--switch`` makes the new generation active in one write (readers and the
live projector move to it) and drops the old one after ``PZ_GENERATION_GRACE_S``.

An import restores the log with its entry IDs and skips, then the write-side state (catalog,
member states, idempotency keys, the code-minter's memory of its codes) and the read models,
all from the log alone, and switches to them: services started on the restored server mint
nothing twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.code_minter.minter import memory
from services.profile_projector.projector import Projector
from shared.adapters.catalog import catalog_entry
from shared.adapters.follower import Entry
from shared.adapters.generation import active_generation
from shared.adapters.store import connect, text
from shared.domain import events as ev
from shared.domain.families import family_of
from shared.domain.member import MemberState, Rules, SetChange, evolve, set_changes
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
GENERATION_POSITION = re.compile(r"pz:\{p(\d+)\}:rm:(\d+):pos")
LIVE_PROJECTOR = "profile-projector"  # the live projector's follower role: its skips are repeated
CHUNK = 500
MAX_ROUNDS = 100
NOT_FROM_INGEST = ev.SYSTEM_TYPES

ADVANCE = """
-- Move a generation's position past entries the live projector skipped.
-- KEYS: position; ARGV: expected position, new position
if (redis.call('GET', KEYS[1]) or '0-0') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

Position = tuple[int, int]


def position_of(entry_id: str) -> Position:
    """A log entry ID (``<ms>-<seq>``) as a comparable pair."""
    millis, sequence = entry_id.split("-")
    return int(millis), int(sequence)


def say(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


class Progress:
    """One line on stderr, rewritten in place: done/total and rate."""

    def __init__(self, label: str, total: int, quiet: bool = False, unit: str = "events") -> None:
        self.label, self.total, self.quiet, self.unit = label, total, quiet, unit
        self.done, self.started, self.shown = 0, time.monotonic(), 0.0

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if not self.quiet and (now - self.shown > 0.5 or self.done >= self.total):
            rate = self.done / max(now - self.started, 1e-9)
            print(f"\r{self.label}: {self.done:,}/{self.total:,} {self.unit} ({rate:,.0f}/s)",
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


async def generations(client: aioredis.Redis) -> set[int]:
    """Every generation with read models in some partition (found by their ``:pos`` keys,
    which every commit writes, and which :func:`drop` deletes last)."""
    found = set()
    async for key in client.scan_iter(match=f"{PREFIX}:{{p*}}:rm:*:pos", count=1000):
        matched = GENERATION_POSITION.fullmatch(text(key))
        if matched:
            found.add(int(matched[2]))
    return found


async def stored_position(client: aioredis.Redis, key: str) -> str:
    return text(await client.get(key)) or "0-0"


async def log_head(client: aioredis.Redis, partition: Partition) -> str:
    last: Any = await client.xrevrange(partition.log, count=1)
    return text(last[0][0]) if last else "0-0"


class RebuildError(RuntimeError):
    """A log entry the live projector did not skip cannot be folded: the rebuild stops."""


@dataclass(frozen=True)
class Skip:
    """A log entry a rebuild passed over because the live projector dead-lettered it."""

    partition: Partition
    entry_id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.partition.log} {self.entry_id} ({self.reason})"


@dataclass
class Rebuilt:
    generation: int
    skipped: list[Skip] = field(default_factory=list)
    dropped: dict[int, int] = field(default_factory=dict)


async def skips(client: aioredis.Redis, partition: Partition) -> dict[str, str]:
    """The entries the live projector gave up on in ``partition``: entry ID -> reason."""
    records: Any = await client.hgetall(partition.skipped(LIVE_PROJECTOR))
    return {text(k): str(json.loads(v).get("reason", "")) for k, v in records.items()}


class Rebuild:
    """Folds the log into one generation with the live projector's code and its skips."""

    def __init__(
        self, client: aioredis.Redis, settings: Settings, generation: int, progress: Progress
    ) -> None:
        self.client = client
        self.generation = generation
        self.progress = progress
        prior = TastePrior.uninformed(settings.embed_dim)
        self.projector = Projector(client, settings, prior, generation, emit_changes=False)
        self.advance = client.register_script(ADVANCE)
        self.skipped: list[Skip] = []

    async def catch_up(self, partition: Partition, target: str) -> int:
        """Fold ``partition`` up to the entry ``target``; returns how many entries it passed."""
        skipped = await skips(self.client, partition)  # after the target: its skips are in
        key = self.projector.position_key(partition)
        passed = 0
        while True:
            position = await stored_position(self.client, key)
            if position_of(position) >= position_of(target):
                return passed
            chunk: Any = await self.client.xrange(
                partition.log, min=f"({position}", max=target, count=CHUNK
            )
            if not chunk:
                return passed
            await self._fold(partition, position, [(text(i), f) for i, f in chunk], skipped)
            passed += len(chunk)
            self.progress.add(len(chunk))

    async def _fold(
        self, partition: Partition, position: str, chunk: list[Entry], skipped: dict[str, str]
    ) -> None:
        foldable = [entry for entry in chunk if entry[0] not in skipped]
        self.skipped += [Skip(partition, i, skipped[i]) for i, _ in chunk if i in skipped]
        if foldable:
            await self._apply(partition, position, foldable)
            position = foldable[-1][0]
        if position != chunk[-1][0]:  # the chunk ends with skipped entries
            key = self.projector.position_key(partition)
            if not await self.advance(keys=[key], args=[position, chunk[-1][0]]):
                raise RuntimeError(f"generation {self.generation} was written by someone else")

    async def _apply(self, partition: Partition, position: str, entries: list[Entry]) -> None:
        try:
            committed = await self.projector.apply(partition, position, entries)
        except (RedisError, OSError):
            raise
        except Exception as error:
            if len(entries) == 1:
                raise RebuildError(
                    f"{partition.log} entry {entries[0][0]} cannot be folded "
                    f"({type(error).__name__}: {error}) and the live projector did not skip it; "
                    f"generation {self.generation} stays partial (the next rebuild drops it)"
                ) from error
            for entry in entries:  # find the entry that fails, committing those before it
                await self._apply(partition, position, [entry])
                position = entry[0]
            return
        if not committed:
            raise RuntimeError(f"generation {self.generation} was written by someone else")


async def rebuild_generation(
    client: aioredis.Redis,
    settings: Settings,
    generation: int | None = None,
    quiet: bool = False,
    to_head: bool = False,
) -> Rebuilt:
    """Fold the log into ``generation`` (a fresh one if None) after dropping leftovers.

    Each partition is folded up to the live generation's position (the log's head with
    ``to_head``, for an import), in rounds until a round is short: the live projector goes
    on while the rebuild runs. Never past the live position: after a switch the live
    projector continues from the rebuilt position, and the profile changes of the entries
    in between must have been emitted (by the live projector) for the code-minter.
    """
    active = await active_generation(client)
    generation = generation or await new_generation(client)
    result = Rebuilt(generation)
    for leftover in sorted(await generations(client) - {active, generation}):
        say(f"dropping generation {leftover}, left by an earlier rebuild...", quiet)
        result.dropped[leftover] = await drop(client, settings, leftover)
        say(f"dropped generation {leftover}: {result.dropped[leftover]:,} keys", quiet)
    total = await log_length(client, settings.partitions)
    progress = Progress(f"rebuild generation {generation}", total, quiet)
    rebuild = Rebuild(client, settings, generation, progress)
    for _ in range(MAX_ROUNDS):
        passed = 0
        for partition in all_partitions(settings.partitions):
            target = await (
                log_head(client, partition)
                if to_head
                else stored_position(client, partition.read_model(active).position)
            )
            passed += await rebuild.catch_up(partition, target)
        if passed <= CHUNK:
            break
    progress.close()
    result.skipped = rebuild.skipped
    return result


async def rebuild(
    client: aioredis.Redis, settings: Settings, generation: int | None = None, quiet: bool = False
) -> int:
    """:func:`rebuild_generation`, returning only the generation."""
    return (await rebuild_generation(client, settings, generation, quiet)).generation


SAME, MOVED, DIFFERS = "same", "moved on", "differs"


@dataclass
class Verification:
    compared: int = 0
    skipped: int = 0  # models one generation reflects at a position the other has not reached
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def reflects(raw: bytes) -> Position | None:
    """The log position a model reflects (None for models without one: priors by ID)."""
    position = json.loads(raw).get("position")
    return position_of(position) if isinstance(position, str) else None


def verdict(
    live: bytes | None,
    rebuilt: bytes | None,
    live_at: tuple[Position, Position],
    rebuilt_at: Position,
) -> str:
    """Whether one key agrees in two generations, as far as both reflect the same position.

    ``live_at`` is the live generation's partition position before and after its models
    were read (the live projector goes on meanwhile); ``rebuilt_at`` the rebuilt one's.
    """
    live_from, live_to = live_at
    if live is not None and rebuilt is not None:
        if live == rebuilt:
            return SAME
        left, right = reflects(live), reflects(rebuilt)
        if left is None or right is None:
            return DIFFERS  # models without a position never change once written
        return MOVED if max(left, right) > min(live_from, rebuilt_at) else DIFFERS
    if live is not None:
        position = reflects(live)
        return MOVED if rebuilt_at < (live_to if position is None else position) else DIFFERS
    assert rebuilt is not None
    position = reflects(rebuilt)
    return MOVED if live_from < (rebuilt_at if position is None else position) else DIFFERS


async def verify(
    client: aioredis.Redis, settings: Settings, live: int, rebuilt: int
) -> Verification:
    """Compare two generations wherever both models reflect the same log position."""
    result = Verification()
    for partition in all_partitions(settings.partitions):
        live_keys, rebuilt_keys = partition.read_model(live), partition.read_model(rebuilt)
        rebuilt_at = position_of(await stored_position(client, rebuilt_keys.position))
        live_from = position_of(await stored_position(client, live_keys.position))
        a = await _models(client, live_keys.base)
        live_to = position_of(await stored_position(client, live_keys.position))
        b = await _models(client, rebuilt_keys.base)
        for suffix in sorted((a.keys() | b.keys()) - {":pos"}):
            found = verdict(a.get(suffix), b.get(suffix), (live_from, live_to), rebuilt_at)
            if found == SAME:
                result.compared += 1
            elif found == MOVED:
                result.skipped += 1
            else:
                result.differences.append(f"{partition.tag}:rm:*{suffix}")
    return result


async def behind_head(client: aioredis.Redis, settings: Settings, generation: int) -> list[str]:
    """The partitions whose log ``generation`` has not folded to the end."""
    behind = []
    for partition in all_partitions(settings.partitions):
        at = await stored_position(client, partition.read_model(generation).position)
        head = await log_head(client, partition)
        if position_of(at) < position_of(head):
            behind.append(f"{partition.log} at {at}, head {head}")
    return behind


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
    """Delete one generation's read models (never the active one); returns the keys removed.

    Readers cache the active generation for about a second: drop a generation only a few
    seconds after switching away (:func:`retire`). Positions go last, so that an interrupted
    drop is still found by :func:`generations`."""
    if generation == await active_generation(client):
        raise ValueError(f"generation {generation} is active; switch away from it first")
    removed = 0
    for partition in all_partitions(settings.partitions):
        keys = partition.read_model(generation)
        found = [text(k) async for k in client.scan_iter(match=keys.pattern(), count=1000)]
        found = sorted(found, key=lambda k: k == keys.position)
        for start in range(0, len(found), CHUNK):
            removed += await client.delete(*found[start : start + CHUNK])
    return removed


async def retire(
    client: aioredis.Redis, settings: Settings, generation: int, quiet: bool = False
) -> int:
    """After a switch away from ``generation``: wait out the grace period, then drop it."""
    if generation not in await generations(client):
        return 0
    grace = settings.generation_grace_s
    say(f"dropping generation {generation} in {grace:g} s (readers may still cache it)...", quiet)
    await asyncio.sleep(grace)
    return await drop(client, settings, generation)


async def export_log(
    client: aioredis.Redis, settings: Settings, path: Path, quiet: bool = False
) -> int:
    """Write every partition's log to ``path``, one JSON object a line, then the entries the
    live projector skipped (so that a restored system skips them too)."""
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
            records: Any = await client.hgetall(partition.skipped(LIVE_PROJECTOR))
            for entry_id, record in sorted(records.items()):
                line = {"partition": partition.index, "skipped": text(entry_id),
                        "role": LIVE_PROJECTOR, "why": json.loads(record)}  # fmt: skip
                out.write(json.dumps(line, sort_keys=True) + "\n")
    progress.close()
    return progress.done


async def _page(client: aioredis.Redis, partition: Partition, start: str) -> Any:
    return await client.xrange(partition.log, min=start, count=CHUNK)


@dataclass(frozen=True)
class LogLine:
    partition: int
    entry_id: str
    event: ev.LoggedEvent


@dataclass(frozen=True)
class SkipLine:
    partition: int
    entry_id: str
    role: str
    why: dict[str, Any]


def read_export(path: Path) -> Iterator[LogLine | SkipLine]:
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                if "skipped" in row:
                    yield SkipLine(row["partition"], row["skipped"], row["role"], row["why"])
                else:
                    event = ev.LoggedEvent.model_validate(row["event"])
                    yield LogLine(row["partition"], row["id"], event)
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not an exported log line: {error}") from None


@dataclass
class WriteSide:
    """What ingest and the code-minter keep beside the log, rebuilt from it during an import."""

    rules: Rules
    states: dict[tuple[int, str], MemberState] = field(default_factory=dict)
    mints: dict[tuple[int, str], ev.CodeMinted] = field(default_factory=dict)

    def fold(self, index: int, event: ev.LoggedEvent, payload: ev.Payload) -> list[SetChange]:
        """Fold one event; what it changes in the member's sets beside the state."""
        if isinstance(payload, ev.CodeMinted):
            self.mints[(index, payload.profile_id)] = payload  # the latest code per profile
        if event.type in NOT_FROM_INGEST:
            return []
        key = (index, event.member_id)
        before = self.states.get(key, MemberState())
        self.states[key] = evolve(before, payload, self.rules)
        return set_changes(before, self.states[key])

    def write(self, pipe: Any) -> None:
        for (index, member), state in self.states.items():
            pipe.set(Partition(index).member_state(member), state.to_bytes())
        for (index, profile_id), minted in self.mints.items():
            remembered = memory(minted.code, minted.evidence, minted.vector)
            pipe.set(Partition(index).minter_profile(profile_id), remembered)

    def claim(self, pipe: Any, index: int, minted: ev.CodeMinted) -> None:
        """Every code ever minted stays claimed by its state (a new one never reuses it)."""
        claim = f"{minted.profile_id}|{minted.evidence}"
        pipe.set(Partition(index).minter_code(minted.code), claim)


async def import_log(
    client: aioredis.Redis, settings: Settings, path: Path, quiet: bool = False
) -> int:
    """Restore an exported log into empty streams, then the state ingest and the code-minter
    keep beside it; returns the events restored. Read models are left to a rebuild."""
    for partition in all_partitions(settings.partitions):
        if await client.xlen(partition.log):
            raise ValueError(f"{partition.log} is not empty; import only into an empty server")
    write_side = WriteSide(settings.rules())
    events = 0
    progress = Progress(f"import {path}", sum(1 for _ in path.open()), quiet, unit="lines")
    async with client.pipeline(transaction=False) as pipe:
        for line in read_export(path):
            if line.partition >= settings.partitions:
                raise ValueError(
                    f"the export has partition {line.partition}; "
                    f"this system has {settings.partitions}"
                )
            partition = Partition(line.partition)
            if isinstance(line, SkipLine):
                pipe.hset(partition.skipped(line.role), line.entry_id, json.dumps(line.why))
            else:
                _restore_event(pipe, settings, partition, line, write_side)
                events += 1
            if len(pipe) >= CHUNK:
                await pipe.execute()
            progress.add(1)
        write_side.write(pipe)
        await pipe.execute()
    progress.close()
    return events


def _restore_event(
    pipe: Any, settings: Settings, partition: Partition, line: LogLine, write_side: WriteSide
) -> None:
    event = line.event
    pipe.xadd(partition.log, {"event": event.to_bytes()}, id=line.entry_id)
    payload = event.typed_payload()
    key = event.event_id.split("#", 1)[0]
    if isinstance(payload, ev.ImageRegistered):
        entry = catalog_entry(payload, event.member_id, f"{event.member_id}|{key}")
        pipe.hset(image_key(payload.image_id), mapping=entry)
        family = family_of(payload.model_version)
        if family is not None:
            pipe.sadd(family_images(family), payload.image_id)
    if isinstance(payload, ev.CodeMinted):
        write_side.claim(pipe, partition.index, payload)
    if event.type not in NOT_FROM_INGEST:
        idempotency = partition.idempotency(event.member_id, event.event_id.split("#")[0])
        digest = event.request_digest or "unknown"
        pipe.set(idempotency, digest, ex=settings.idempotency_ttl_s)
    for name, change, value in write_side.fold(partition.index, event, payload):
        member_set = partition.member_set(name, event.member_id)
        (pipe.sadd if change == "add" else pipe.srem)(member_set, value)


async def rebuild_verify_switch(
    client: aioredis.Redis,
    settings: Settings,
    check: bool,
    move: bool,
    to_head: bool = False,
    quiet: bool = False,
) -> int:
    """The ``rebuild`` command (and the end of ``import``); returns the exit status."""
    live = await active_generation(client)
    try:
        rebuilt = await rebuild_generation(client, settings, quiet=quiet, to_head=to_head)
    except RebuildError as error:
        print(f"rebuild stopped: {error}")
        return 1
    generation = rebuilt.generation
    print(f"rebuilt generation {generation} from the log (live: {live})")
    if rebuilt.skipped:
        shown = "; ".join(str(skip) for skip in rebuilt.skipped[:10])
        more = f"; and {len(rebuilt.skipped) - 10} more" if len(rebuilt.skipped) > 10 else ""
        print(f"skipped {len(rebuilt.skipped)} entries the live projector dead-lettered: "
              f"{shown}{more}")  # fmt: skip
    if check and not await _checked(client, settings, live, generation, to_head):
        return 1
    if move:
        await rebuild_generation(client, settings, generation, quiet=True, to_head=to_head)
        old = await switch(client, generation)  # just after a last catch-up: the least lag
        print(f"switched: generation {generation} is active (was {old})")
        removed = await retire(client, settings, old, quiet)
        print(f"dropped generation {old}: {removed:,} keys removed")
    return 0


async def _checked(
    client: aioredis.Redis, settings: Settings, live: int, generation: int, to_head: bool
) -> bool:
    if to_head:
        behind = await behind_head(client, settings, generation)
        print(f"verify: {settings.partitions - len(behind)} of {settings.partitions} "
              "partitions folded to the end of their log")  # fmt: skip
        for line in behind:
            print(f"  behind: {line}")
        return not behind
    result = await verify(client, settings, live, generation)
    print(f"verify: {result.compared:,} models identical, {result.skipped:,} moved on since "
          f"(not comparable), {len(result.differences):,} different")  # fmt: skip
    for key in result.differences[:20]:
        print(f"  differs: {key}")
    return result.ok


async def command(argv: Sequence[str], settings: Settings) -> int:
    """Run one command line (see the module docstring); returns the exit status."""
    args = parser().parse_args(argv)
    client = connect(settings.redis_url)
    try:
        if args.command == "export":
            count = await export_log(client, settings, Path(args.file))
            print(f"exported {count:,} events to {args.file}")
            return 0
        if args.command == "drop":
            removed = await drop(client, settings, args.generation)
            print(f"dropped generation {args.generation}: {removed:,} keys removed")
            return 0
        if args.command == "import":
            count = await import_log(client, settings, Path(args.file))
            print(f"imported {count:,} events from {args.file}")
            return await rebuild_verify_switch(client, settings, True, True, to_head=True)
        return await rebuild_verify_switch(client, settings, args.verify, args.switch)
    finally:
        await client.aclose()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Rebuild read models from the event log.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("rebuild", help="fold the log into a fresh generation")
    build.add_argument("--verify", action="store_true", help="compare with the live generation")
    build.add_argument("--switch", action="store_true", help="make the new generation active")
    removal = commands.add_parser("drop", help="delete one (inactive) generation's read models")
    removal.add_argument("generation", type=int)
    commands.add_parser("export", help="write the log to a file").add_argument("file")
    commands.add_parser("import", help="restore a log from a file, then rebuild").add_argument(
        "file"
    )
    return parser


def main() -> None:
    sys.exit(asyncio.run(command(sys.argv[1:], Settings.from_env())))


if __name__ == "__main__":
    main()
