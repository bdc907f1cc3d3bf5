"""The load of a fault run, and what it must leave behind.

A seeded load generator: members who pick from grids, like and rank images, toggle, set
versions and defaults, create, rename and delete profiles, plus a known share of invalid
messages (which must be dead-lettered) and of exact re-sends (which must not double). Each
member's stream is simulated client-side, so the harness knows which keys must be accepted
and what every member's state and profiles must end up as (:meth:`MemberSim.expected`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.adapters.catalog import registered
from shared.domain import events as ev
from shared.domain.events import LoggedEvent
from shared.domain.families import family_of
from shared.domain.member import (
    Context,
    ImageInfo,
    MemberState,
    NewId,
    ProfileState,
    Rejected,
    Rules,
    decide,
    evolve,
)
from shared.keys import all_partitions, partition_for

from .config import FaultConfig, Say

REF = "@ref:"
TOKEN = re.compile(rb"bad-[A-Za-z0-9_.-]+")
"""What every invalid message carries (as its key, or in its bytes): its dead letter's key."""
V7_VERSIONS = ("7", "8", "8.1")
V6_VERSIONS = ("6.1", "6")
EXTREME_SCALES = (1e-170, 1e170)
"""Valid but extreme embeddings (each member's first images): a plain norm under- or
overflows on them; the catalog must still hold their unit vectors, and grids, picks and
replays must handle them like any other."""


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

    def data(self, ids: dict[str, str]) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(_resolve(self.body, ids)).encode()

    def payload(self) -> ev.Payload:
        """The typed payload, with the refs themselves for profile IDs (the simulation's)."""
        assert isinstance(self.body, dict), "only valid messages are simulated"
        return ev.Inbound.model_validate(_resolve(self.body, None)).typed_payload()


def _resolve(value: Any, ids: dict[str, str] | None) -> Any:
    """``value`` with every ``@ref:<ref>`` replaced by ``ids[ref]`` (by ``ref`` without ids)."""
    if isinstance(value, str) and value.startswith(REF):
        ref = value[len(REF) :]
        return ref if ids is None else ids[ref]
    if isinstance(value, dict):
        return {k: _resolve(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, ids) for v in value]
    return value


@dataclass
class Catalog:
    """The images every member registered up front, as ingest sees them."""

    images: dict[str, ImageInfo] = field(default_factory=dict)

    def pool(self, family: str) -> list[str]:
        return [i for i, info in self.images.items() if info.family == family]


class MemberSim:
    """One member's seeded message stream, and the state ingest must end up with for it.

    The state is the domain's own :class:`MemberState`: a message taken for sending is
    decided and folded with ingest's ``decide`` and ``evolve`` (so what was never sent never
    counts, and a message the rules would reject is a bug of the load, raised at once).
    Profiles are named by *refs*: ``global:v7`` or the idempotency key of the message that
    created them; the IDs ingest assigns are learned from the log before a message that
    names a profile is sent.
    """

    ACTIONS = (
        ("grid", 40), ("like", 10), ("unlike", 3), ("pair", 12), ("toggle", 3),
        ("version", 2), ("defaults", 2), ("create", 4), ("rename", 3), ("delete", 1),
        ("register", 1),
    )  # fmt: skip

    def __init__(
        self, member: str, seed: int, catalog: Catalog, config: FaultConfig, rules: Rules
    ) -> None:
        self.member = member
        self.rng = random.Random(f"{seed}/{member}")
        self.catalog = catalog
        self.config = config
        self.rules = rules
        self.state = MemberState()
        self.deleted: dict[str, ProfileState] = {}
        self.counter = 0
        self.queue: list[Planned] = []
        self.sent: list[Planned] = []
        self.head: Planned | None = None
        self.pools = {f: catalog.pool(f) for f in ("v6", "v7")}
        self.others = [i for i, info in catalog.images.items() if info.creator != member]

    def peek(self) -> Planned:
        if self.head is None:
            self.head = self._next()
        return self.head

    def pop(self) -> Planned:
        head = self.peek()
        self.head = None
        if head.kind == "valid":
            self.sent.append(head)
            self._fold(head)
        return head

    def _fold(self, item: Planned) -> None:
        """Decide ``item`` and fold what it appends, as ingest must."""
        payload = item.payload()
        try:
            appended = self._decide(payload, item.key)
        except Rejected as error:
            raise RuntimeError(f"the load planned {item.key}, which the rules reject: "
                               f"{error.code}: {error.message}") from error  # fmt: skip
        for event in appended:
            if isinstance(event, ev.ProfileDeleted):
                self.deleted[event.profile_id] = self.state.profiles[event.profile_id]
            self.state = evolve(self.state, event, self.rules)

    def _decide(self, payload: ev.Payload, key: str) -> list[ev.Payload]:
        """``decide`` with refs for the IDs of new profiles: ``global:<family>`` for a
        Global Profile, ``key`` (the creating message's) for one a member creates. A first
        (pure) decision tells which profiles the message creates, the second names them."""
        probed = decide(payload, self._context(lambda: "new"))
        refs = [
            f"global:{event.family}" if event.is_global else key
            for event in probed
            if isinstance(event, ev.ProfileCreated)
        ]
        if not refs:
            return probed
        names = iter(refs)
        return decide(payload, self._context(lambda: next(names)))

    def _context(self, new_id: NewId) -> Context:
        return Context(self.state, self.member, self.catalog.images, self.rules, new_id)

    @property
    def liked(self) -> frozenset[str]:
        return self.state.likes

    def expected(self, known: dict[str, str]) -> dict[str, Any]:
        """What the member's state must be once everything sent is processed; profiles by
        the IDs ingest gave them (``known``: ref -> ID) as (picks, name, deleted, global,
        family)."""
        profiles = [(p, False) for p in self.state.profiles.values()]
        profiles += [(p, True) for p in self.deleted.values()]
        return {
            "personalization": self.state.personalization,
            "default_version": self.state.default_version,
            "defaults": [known.get(ref, ref) for ref in self.state.defaults],
            "profiles": {
                known.get(p.profile_id, p.profile_id): (
                    p.ratings,
                    p.name,
                    deleted,
                    p.is_global,
                    p.family,
                )
                for p, deleted in profiles
            },
        }

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

    def _msg(self, type_: str, payload: dict[str, Any], needs: Iterable[str] = ()) -> Planned:
        key = self._key(type_)
        body = {"type": type_, "schema_version": 1, "idempotency_key": key,
                "member_id": self.member, "payload": payload}  # fmt: skip
        return Planned(self.member, "valid", key, type_, body, tuple(needs))

    def _action(self) -> list[Planned]:
        names, weights = zip(*self.ACTIONS, strict=True)
        action = self.rng.choices(names, weights)[0]
        handler: Callable[[], list[Planned]] = getattr(self, f"_{action}")
        return handler()

    def _live(self, custom_only: bool = False) -> list[str]:
        return [ref for ref, p in self.state.profiles.items() if not (custom_only and p.is_global)]

    def _grid(self) -> list[Planned]:
        customs = self._live(custom_only=True)
        target = self.rng.choice(customs) if customs and self.rng.random() < 0.3 else None
        family = (
            self.state.profiles[target].family if target else family_of(self.state.default_version)
        )
        assert family is not None
        images = self.rng.sample(self.pools[family], self.rng.randint(6, 9))
        grid_id = f"{self.member}-g{self.counter}"
        payload: dict[str, Any] = {"grid_id": grid_id, "image_ids": images}
        if target:
            payload["profile_id"] = REF + target
        messages = [self._msg("GridServed", payload, [target] if target else [])]
        for image in self.rng.sample(images, self.rng.randint(1, 3)):
            messages.append(self._msg("ImagePicked", {"grid_id": grid_id, "image_id": image}))
        return messages

    def _like(self) -> list[Planned]:
        candidates = [i for i in self.others if i not in self.liked]
        if not candidates:
            return []
        return [self._msg("ImageLiked", {"image_id": self.rng.choice(candidates)})]

    def _unlike(self) -> list[Planned]:
        if not self.liked:
            return []
        return [self._msg("ImageUnliked", {"image_id": self.rng.choice(sorted(self.liked))})]

    def _pair(self) -> list[Planned]:
        family = "v7" if self.rng.random() < 0.7 else "v6"
        winner, loser = self.rng.sample(self.pools[family], 2)
        return [self._msg("PairRanked", {"winner_image_id": winner, "loser_image_id": loser})]

    def _toggle(self) -> list[Planned]:
        return [self._msg("PersonalizationToggled", {"enabled": self.rng.random() < 0.5})]

    def _version(self) -> list[Planned]:
        version = self.rng.choice(V7_VERSIONS * 2 + V6_VERSIONS)
        return [self._msg("DefaultVersionSet", {"version": version})]

    def _defaults(self) -> list[Planned]:
        live = self._live()
        chosen = self.rng.sample(live, min(len(live), self.rng.randint(0, 3)))
        payload = {"profile_ids": [REF + r for r in chosen]}
        return [self._msg("DefaultProfilesSelected", payload, chosen)]

    def _create(self) -> list[Planned]:
        family = family_of(self.state.default_version)
        assert family is not None
        base = self.state.global_profile(family)
        if base is None or base.ratings < self.rules.unlock[family] or len(self._live(True)) >= 6:
            return []
        return [self._msg("ProfileCreated", {"name": f"{self.member} style {self.counter}"})]

    def _rename(self) -> list[Planned]:
        live = self._live()
        if not live:
            return []
        ref = self.rng.choice(live)
        payload = {"profile_id": REF + ref, "name": f"renamed {self.member} {self.counter}"}
        return [self._msg("ProfileRenamed", payload, [ref])]

    def _delete(self) -> list[Planned]:
        customs = self._live(custom_only=True)
        if len(customs) < 2:
            return []
        ref = self.rng.choice(customs)
        return [self._msg("ProfileDeleted", {"profile_id": REF + ref}, [ref])]

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
            catalog.images[image] = ImageInfo(member, version)
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
        rules = config.settings("redis://unused").rules()
        self.members = [
            MemberSim(m, config.seed, catalog, config, rules) for m in member_ids(config.members)
        ]
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


async def register_catalog(
    client: aioredis.Redis, publisher: Publisher, ids: ProfileIds, items: list[Planned]
) -> None:
    """Publish the catalog's registrations and wait until every image is visible."""
    for start in range(0, len(items), 500):
        await publisher.send(items[start : start + 500], ids)
    images = [i.key.removeprefix("reg-") for i in items]
    deadline = time.monotonic() + 60
    while not all(await registered(client, images)):
        if time.monotonic() > deadline:
            raise TimeoutError("the catalog registrations were not processed within 60s")
        await asyncio.sleep(0.1)
