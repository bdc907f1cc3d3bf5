"""The checks of a fault run, once the load and the faults are over: wait until everything
is consumed (:func:`drain`), then compare what is in the log, the dead letters, the read
models and ingest's member states with what was sent (:func:`check`): nothing lost, nothing
doubled, nothing reordered, nothing wrongly rejected, every model as the simulation says."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.prompt_resolver.resolver import deleted_summaries
from shared.adapters.catalog import registered
from shared.adapters.generation import active_generation
from shared.adapters.store import text
from shared.client import Client
from shared.deadletter import DeadLetter
from shared.domain.events import LoggedEvent
from shared.domain.member import MemberState
from shared.domain.views import MemberView
from shared.keys import all_partitions, partition_for
from shared.settings import Settings
from tools.replay import Verification, rebuild, verify
from tools.supervisor import Stack

from .config import FaultConfig, Say
from .simulation import TOKEN, Ledger, MemberSim, ProfileIds


async def _group(client: aioredis.Redis, stream: str, name: str) -> dict[str, Any]:
    try:
        groups: Any = await client.xinfo_groups(stream)
    except RedisError:
        return {}
    for group in groups:
        if group["name"] in (name, name.encode()):
            return dict(group)
    return {}


def _text(value: bytes | str | None) -> str:
    return (value.decode() if isinstance(value, bytes) else value) or "0-0"


async def _last_id(client: aioredis.Redis, stream: str) -> str:
    entries: Any = await client.xrevrange(stream, count=1)
    return entries[0][0].decode() if entries else "0-0"


async def backlog(client: aioredis.Redis, partitions: int) -> tuple[tuple[Any, ...], list[str]]:
    """A snapshot of every position, and what is still behind (empty when drained)."""
    generation = await active_generation(client)
    behind: list[str] = []
    snapshot: list[Any] = [generation]
    for partition in all_partitions(partitions):
        group = await _group(client, partition.inbox, "ingest")
        inbox_last = await _last_id(client, partition.inbox)
        delivered = group.get("last-delivered-id", b"0-0")
        delivered = delivered.decode() if isinstance(delivered, bytes) else str(delivered)
        if group.get("pending", 0) or (inbox_last != "0-0" and delivered != inbox_last):
            behind.append(f"{partition.tag} inbox: {group.get('pending', '?')} pending, "
                          f"delivered {delivered} of {inbox_last}")  # fmt: skip
        log_last = await _last_id(client, partition.log)
        projected = _text(await client.get(partition.read_model(generation).position))
        if projected != log_last:
            behind.append(f"{partition.tag} projector at {projected}, log at {log_last}")
        minted = _text(await client.get(partition.minter_position))
        after: Any = await client.xrange(partition.changes, min=f"({minted}", count=1)
        if after:
            behind.append(f"{partition.tag} minter at {minted}, changes after it")
        snapshot += [inbox_last, delivered, log_last, projected, minted,
                     await client.xlen(partition.dead_letters)]  # fmt: skip
    return tuple(snapshot), behind


async def drain(client: aioredis.Redis, config: FaultConfig, say: Say) -> list[str]:
    """Wait until every stream is consumed and nothing moves for ``quiet_s``; returns what
    is still behind when it gives up (nothing when drained): after ``drain_timeout``, or
    after ``stall_s`` without any progress."""
    started = time.monotonic()
    last: tuple[Any, ...] = ()
    moved = shown = started
    while True:
        now = time.monotonic()
        try:
            snapshot, behind = await backlog(client, config.partitions)
        except (RedisError, OSError) as error:
            snapshot, behind = (), [f"server: {error!r}"]
        if snapshot != last:
            last, moved = snapshot, now
        elif not behind and now - moved >= config.quiet_s:
            return []
        if behind and (now - started > config.drain_timeout or now - moved > config.stall_s):
            say(f"  NOT DRAINED after {now - started:.0f}s ({now - moved:.0f}s without "
                f"progress): {behind}")  # fmt: skip
            return behind
        if behind and now - shown > 3.0:
            shown = now
            say(f"  draining ({now - started:.0f}s): {'; '.join(behind[:3])}")
        await asyncio.sleep(0.2)


@dataclass
class Findings:
    """What the checks found; every list holds examples for the report."""

    log_events: int = 0
    dead_letters: int = 0
    codes: int = 0
    lost: list[str] = field(default_factory=list)
    wrongly_rejected: list[str] = field(default_factory=list)
    not_dead_lettered: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reordered: list[str] = field(default_factory=list)
    model_mismatches: list[str] = field(default_factory=list)
    dead_letter_codes: Counter[str] = field(default_factory=Counter)
    ingest_stats: Counter[str] = field(default_factory=Counter)


async def _stream(client: aioredis.Redis, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    found: list[tuple[bytes, dict[bytes, bytes]]] = []
    start = "-"
    while True:
        entries: Any = await client.xrange(stream, min=start, count=2000)
        if not entries:
            return found
        found += entries
        start = f"({entries[-1][0].decode()}"


@dataclass
class LogScan:
    """Every partition's log, counted: how often each event ID, mint and code occurs, the
    order of each member's sent messages, the images registered, the events per member."""

    events: int = 0
    ids: Counter[str] = field(default_factory=Counter)
    order: dict[str, list[str]] = field(default_factory=dict)
    mints: Counter[tuple[str, int]] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    images: list[str] = field(default_factory=list)
    per_member: Counter[str] = field(default_factory=Counter)

    def add(self, event: LoggedEvent) -> None:
        self.events += 1
        self.ids[event.event_id] += 1
        if event.type != "CodeMinted":
            self.per_member[event.member_id] += 1
        if event.type == "ImageRegistered":
            self.images.append(event.payload["image_id"])
        if event.type == "CodeMinted":
            self.mints[(event.payload["profile_id"], event.payload["evidence"])] += 1
            self.codes[event.payload["code"]] += 1
        elif "#" not in event.event_id:
            self.order.setdefault(event.member_id, []).append(event.event_id)

    @property
    def keys(self) -> set[str]:
        """The idempotency keys in the log (an event ID is the key, ``#n`` for derived ones)."""
        return {event_id.split("#", 1)[0] for event_id in self.ids}


async def scan_log(client: aioredis.Redis, partitions: int) -> LogScan:
    scan = LogScan()
    for partition in all_partitions(partitions):
        for _, fields in await _stream(client, partition.log):
            scan.add(LoggedEvent.from_bytes(fields[b"event"]))
    return scan


def _dead_key(letter: DeadLetter) -> str | None:
    raw = letter.original_bytes()
    match = TOKEN.search(raw)
    if match:
        return match.group().decode()
    try:
        return str(json.loads(raw)["idempotency_key"])
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class DeadScan:
    """Every partition's dead letters: by the key of the message, by code, by source entry."""

    letters: int = 0
    by_key: dict[str, list[DeadLetter]] = field(default_factory=dict)
    codes: Counter[str] = field(default_factory=Counter)
    entries: Counter[tuple[str, str]] = field(default_factory=Counter)


async def scan_dead_letters(client: aioredis.Redis, partitions: int) -> DeadScan:
    scan = DeadScan()
    for partition in all_partitions(partitions):
        for _, fields in await _stream(client, partition.dead_letters):
            letter = DeadLetter.model_validate_json(fields[b"dead"])
            scan.letters += 1
            scan.entries[(letter.source, letter.entry_id)] += 1
            scan.codes[letter.code] += 1
            scan.by_key.setdefault(_dead_key(letter) or "?", []).append(letter)
    return scan


def fates(found: Findings, ledger: Ledger, log: LogScan, dead: DeadScan) -> None:
    """Every valid message in the log and not dead-lettered, every invalid one dead-lettered
    with a reason and not in the log, nothing in the log that was never sent."""
    keys = log.keys
    for key in sorted(ledger.accepted - keys):
        why = "; ".join(f"{d.code}: {d.reason}" for d in dead.by_key.get(key, []))
        found.lost.append(f"{key} ({why or 'no dead letter'})")
    for key in sorted(ledger.accepted & dead.by_key.keys()):
        letter = dead.by_key[key][0]
        found.wrongly_rejected.append(f"{key}: {letter.code}: {letter.reason}")
    for key in sorted(ledger.rejected):
        if not any(letter.reason.strip() and letter.code for letter in dead.by_key.get(key, [])):
            found.not_dead_lettered.append(key)
    for key in sorted(ledger.rejected & keys):
        found.unexpected.append(f"{key}: invalid, yet in the log")
    for key in sorted(keys - ledger.accepted - ledger.rejected):
        if not key.startswith("mint:"):
            found.unexpected.append(f"{key}: in the log, never sent")


def doubles(log: LogScan, dead: DeadScan) -> list[str]:
    """Events, mints, codes and dead letters that occur more than once."""
    found = [f"event {k} x{n}" for k, n in sorted(log.ids.items()) if n > 1]
    found += [f"CodeMinted {p}@{e} x{n}" for (p, e), n in sorted(log.mints.items()) if n > 1]
    found += [f"code {c} x{n}" for c, n in sorted(log.codes.items()) if n > 1]
    found += [
        f"dead letter of {source} {entry} x{n}"
        for (source, entry), n in dead.entries.items()
        if n > 1
    ]
    return found


def reorderings(ledger: Ledger, log: LogScan) -> list[str]:
    """A member's messages in the log in another order than they were first sent."""
    found = []
    for member, keys in sorted(log.order.items()):
        seqs = [ledger.order.get(k, 0) for k in keys]
        for before, after, key in zip(seqs, seqs[1:], keys[1:], strict=False):
            if after < before:
                found.append(f"{member}: {key} (sent #{after}) after #{before}")
    return found


async def ingest_counts(client: aioredis.Redis, partitions: int) -> Counter[str]:
    stats: Counter[str] = Counter()
    for partition in all_partitions(partitions):
        found: Any = await client.hgetall(partition.stats)
        stats.update({k.decode(): int(v) for k, v in found.items()})
    return stats


async def check(
    client: aioredis.Redis, config: FaultConfig, ledger: Ledger, sims: list[MemberSim],
    ids: ProfileIds,
) -> Findings:  # fmt: skip
    log = await scan_log(client, config.partitions)
    dead = await scan_dead_letters(client, config.partitions)
    found = Findings(log_events=log.events, dead_letters=dead.letters, codes=len(log.codes))
    found.dead_letter_codes = dead.codes
    fates(found, ledger, log, dead)
    found.doubled = doubles(log, dead)
    found.reordered = reorderings(ledger, log)
    found.ingest_stats = await ingest_counts(client, config.partitions)
    if found.ingest_stats["accepted"] != len(ledger.accepted):
        found.unexpected.append(f"ingest counted {found.ingest_stats['accepted']} accepted "
                                f"messages, {len(ledger.accepted)} were sent")  # fmt: skip
    for image, present in zip(log.images, await registered(client, log.images), strict=True):
        if not present:
            found.lost.append(f"image {image}: registered in the log, not in the catalog")
    found.model_mismatches = await compare_models(client, config, sims, ids, log.per_member)
    return found


def _differences(member: str, where: str, got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    wrong = [
        f"{member}: {where} {name} = {got[name]!r}, want {want[name]!r}"
        for name in ("personalization", "default_version", "defaults", "liked", "deleted", "events")
        if name in want and got.get(name) != want[name]
    ]
    profiles, wanted = got["profiles"], want["profiles"]
    for profile_id in sorted(profiles.keys() | wanted.keys()):
        if profiles.get(profile_id) != wanted.get(profile_id):
            wrong.append(f"{member}: {where} profile {profile_id} (picks, name, deleted, "
                         f"global, family) = {profiles.get(profile_id)}, "
                         f"want {wanted.get(profile_id)}")  # fmt: skip
    return wrong


async def read_model_of(
    client: aioredis.Redis, config: FaultConfig, generation: int, member: str
) -> dict[str, Any]:
    """The member's read model in ``generation``, deleted profiles included, in the
    simulation's terms."""
    keys = partition_for(member, config.partitions).read_model(generation)
    raw = await client.get(keys.member(member))
    view = MemberView.from_bytes(raw) if raw else MemberView(member_id=member)
    got: dict[str, Any] = view.model_dump(
        include={"personalization", "default_version", "defaults"}
    )
    everyone = {**view.profiles, **await deleted_summaries(client, keys, view)}
    got["profiles"] = {
        i: (p.picks, p.name, p.deleted, p.is_global, p.family) for i, p in everyone.items()
    }
    return got


async def ingest_state_of(
    client: aioredis.Redis, config: FaultConfig, member: str
) -> dict[str, Any]:
    """Ingest's state of the member, with the sets beside it, in the simulation's terms."""
    partition = partition_for(member, config.partitions)
    stored: Any = await client.get(partition.member_state(member))
    state = MemberState.from_bytes(stored)
    got = state.model_dump(include={"personalization", "default_version", "defaults"})
    got["profiles"] = {
        i: (p.ratings, p.name, p.deleted, p.is_global, p.family) for i, p in state.profiles.items()
    }
    liked = {text(i) for i in await client.smembers(partition.liked_images(member))}
    got["liked"], got["events"] = sorted(liked | set(state.liked)), state.version
    deleted = {text(i) for i in await client.smembers(partition.deleted_profiles(member))}
    got["deleted"] = sorted(deleted)
    return got


async def compare_models(
    client: aioredis.Redis,
    config: FaultConfig,
    sims: list[MemberSim],
    ids: ProfileIds,
    events: Counter[str],
) -> list[str]:
    """The live read models and ingest's member states against the client-side simulation:
    every profile's pick count (picks + pair ranks), name, deletion, each member's toggle,
    default version and defaults; ingest's likes, and its state version, which counts the
    events appended for the member (so one appended twice shows)."""
    generation = await active_generation(client)
    wrong: list[str] = []
    for sim in sims:
        want = sim.expected(ids.of(sim.member))
        got = await read_model_of(client, config, generation, sim.member)
        wrong += _differences(sim.member, "read model", got, want)
        got = await ingest_state_of(client, config, sim.member)
        want["deleted"] = sorted(i for i, p in want["profiles"].items() if p[2])
        want["profiles"] = {i: p for i, p in want["profiles"].items() if not p[2]}
        want |= {"liked": sorted(sim.liked), "events": events[sim.member]}
        wrong += _differences(sim.member, "ingest state", got, want)
    return wrong


def service_log_findings(data_dir: Path) -> dict[str, int]:
    """Loops that died and tracebacks, per service log (a SIGKILL leaves neither)."""
    counts: dict[str, int] = {}
    for log in sorted((data_dir / "logs").glob("*.log")):
        content = log.read_text(errors="replace")
        died = content.count(" died")
        tracebacks = content.count("Traceback")
        if died or tracebacks:
            counts[f"{log.stem}: loops died"] = died
            counts[f"{log.stem}: tracebacks"] = tracebacks
    return counts


def unexpected_exits(stack: Stack) -> list[str]:
    return [
        f"{service}-{replica} exited with {process.returncode}"
        for (service, replica), process in sorted(stack.processes.items())
        if process.poll() is not None
    ]


async def rpc_answers(url: str, config: FaultConfig, members: list[str]) -> list[str]:
    """The resolver still answers after the server restart (profiles RPC for every member)."""
    failures = []
    async with Client(url, config.partitions) as client:
        for member in members:
            try:
                listing = await client.profiles(member, timeout=10)
                if listing.member_id != member:
                    failures.append(f"{member}: listing of {listing.member_id}")
            except Exception as error:
                failures.append(f"{member}: {error!r}")
    return failures


async def rebuild_and_verify(
    client: aioredis.Redis, settings: Settings
) -> tuple[Verification, float]:
    """Rebuild every read model from the log into a fresh generation and compare it with the
    live one; and the seconds that took."""
    started = time.monotonic()
    live = await active_generation(client)
    rebuilt = await rebuild(client, settings, quiet=True)
    verification = await verify(client, settings, live, rebuilt)
    return verification, time.monotonic() - started
