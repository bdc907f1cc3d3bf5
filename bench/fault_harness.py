"""Faults under load: kill -9 services and the server mid-stream, then prove that nothing was
lost, nothing doubled, and that replaying the log reproduces the live read models.

Used by ``make faults`` (``bench/faults.py``) and ``tests/faults/test_faults.py``:

1. a seeded load generator: members who pick from grids, like and rank images, toggle, set
   versions and defaults, create, rename and delete profiles, plus a known share of invalid
   messages (which must be dead-lettered) and of exact re-sends (which must not double);
   each member's stream is simulated client-side so the harness knows which keys must be
   accepted and what every profile's pick count must end up as;
2. a fault injector: SIGKILL of random service processes (restarted after a short delay)
   and of the server (restarted on the same port and data directory) at seeded moments;
3. a drain: every inbox consumed, every projector and minter position at its stream's end;
4. the checks: lost, doubled, reordered, wrongly rejected, read models against the
   simulation, and a fresh rebuild of the read models verified against the live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bench.restore_cycle import RestoreReport, restore_cycle
from services.prompt_resolver.resolver import deleted_summaries
from shared.adapters.catalog import registered
from shared.adapters.generation import active_generation
from shared.adapters.lifecycle import alive_key
from shared.adapters.server import EmbeddedServer
from shared.adapters.store import stored_state, text
from shared.client import Client
from shared.deadletter import DeadLetter
from shared.domain.events import LoggedEvent
from shared.domain.families import family_of
from shared.domain.views import MemberView
from shared.keys import Partition, all_partitions, partition_for
from shared.settings import Settings
from tools.replay import rebuild, verify
from tools.supervisor import SERVICES, Stack

Say = Callable[[str], None]
REF = "@ref:"
TOKEN = re.compile(rb"bad-[A-Za-z0-9_.-]+")
V7_VERSIONS = ("7", "8", "8.1")
V6_VERSIONS = ("6.1", "6")
EXTREME_SCALES = (1e-170, 1e170)
"""Valid but extreme embeddings (each member's first images): a plain norm under- or
overflows on them; the catalog must still hold their unit vectors, and grids, picks and
replays must handle them like any other."""


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class FaultConfig:
    """One fault run: the load, the faults, and the service settings (``PZ_*``)."""

    events: int = 50_000
    members: int = 20
    rate: float = 1000.0
    duration: float | None = None
    faults: int = 20
    server_restarts: int = 1
    replicas: int = 2
    seed: int = 7
    partitions: int = 4
    embed_dim: int = 16
    unlock: int = 10
    mint_every: int = 10
    claim_idle_ms: int = 1500
    batch_size: int = 64
    invalid_share: float = 0.03
    resend_share: float = 0.05
    images_v7: int = 6
    images_v6: int = 3
    acl: bool = True
    pauses: int = 2
    extreme_images: bool = True
    restore: bool = True
    drain_timeout: float = 600.0
    stall_s: float = 120.0
    quiet_s: float = 2.0

    def env(self) -> dict[str, str]:
        """The ``PZ_*`` variables the service processes must see (they inherit os.environ)."""
        return {
            "PZ_PARTITIONS": str(self.partitions),
            "PZ_EMBED_DIM": str(self.embed_dim),
            "PZ_UNLOCK_V7": str(self.unlock),
            "PZ_UNLOCK_V6": str(self.unlock),
            "PZ_MINT_EVERY": str(self.mint_every),
            "PZ_CLAIM_IDLE_MS": str(self.claim_idle_ms),
            "PZ_BATCH_SIZE": str(self.batch_size),
        }

    def settings(self, url: str) -> Settings:
        return Settings(
            redis_url=url,
            partitions=self.partitions,
            embed_dim=self.embed_dim,
            unlock_v7=self.unlock,
            unlock_v6=self.unlock,
            mint_every=self.mint_every,
            claim_idle_ms=self.claim_idle_ms,
            batch_size=self.batch_size,
            replica="fault-harness",
        )

    @property
    def window(self) -> float:
        """Seconds the publishing should take at the steady rate (the fault window)."""
        planned = self.events / self.rate
        return min(planned, self.duration) if self.duration else planned


# --------------------------------------------------------------------------- the load


@dataclass
class Planned:
    """One message to publish: ``valid`` (must be accepted once), ``invalid`` (must be
    dead-lettered) or ``resend`` (an exact copy of an earlier valid one: must not double)."""

    member: str
    kind: str
    key: str
    label: str
    body: dict[str, Any] | bytes
    needs: tuple[str, ...] = ()
    effect: Callable[[], object] | None = None

    def data(self, ids: dict[str, str]) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(_resolve(self.body, ids)).encode()


def _resolve(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith(REF):
        return ids[value[len(REF) :]]
    if isinstance(value, dict):
        return {k: _resolve(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, ids) for v in value]
    return value


@dataclass
class SimProfile:
    family: str
    name: str
    is_global: bool
    picks: int = 0
    deleted: bool = False


@dataclass
class Catalog:
    """The images every member registered up front: id -> (creator, version)."""

    images: dict[str, tuple[str, str]] = field(default_factory=dict)

    def pool(self, family: str) -> list[str]:
        return [i for i, (_, v) in self.images.items() if family_of(v) == family]


class MemberSim:
    """One member's seeded message stream, and the state ingest must end up with for it.

    Profiles are named by *refs*: ``global:v7`` or the idempotency key of the message that
    created them; the IDs ingest assigns are learned from the log before a message that
    names a profile is sent. A message changes the simulated state when it is taken for
    sending (its ``effect``), so that what was never sent never counts.
    """

    ACTIONS = (
        ("grid", 40), ("like", 10), ("unlike", 3), ("pair", 12), ("toggle", 3),
        ("version", 2), ("defaults", 2), ("create", 4), ("rename", 3), ("delete", 1),
        ("register", 1),
    )  # fmt: skip

    def __init__(self, member: str, seed: int, catalog: Catalog, config: FaultConfig) -> None:
        self.member = member
        self.rng = random.Random(f"{seed}/{member}")
        self.catalog = catalog
        self.config = config
        self.default_version = "7"
        self.personalization = False
        self.profiles: dict[str, SimProfile] = {}
        self.liked: set[str] = set()
        self.defaults: list[str] = []
        self.counter = 0
        self.queue: list[Planned] = []
        self.sent: list[Planned] = []
        self.head: Planned | None = None
        self.pools = {f: catalog.pool(f) for f in ("v6", "v7")}
        self.others = [i for i, (creator, _) in catalog.images.items() if creator != member]

    def peek(self) -> Planned:
        if self.head is None:
            self.head = self._next()
        return self.head

    def pop(self) -> Planned:
        head = self.peek()
        self.head = None
        if head.kind == "valid":
            self.sent.append(head)
            if head.effect is not None:
                head.effect()
        return head

    def _next(self) -> Planned:
        roll = self.rng.random()
        if roll < self.config.invalid_share:
            return self._invalid()
        if roll < self.config.invalid_share + self.config.resend_share and self.sent:
            original = self.rng.choice(self.sent)
            return Planned(self.member, "resend", original.key, "resend", original.body,
                           original.needs)  # fmt: skip
        while not self.queue:
            self.queue = self._action()
        return self.queue.pop(0)

    def _key(self, label: str) -> str:
        self.counter += 1
        return f"{self.member}.{label}.{self.counter}"

    def _msg(
        self,
        type_: str,
        payload: dict[str, Any],
        needs: Iterable[str] = (),
        effect: Callable[[], object] | None = None,
    ) -> Planned:
        key = self._key(type_)
        body = {"type": type_, "schema_version": 1, "idempotency_key": key,
                "member_id": self.member, "payload": payload}  # fmt: skip
        return Planned(self.member, "valid", key, type_, body, tuple(needs), effect)

    def _action(self) -> list[Planned]:
        names, weights = zip(*self.ACTIONS, strict=True)
        action = self.rng.choices(names, weights)[0]
        handler: Callable[[], list[Planned]] = getattr(self, f"_{action}")
        return handler()

    def _live(self, custom_only: bool = False) -> list[str]:
        return [
            ref
            for ref, p in self.profiles.items()
            if not p.deleted and not (custom_only and p.is_global)
        ]

    def _global(self, family: str) -> SimProfile:
        """The Global Profile of ``family``; ingest creates it on first use."""
        ref = f"global:{family}"
        if ref not in self.profiles:
            self.profiles[ref] = SimProfile(family, f"Global {family.upper()} Profile", True)
        return self.profiles[ref]

    def _count_pick(self, ref: str | None, family: str) -> Callable[[], object]:
        def effect() -> None:
            profile = self.profiles[ref] if ref else self._global(family)
            profile.picks += 1

        return effect

    def _grid(self) -> list[Planned]:
        customs = self._live(custom_only=True)
        target = self.rng.choice(customs) if customs and self.rng.random() < 0.3 else None
        family = self.profiles[target].family if target else family_of(self.default_version)
        assert family is not None
        images = self.rng.sample(self.pools[family], self.rng.randint(6, 9))
        grid_id = f"{self.member}-g{self.counter}"
        payload: dict[str, Any] = {"grid_id": grid_id, "image_ids": images}
        if target:
            payload["profile_id"] = REF + target
        messages = [
            self._msg("GridServed", payload, [target] if target else [],
                      None if target else lambda: self._global(family))
        ]  # fmt: skip
        for image in self.rng.sample(images, self.rng.randint(1, 3)):
            pick = {"grid_id": grid_id, "image_id": image}
            messages.append(self._msg("ImagePicked", pick, (), self._count_pick(target, family)))
        return messages

    def _like(self) -> list[Planned]:
        candidates = [i for i in self.others if i not in self.liked]
        if not candidates:
            return []
        image = self.rng.choice(candidates)
        family = family_of(self.catalog.images[image][1])
        assert family is not None

        def effect() -> None:
            self._global(family)
            self.liked.add(image)

        return [self._msg("ImageLiked", {"image_id": image}, (), effect)]

    def _unlike(self) -> list[Planned]:
        if not self.liked:
            return []
        image = self.rng.choice(sorted(self.liked))
        return [self._msg("ImageUnliked", {"image_id": image}, (),
                          lambda: self.liked.discard(image))]  # fmt: skip

    def _pair(self) -> list[Planned]:
        family = "v7" if self.rng.random() < 0.7 else "v6"
        winner, loser = self.rng.sample(self.pools[family], 2)
        payload = {"winner_image_id": winner, "loser_image_id": loser}
        return [self._msg("PairRanked", payload, (), self._count_pick(None, family))]

    def _toggle(self) -> list[Planned]:
        enabled = self.rng.random() < 0.5
        return [self._msg("PersonalizationToggled", {"enabled": enabled}, (),
                          lambda: setattr(self, "personalization", enabled))]  # fmt: skip

    def _version(self) -> list[Planned]:
        version = self.rng.choice(V7_VERSIONS * 2 + V6_VERSIONS)
        return [self._msg("DefaultVersionSet", {"version": version}, (),
                          lambda: setattr(self, "default_version", version))]  # fmt: skip

    def _defaults(self) -> list[Planned]:
        live = self._live()
        chosen = self.rng.sample(live, min(len(live), self.rng.randint(0, 3)))
        return [self._msg("DefaultProfilesSelected", {"profile_ids": [REF + r for r in chosen]},
                          chosen, lambda: setattr(self, "defaults", chosen))]  # fmt: skip

    def _create(self) -> list[Planned]:
        family = family_of(self.default_version)
        assert family is not None
        base = self.profiles.get(f"global:{family}")
        if base is None or base.picks < self.config.unlock or len(self._live(True)) >= 6:
            return []
        name = f"{self.member} style {self.counter}"
        message = self._msg("ProfileCreated", {"name": name})
        message.effect = lambda: self.profiles.setdefault(
            message.key, SimProfile(family, name, False)
        )
        return [message]

    def _rename(self) -> list[Planned]:
        live = self._live()
        if not live:
            return []
        ref = self.rng.choice(live)
        name = f"renamed {self.member} {self.counter}"
        return [self._msg("ProfileRenamed", {"profile_id": REF + ref, "name": name}, [ref],
                          lambda: setattr(self.profiles[ref], "name", name))]  # fmt: skip

    def _delete(self) -> list[Planned]:
        customs = self._live(custom_only=True)
        if len(customs) < 2:
            return []
        ref = self.rng.choice(customs)

        def effect() -> None:
            self.profiles[ref].deleted = True
            self.defaults = [d for d in self.defaults if d != ref]

        return [self._msg("ProfileDeleted", {"profile_id": REF + ref}, [ref], effect)]

    def _register(self) -> list[Planned]:
        """A new image of this member's, mid-run (the catalog write precedes the append)."""
        version = self.rng.choice(V7_VERSIONS + V6_VERSIONS)
        embedding = [round(self.rng.gauss(0, 1), 6) for _ in range(self.config.embed_dim)]
        image = f"{self.member}-n{self.counter}"
        payload = {"image_id": image, "model_version": version, "embedding": embedding}
        return [self._msg("ImageRegistered", payload)]

    def _invalid(self) -> Planned:
        token = f"bad-{self.member}-{self._key('x')}"
        kind = self.rng.choice(
            ("bad_json", "unknown_type", "unknown_grid", "bad_utf8", "poison_embedding")
        )
        body: dict[str, Any] | bytes
        if kind == "poison_embedding":
            values = ", ".join(["1e999"] + ["1e-170"] * (self.config.embed_dim - 1))
            body = (f'{{"type": "ImageRegistered", "schema_version": 1, "idempotency_key": '
                    f'"{token}", "member_id": "{self.member}", "payload": {{"image_id": '
                    f'"{token}", "model_version": "7", "embedding": [{values}]}}}}').encode()  # fmt: skip
        elif kind == "bad_json":
            body = f'{{"type": "ImagePicked", "idempotency_key": "{token}", "payload": {{'.encode()
        elif kind == "bad_utf8":
            body = b"\xff\xfe" + f'{{"idempotency_key": "{token}"}}'.encode() + b"\xc3\x28"
        else:
            type_, payload = ("ImageZapped", {}) if kind == "unknown_type" else (
                "ImagePicked", {"grid_id": f"nogrid-{token}", "image_id": "x"})  # fmt: skip
            body = {"type": type_, "schema_version": 1, "idempotency_key": token,
                    "member_id": self.member, "payload": payload}  # fmt: skip
        return Planned(self.member, "invalid", token, kind, body)


def member_ids(count: int) -> list[str]:
    return [f"fm{i:03d}" for i in range(count)]


def make_catalog(config: FaultConfig) -> tuple[Catalog, list[Planned]]:
    rng = random.Random(f"{config.seed}/catalog")
    catalog = Catalog()
    messages = []
    for member in member_ids(config.members):
        versions = [rng.choice(V7_VERSIONS) for _ in range(config.images_v7)]
        versions += [rng.choice(V6_VERSIONS) for _ in range(config.images_v6)]
        for n, version in enumerate(versions):
            image = f"{member}-i{n}"
            catalog.images[image] = (member, version)
            embedding = [round(rng.gauss(0, 1), 6) for _ in range(config.embed_dim)]
            if config.extreme_images and n < len(EXTREME_SCALES):
                embedding = [value * EXTREME_SCALES[n] for value in embedding]
            payload = {"image_id": image, "model_version": version, "embedding": embedding}
            key = f"reg-{image}"
            body = {"type": "ImageRegistered", "schema_version": 1, "idempotency_key": key,
                    "member_id": member, "payload": payload}  # fmt: skip
            messages.append(Planned(member, "valid", key, "ImageRegistered", body))
    return catalog, messages


@dataclass
class Ledger:
    """What was published: first-send order of every key, and what must happen to it."""

    order: dict[str, int] = field(default_factory=dict)
    accepted: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    labels: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    resends: int = 0
    retries: int = 0

    def record(self, item: Planned) -> None:
        self.sent += 1
        self.labels[item.label] += 1
        self.order.setdefault(item.key, self.sent)
        if item.kind == "valid":
            self.accepted.add(item.key)
        elif item.kind == "invalid":
            self.rejected.add(item.key)
        else:
            self.resends += 1


class ProfileIds:
    """Learns the profile IDs ingest assigned, by reading ``ProfileCreated`` from the logs."""

    def __init__(self, client: aioredis.Redis, partitions: int) -> None:
        self.client = client
        self.positions = {p.index: "-" for p in all_partitions(partitions)}
        self.ids: dict[str, dict[str, str]] = {}

    def of(self, member: str) -> dict[str, str]:
        return self.ids.setdefault(member, {})

    async def scan(self) -> None:
        for partition in all_partitions(len(self.positions)):
            while True:
                start = self.positions[partition.index]
                entries: Any = await self.client.xrange(partition.log, min=start, count=2000)
                if not entries:
                    break
                for _, fields in entries:
                    if b'"ProfileCreated"' in fields[b"event"]:
                        self._learn(LoggedEvent.from_bytes(fields[b"event"]))
                self.positions[partition.index] = f"({entries[-1][0].decode()}"

    def _learn(self, event: LoggedEvent) -> None:
        payload = event.payload
        ref = (
            f"global:{payload['family']}"
            if payload.get("is_global")
            else event.event_id.split("#", 1)[0]
        )
        self.of(event.member_id)[ref] = payload["profile_id"]


class LoadGenerator:
    """Interleaves the members' streams (seeded); a member whose next message names a
    profile ingest has not created yet waits, the others go on."""

    def __init__(self, config: FaultConfig, catalog: Catalog, ids: ProfileIds) -> None:
        self.members = [MemberSim(m, config.seed, catalog, config) for m in member_ids(config.members)]  # fmt: skip
        self.rng = random.Random(f"{config.seed}/interleave")
        self.ids = ids

    def take(self, count: int) -> list[Planned]:
        ready = [m for m in self.members if self._ready(m)]
        taken: list[Planned] = []
        while ready and len(taken) < count:
            member = self.rng.choice(ready)
            taken.append(member.pop())
            if not self._ready(member):
                ready.remove(member)
        return taken

    def _ready(self, member: MemberSim) -> bool:
        known = self.ids.of(member.member)
        return all(ref in known for ref in member.peek().needs)

    def blocked(self) -> int:
        return sum(not self._ready(m) for m in self.members)


class Publisher:
    """Pipelined XADD at a steady rate; on a server error the same messages are sent again
    (same keys) until the server takes them."""

    def __init__(self, client: aioredis.Redis, config: FaultConfig, ledger: Ledger) -> None:
        self.client = client
        self.config = config
        self.ledger = ledger

    async def send(self, items: list[Planned], ids: ProfileIds, give_up_s: float = 120.0) -> None:
        entries = [
            (partition_for(i.member, self.config.partitions).inbox, i.data(ids.of(i.member)))
            for i in items
        ]
        deadline = time.monotonic() + give_up_s
        while True:
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for stream, data in entries:
                        pipe.xadd(stream, {"data": data})
                    await pipe.execute()
                break
            except (RedisError, OSError):
                if time.monotonic() > deadline:
                    raise
                self.ledger.retries += len(entries)
                await asyncio.sleep(0.1)
        for item in items:
            self.ledger.record(item)

    async def run(self, generator: LoadGenerator, ids: ProfileIds, total: int, say: Say) -> None:
        started = last_scan = shown = time.monotonic()
        base = self.ledger.sent
        while self.ledger.sent - base < total:
            now = time.monotonic()
            if self.config.duration and now - started > self.config.duration:
                say(f"  publishing stopped at the --duration cap ({self.config.duration:.0f}s)")
                break
            due = min(int((now - started) * self.config.rate) - (self.ledger.sent - base), 500)
            due = min(due, total - (self.ledger.sent - base))
            if now - last_scan > 0.25 and generator.blocked():
                await _tolerant(ids.scan())
                last_scan = now
            items = generator.take(due) if due > 0 else []
            if items:
                await self.send(items, ids)
            else:
                await asyncio.sleep(0.02)
            if now - shown > 2.0:
                shown = now
                sent = self.ledger.sent - base
                say(f"  sent {sent:,}/{total:,} ({sent / (now - started):,.0f}/s), "
                    f"{self.ledger.retries:,} re-sent after server errors, "
                    f"{generator.blocked()} members waiting for a profile ID")  # fmt: skip


async def _tolerant(awaitable: Any) -> None:
    with contextlib.suppress(RedisError, OSError):
        await awaitable


# --------------------------------------------------------------------------- the faults


@dataclass(frozen=True)
class Fault:
    moment: float
    target: str
    replica: int
    delay: float


@dataclass
class FaultLog:
    kills: list[tuple[float, str, int]] = field(default_factory=list)
    server_restarts: list[float] = field(default_factory=list)
    pauses: list[str] = field(default_factory=list)
    spawn_retries: int = 0
    exited_before_kill: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)


class FaultInjector:
    """SIGKILL service processes and the server at seeded moments; restart each shortly after."""

    def __init__(self, stack: Stack, server: EmbeddedServer, config: FaultConfig, say: Say) -> None:
        self.stack = stack
        self.server = server
        self.config = config
        self.say = say
        self.rng = random.Random(f"{config.seed}/faults")
        self.log = FaultLog()
        self.down: set[tuple[str, int]] = set()
        self.started = time.monotonic()
        self.server_lock = asyncio.Lock()
        self.server_thread = ThreadPoolExecutor(1, thread_name_prefix="server")

    def schedule(self) -> list[Fault]:
        """Each service killed ``faults / 4`` times (a random replica each time), the server
        restarted ``server_restarts`` times in the middle of the window, at seeded moments."""
        services = list(SERVICES)
        self.rng.shuffle(services)
        targets = [services[n % len(services)] for n in range(self.config.faults)]
        targets += ["server"] * self.config.server_restarts
        targets += ["pause"] * self.config.pauses
        faults = []
        for target in targets:
            span = (0.3, 0.7) if target in ("server", "pause") else (0.05, 0.95)
            moment = self.rng.uniform(*span) * self.config.window
            replica = self.rng.randrange(self.config.replicas)
            faults.append(Fault(moment, target, replica, self.rng.uniform(0.2, 2.0)))
        return sorted(faults, key=lambda f: f.moment)

    async def run(self) -> None:
        self.started = time.monotonic()
        await asyncio.gather(*(self._at(fault) for fault in self.schedule()))

    async def _at(self, fault: Fault) -> None:
        await asyncio.sleep(max(0.0, self.started + fault.moment - time.monotonic()))
        if fault.target == "server":
            await self._restart_server(fault.delay)
        elif fault.target == "pause":
            await self._pause_lease_holder()
        else:
            await self._kill_service(fault.target, fault.replica, fault.delay)

    async def _kill_service(self, service: str, replica: int, delay: float) -> None:
        while (service, replica) in self.down:
            await asyncio.sleep(0.1)
        self.down.add((service, replica))
        process = self.stack.processes[(service, replica)]
        if process.poll() is not None:
            self.log.exited_before_kill.append(f"{service}-{replica}: {process.returncode}")
            self.say(f"  !! {service}-{replica} had already exited ({process.returncode})")
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        at = time.monotonic() - self.started
        self.log.kills.append((at, service, replica))
        self.say(f"  fault {len(self.log.kills)}: kill -9 {service}-{replica} at {at:.1f}s; "
                 f"restart in {delay:.1f}s")  # fmt: skip
        await asyncio.sleep(delay)
        await self._spawn(service, replica)
        self.down.discard((service, replica))

    async def _spawn(self, service: str, replica: int) -> None:
        """Restart one service process; retried while the server is down (each attempt is
        short, so that the threads stay free for the server's own restart)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                await asyncio.to_thread(self.stack.spawn, service, replica)
                return
            except (RedisError, OSError):
                self.log.spawn_retries += 1
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def watch(self, stop: asyncio.Event) -> None:
        """What ``make run``'s supervisor does: restart a service process that exited by
        itself. Each such exit is recorded: a service should ride out a server outage."""
        while not stop.is_set():
            await self.restart_exited()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def restart_exited(self) -> None:
        for service, replica in list(self.stack.processes):
            process = self.stack.processes[(service, replica)]
            if (service, replica) in self.down or process.poll() is None:
                continue
            self.down.add((service, replica))
            name = f"{service}-{replica}"
            why = last_error(self.stack.data_dir / "logs" / f"{name}.log")
            at = time.monotonic() - self.started
            self.log.crashes.append(
                f"{name} exited by itself ({process.returncode}) at {at:.1f}s: {why}"
            )
            self.say(f"  !! {name} exited by itself with {process.returncode} at {at:.1f}s "
                     f"({why}); restarting it")  # fmt: skip
            await self._spawn(service, replica)
            self.down.discard((service, replica))

    async def settle(self, timeout: float) -> list[str]:
        """Wait until every service process has a heartbeat again; returns those without."""
        deadline = time.monotonic() + timeout
        while True:
            await self.restart_exited()
            try:
                missing = await asyncio.to_thread(all_alive, self.stack, self.server.url)
            except (RedisError, OSError) as error:
                missing = [f"server: {error!r}"]
            if not missing or time.monotonic() > deadline:
                return missing
            await asyncio.sleep(0.2)

    async def _pause_lease_holder(self) -> None:
        """SIGSTOP the replica holding a partition's lease for twice the lease time, then
        SIGCONT: it wakes up believing it still holds the partition, another replica has
        taken over meanwhile, and nothing may be lost or doubled."""
        role = self.rng.choice(["selection-ingest", "profile-projector", "code-minter"])
        partition = Partition(self.rng.randrange(self.config.partitions))
        with redis.Redis.from_url(self.stack.url, socket_timeout=5) as client:
            try:
                holder = text(client.get(partition.lease(role)))
            except (RedisError, OSError):
                holder = ""
        found = [key for key in self.stack.processes if f"{key[0]}-{key[1]}" == holder]
        if not found or found[0] in self.down:
            self.say(f"  pause: no live holder of {partition.lease(role)} ({holder!r}); skipped")
            return
        self.down.add(found[0])
        process = self.stack.processes[found[0]]
        stopped_s = 2 * self.config.claim_idle_ms / 1000
        at = time.monotonic() - self.started
        self.say(f"  pause: SIGSTOP {holder} (holds {partition.lease(role)}) at {at:.1f}s "
                 f"for {stopped_s:.1f}s")  # fmt: skip
        process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(stopped_s)
        process.send_signal(signal.SIGCONT)
        self.log.pauses.append(f"{holder} at {at:.1f}s for {stopped_s:.1f}s")
        self.down.discard(found[0])

    async def _restart_server(self, delay: float) -> None:
        async with self.server_lock:
            await self._kill_and_start_server(delay)

    async def _kill_and_start_server(self, delay: float) -> None:
        self.server.kill()
        at = time.monotonic() - self.started
        self.log.server_restarts.append(at)
        self.say(f"  server: kill -9 valkey at {at:.1f}s; restart in {delay:.1f}s")
        await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.server_thread, self.server.start, 60.0)
        self.say(f"  server: back at {time.monotonic() - self.started:.1f}s")


# --------------------------------------------------------------------------- drain and checks


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


def _dead_key(letter: DeadLetter) -> str | None:
    raw = letter.original_bytes()
    match = TOKEN.search(raw)
    if match:
        return match.group().decode()
    try:
        return str(json.loads(raw)["idempotency_key"])
    except (ValueError, KeyError, TypeError):
        return None


async def check(
    client: aioredis.Redis, config: FaultConfig, ledger: Ledger, sims: list[MemberSim],
    ids: ProfileIds,
) -> Findings:  # fmt: skip
    found = Findings()
    in_log: Counter[str] = Counter()
    order: dict[str, list[str]] = {}
    mints: Counter[tuple[str, int]] = Counter()
    codes: Counter[str] = Counter()
    images: list[str] = []
    per_member: Counter[str] = Counter()
    for partition in all_partitions(config.partitions):
        for _, fields in await _stream(client, partition.log):
            event = LoggedEvent.from_bytes(fields[b"event"])
            found.log_events += 1
            in_log[event.event_id] += 1
            if event.type != "CodeMinted":
                per_member[event.member_id] += 1
            if event.type == "ImageRegistered":
                images.append(event.payload["image_id"])
            if event.type == "CodeMinted":
                mints[(event.payload["profile_id"], event.payload["evidence"])] += 1
                codes[event.payload["code"]] += 1
            elif "#" not in event.event_id:
                order.setdefault(event.member_id, []).append(event.event_id)
    bases = {event_id.split("#", 1)[0] for event_id in in_log}
    dead: dict[str, list[DeadLetter]] = {}
    entries: Counter[tuple[str, str]] = Counter()
    for partition in all_partitions(config.partitions):
        for _, fields in await _stream(client, partition.dead_letters):
            letter = DeadLetter.model_validate_json(fields[b"dead"])
            entries[(letter.source, letter.entry_id)] += 1
            found.dead_letters += 1
            found.dead_letter_codes[letter.code] += 1
            dead.setdefault(_dead_key(letter) or "?", []).append(letter)
    for key in sorted(ledger.accepted - bases):
        why = "; ".join(f"{d.code}: {d.reason}" for d in dead.get(key, []))
        found.lost.append(f"{key} ({why or 'no dead letter'})")
    for key in sorted(ledger.accepted & dead.keys()):
        found.wrongly_rejected.append(f"{key}: {dead[key][0].code}: {dead[key][0].reason}")
    for key in sorted(ledger.rejected):
        if not any(letter.reason.strip() and letter.code for letter in dead.get(key, [])):
            found.not_dead_lettered.append(key)
    for key in sorted(ledger.rejected & bases):
        found.unexpected.append(f"{key}: invalid, yet in the log")
    for key in sorted(bases - ledger.accepted - ledger.rejected):
        if not key.startswith("mint:"):
            found.unexpected.append(f"{key}: in the log, never sent")
    found.doubled += [f"event {k} x{n}" for k, n in sorted(in_log.items()) if n > 1]
    found.doubled += [f"CodeMinted {p}@{e} x{n}" for (p, e), n in sorted(mints.items()) if n > 1]
    found.doubled += [f"code {c} x{n}" for c, n in sorted(codes.items()) if n > 1]
    found.doubled += [
        f"dead letter of {source} {entry} x{n}" for (source, entry), n in entries.items() if n > 1
    ]
    found.codes = len(codes)
    for member, keys in sorted(order.items()):
        seqs = [ledger.order.get(k, 0) for k in keys]
        for before, after, key in zip(seqs, seqs[1:], keys[1:], strict=False):
            if after < before:
                found.reordered.append(f"{member}: {key} (sent #{after}) after #{before}")
    for partition in all_partitions(config.partitions):
        stats: Any = await client.hgetall(partition.stats)
        found.ingest_stats.update({k.decode(): int(v) for k, v in stats.items()})
    if found.ingest_stats["accepted"] != len(ledger.accepted):
        found.unexpected.append(f"ingest counted {found.ingest_stats['accepted']} accepted "
                                f"messages, {len(ledger.accepted)} were sent")  # fmt: skip
    for image, present in zip(images, await registered(client, list(images)), strict=True):
        if not present:
            found.lost.append(f"image {image}: registered in the log, not in the catalog")
    found.model_mismatches = await compare_models(client, config, sims, ids, per_member)
    return found


def _expected(sim: MemberSim, known: dict[str, str]) -> dict[str, Any]:
    return {
        "personalization": sim.personalization,
        "default_version": sim.default_version,
        "defaults": [known.get(ref, ref) for ref in sim.defaults],
        "profiles": {
            known.get(ref, ref): (p.picks, p.name, p.deleted, p.is_global, p.family)
            for ref, p in sim.profiles.items()
        },
    }


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
        partition = partition_for(sim.member, config.partitions)
        want = _expected(sim, ids.of(sim.member))
        raw = await client.get(partition.read_model(generation).member(sim.member))
        view = MemberView.from_bytes(raw) if raw else MemberView(member_id=sim.member)
        got: dict[str, Any] = view.model_dump(
            include={"personalization", "default_version", "defaults"}
        )
        keys = partition.read_model(generation)
        everyone = {**view.profiles, **await deleted_summaries(client, keys, view)}
        got["profiles"] = {
            i: (p.picks, p.name, p.deleted, p.is_global, p.family) for i, p in everyone.items()
        }
        wrong += _differences(sim.member, "read model", got, want)
        stored: Any = await client.get(partition.member_state(sim.member))
        state = stored_state(stored)
        got = state.model_dump(include={"personalization", "default_version", "defaults"})
        got["profiles"] = {
            i: (p.ratings, p.name, p.deleted, p.is_global, p.family)
            for i, p in state.profiles.items()
        }
        liked = {text(i) for i in await client.smembers(partition.liked_images(sim.member))}
        got["liked"], got["events"] = sorted(liked | set(state.liked)), state.version
        deleted = {text(i) for i in await client.smembers(partition.deleted_profiles(sim.member))}
        got["deleted"] = sorted(deleted)
        want["deleted"] = sorted(i for i, p in want["profiles"].items() if p[2])
        want["profiles"] = {i: p for i, p in want["profiles"].items() if not p[2]}
        want |= {"liked": sorted(sim.liked), "events": events[sim.member]}
        wrong += _differences(sim.member, "ingest state", got, want)
    return wrong


def service_log_findings(data_dir: Path) -> dict[str, int]:
    """Loops that died and tracebacks, per service log (a SIGKILL leaves neither)."""
    counts: dict[str, int] = {}
    for log in sorted((data_dir / "logs").glob("*.log")):
        text = log.read_text(errors="replace")
        died = text.count(" died")
        tracebacks = text.count("Traceback")
        if died or tracebacks:
            counts[f"{log.stem}: loops died"] = died
            counts[f"{log.stem}: tracebacks"] = tracebacks
    return counts


def last_error(log: Path) -> str:
    """The last exception line of a service's log (what made it exit)."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line)]
    return errors[-1].strip()[:200] if errors else "no exception in its log"


def unexpected_exits(stack: Stack) -> list[str]:
    return [
        f"{service}-{replica} exited with {process.returncode}"
        for (service, replica), process in sorted(stack.processes.items())
        if process.poll() is not None
    ]


def all_alive(stack: Stack, url: str) -> list[str]:
    with redis.Redis.from_url(url) as client:
        return [
            f"{service}-{replica} has no heartbeat"
            for service, replica in sorted(stack.processes)
            if not client.exists(alive_key(service, f"{service}-{replica}"))
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


# --------------------------------------------------------------------------- the run


@dataclass
class FaultReport:
    config: FaultConfig
    ledger: Ledger
    findings: Findings
    faults: FaultLog
    diffs: list[str]
    compared: int
    skipped: int
    seconds: float
    publish_s: float
    drain_s: float
    rebuild_s: float
    not_drained: list[str]
    rpc_failures: list[str]
    exits: list[str]
    no_heartbeat: list[str]
    service_logs: dict[str, int]
    restore: RestoreReport = field(default_factory=RestoreReport)

    @property
    def lost(self) -> int:
        return len(self.findings.lost) + len(self.findings.not_dead_lettered)

    @property
    def doubled(self) -> int:
        return len(self.findings.doubled)

    @property
    def ok(self) -> bool:
        f = self.findings
        problems = (f.lost, f.not_dead_lettered, f.doubled, f.wrongly_rejected, f.unexpected,
                    f.reordered, f.model_mismatches, self.diffs, self.rpc_failures, self.exits,
                    self.no_heartbeat, self.not_drained)  # fmt: skip
        restored = self.restore.ok or not self.config.restore
        return not any(problems) and self.skipped == 0 and restored

    def summary(self) -> dict[str, Any]:
        f = self.findings
        return {
            "events_sent": self.ledger.sent,
            "accepted": len(self.ledger.accepted),
            "rejected": len(self.ledger.rejected),
            "resent": self.ledger.resends,
            "faults_injected": len(self.faults.kills),
            "server_restarts": len(self.faults.server_restarts),
            "lease_holder_pauses": len(self.faults.pauses),
            "acl": self.config.acl,
            "replicas": self.config.replicas,
            "diffs": len(self.diffs),
            "lost": self.lost,
            "doubled": self.doubled,
            "wrongly_rejected": len(f.wrongly_rejected),
            "unexpected": len(f.unexpected),
            "reordered": len(f.reordered),
            "model_mismatches": len(f.model_mismatches),
            "verify_compared": self.compared,
            "verify_skipped": self.skipped,
            "log_events": f.log_events,
            "ingest_stats": dict(sorted(f.ingest_stats.items())),
            "dead_letter_codes": dict(sorted(f.dead_letter_codes.items())),
            "dead_letters": f.dead_letters,
            "codes": f.codes,
            "retried_xadds": self.ledger.retries,
            "rpc_failures": len(self.rpc_failures),
            "unexpected_exits": len(self.exits),
            "drained": not self.not_drained,
            "seconds": round(self.seconds, 1),
            "publish_s": round(self.publish_s, 1),
            "drain_s": round(self.drain_s, 1),
            "rebuild_s": round(self.rebuild_s, 1),
            "events_per_s": round(self.ledger.sent / max(self.publish_s + self.drain_s, 1e-9), 1),
            "seed": self.config.seed,
            "mix": dict(self.ledger.labels.most_common()),
            **self.restore.summary(),
            "ok": self.ok,
        }

    def problems(self) -> dict[str, list[str]]:
        f = self.findings
        named = {
            "lost": f.lost, "not dead-lettered": f.not_dead_lettered, "doubled": f.doubled,
            "wrongly rejected": f.wrongly_rejected, "unexpected": f.unexpected,
            "reordered": f.reordered, "read model vs simulation": f.model_mismatches,
            "rebuild differs": self.diffs, "resolver RPC": self.rpc_failures,
            "exited by themselves": self.exits, "no heartbeat": self.no_heartbeat,
            "not drained": self.not_drained,
            "restored system differs": self.restore.differences,
            "restored system appended": [f"{self.restore.new_events} events"]
            if self.restore.new_events else [],
        }  # fmt: skip
        return {name: items for name, items in named.items() if items}


def check_environment(config: FaultConfig) -> None:
    wrong = {k: os.environ.get(k) for k, v in config.env().items() if os.environ.get(k) != v}
    if wrong:
        raise RuntimeError(f"set these for the service processes first: {config.env()}; "
                           f"differing now: {wrong}")  # fmt: skip


async def register_catalog(
    client: aioredis.Redis, publisher: Publisher, ids: ProfileIds, items: list[Planned]
) -> None:
    for start in range(0, len(items), 500):
        await publisher.send(items[start : start + 500], ids)
    images = [i.key.removeprefix("reg-") for i in items]
    deadline = time.monotonic() + 60
    while not all(await registered(client, images)):
        if time.monotonic() > deadline:
            raise TimeoutError("the catalog registrations were not processed within 60s")
        await asyncio.sleep(0.1)


async def run_faults(
    config: FaultConfig, server: EmbeddedServer, data_dir: Path, say: Say = stderr
) -> FaultReport:
    """One whole fault run against ``server`` (started, owned by the caller, killable).

    ``REDIS_URL`` must name ``server`` and ``config.env()`` must be in os.environ: the
    service processes inherit both.
    """
    check_environment(config)
    if os.environ.get("REDIS_URL") != server.url:
        raise RuntimeError(f"REDIS_URL must be {server.url} for the service processes")
    settings = config.settings(server.url)
    started = time.monotonic()
    stack = Stack(data_dir, replicas=config.replicas, quiet=True, acl=config.acl)
    users = "each as its own ACL user" if config.acl else "without ACL users"
    say(f"starting {len(SERVICES)} services x {config.replicas} replicas on {server.url} "
        f"({users})...")  # fmt: skip
    await asyncio.to_thread(stack.start, 120.0)
    client = aioredis.Redis.from_url(server.url, socket_timeout=10, socket_connect_timeout=2)
    outside = aioredis.Redis.from_url(
        stack.publisher_url, socket_timeout=10, socket_connect_timeout=2
    )
    restored = RestoreReport()
    stop = asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    try:
        ledger = Ledger()
        ids = ProfileIds(client, config.partitions)
        publisher = Publisher(outside, config, ledger)
        catalog, registrations = make_catalog(config)
        say(f"registering {len(registrations)} images of {config.members} members...")
        await register_catalog(client, publisher, ids, registrations)
        generator = LoadGenerator(config, catalog, ids)
        injector = FaultInjector(stack, server, config, say)
        total = max(0, config.events - ledger.sent)
        say(f"publishing {total:,} messages at {config.rate:,.0f}/s while injecting "
            f"{config.faults} service kills and {config.server_restarts} server restart(s)...")  # fmt: skip
        publish_started = time.monotonic()
        watcher = asyncio.create_task(injector.watch(stop))
        await asyncio.gather(publisher.run(generator, ids, total, say), injector.run())
        publish_s = time.monotonic() - publish_started
        say("faults done; waiting until every service is alive again, then draining...")
        no_heartbeat = await injector.settle(120.0)
        behind = await drain(client, config, say)
        drain_s = time.monotonic() - publish_started - publish_s
        stop.set()
        await watcher
        await ids.scan()
        say("checking the log, the dead letters and the read models...")
        findings = await check(client, config, ledger, generator.members, ids)
        say("rebuilding every read model from the log and comparing with the live ones...")
        rebuild_started = time.monotonic()
        live = await active_generation(client)
        rebuilt = await rebuild(client, settings, quiet=True)
        verification = await verify(client, settings, live, rebuilt)
        rebuild_s = time.monotonic() - rebuild_started
        rpc = await rpc_answers(server.url, config, member_ids(config.members))
        exits = unexpected_exits(stack)
        no_heartbeat += await asyncio.to_thread(all_alive, stack, server.url)
        if config.restore:
            say("export -> import into an empty server -> start the services there...")
            restored = await restore_cycle(
                settings, server.url, member_ids(config.members), data_dir, say, config.acl
            )
    finally:
        stop.set()
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await client.aclose()
        await outside.aclose()
        await asyncio.to_thread(stack.stop)
    return FaultReport(
        config=config, ledger=ledger, findings=findings, faults=injector.log,
        diffs=verification.differences, compared=verification.compared,
        skipped=verification.skipped, seconds=time.monotonic() - started, publish_s=publish_s,
        drain_s=drain_s, rebuild_s=rebuild_s, not_drained=behind, rpc_failures=rpc,
        exits=injector.log.crashes + injector.log.exited_before_kill + exits,
        no_heartbeat=no_heartbeat,
        service_logs=service_log_findings(data_dir), restore=restored,
    )  # fmt: skip


def start_server(data_dir: Path) -> EmbeddedServer:
    """A killable server whose acknowledged writes survive kill -9 (fsync on every write)."""
    return EmbeddedServer(data_dir, appendfsync="always").start()
