"""selection-ingest's application layer: validate, authorise, de-duplicate, order, append.

A batch of inbox entries of one partition is decided in memory against the members'
current states, then committed by one script that checks every state's version and every
idempotency key, appends the events and the dead letters, and stores the new states.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from faststream.redis.parser import BinaryMessageFormatV1
from pydantic import ValidationError

from shared.adapters.catalog import REGISTER_ONCE, catalog_entry, register_args
from shared.adapters.store import APPEND_BATCH, stored_state, text
from shared.deadletter import DeadLetter
from shared.domain import events as ev
from shared.domain.families import family_of
from shared.domain.member import ImageInfo, MemberState, Rejected, Rules, decide, evolve
from shared.keys import Partition, family_images, image_key, partition_of
from shared.settings import Settings

GROUP = "ingest"
MAX_MESSAGE_BYTES = 256 * 1024
CATALOG_CACHE = 500_000
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class InboxEntry:
    entry_id: str
    fields: dict[bytes, bytes]

    @property
    def raw(self) -> bytes:
        for name in (b"data", b"__data__"):
            if name in self.fields:
                return self.fields[name]
        return json.dumps(
            {k.decode("latin-1"): v.decode("latin-1") for k, v in self.fields.items()}
        ).encode()


def decode(
    entry: InboxEntry, partition: Partition, partitions: int
) -> tuple[ev.Inbound, ev.Payload]:
    """Parse and validate one inbox entry, or raise :class:`Rejected` saying why."""
    if b"data" not in entry.fields and b"__data__" not in entry.fields:
        names = sorted(k.decode("latin-1") for k in entry.fields)
        raise Rejected("MALFORMED", f"the entry has no 'data' field (fields: {names})", "data")
    raw = entry.raw
    if len(raw) > MAX_MESSAGE_BYTES:
        raise Rejected(
            "TOO_LARGE", f"message is {len(raw)} bytes; at most {MAX_MESSAGE_BYTES}", "data"
        )
    if raw.startswith(b"\x89BIN"):
        raw, _headers = BinaryMessageFormatV1.parse(raw)
    try:
        message = ev.Inbound.model_validate_json(raw)
        payload = message.typed_payload()
    except ValidationError as error:
        raise _rejection(error) from None
    except ValueError as error:
        raise Rejected("INVALID_FIELD", str(error), "schema_version") from None
    home = partition_of(message.member_id, partitions)
    if home != partition.index:
        raise Rejected(
            "WRONG_PARTITION",
            f"member {message.member_id!r} belongs to partition {home}, not {partition.index}; "
            f"publish to {Partition(home).inbox}",
            "member_id",
        )
    return message, payload


def _rejection(error: ValidationError) -> Rejected:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "message"
    if first["type"] in ("json_invalid", "json_type"):
        return Rejected("MALFORMED", f"not a JSON object: {first['msg']}", "data")
    value = first.get("input")
    shown = repr(value)[:80] if not isinstance(value, dict) else "{...}"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return Rejected("INVALID_FIELD", f"{where}: {first['msg']}, got {shown}{more}", where)


@dataclass
class Plan:
    """What one batch appends: checked states and keys, events, dead letters and counts."""

    expected: dict[str, int] = field(default_factory=dict)
    states: dict[str, MemberState] = field(default_factory=dict)
    idempotency: dict[str, str] = field(default_factory=dict)
    events: list[bytes] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    images: dict[str, tuple[str, ev.ImageRegistered, str]] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, amount: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + amount


class Ingest:
    """Turns inbox entries of one partition into log events and dead letters."""

    def __init__(self, client: aioredis.Redis, settings: Settings, partition: Partition) -> None:
        self.client = client
        self.settings = settings
        self.partition = partition
        self.rules = Rules(
            unlock={"v6": settings.unlock_v6, "v7": settings.unlock_v7},
            embed_dim=settings.embed_dim,
            grids_kept=settings.grids_kept,
        )
        self.script = client.register_script(APPEND_BATCH)
        self.register_once = client.register_script(REGISTER_ONCE)
        self.known_images: dict[str, ImageInfo] = {}

    def new_profile_id(self) -> str:
        while True:
            candidate = "p" + secrets.token_hex(6)
            if partition_of(candidate, self.settings.partitions) == self.partition.index:
                return candidate

    async def process(self, entries: list[InboxEntry], deliveries: int = 1) -> dict[str, int]:
        decoded: list[tuple[InboxEntry, ev.Inbound, ev.Payload]] = []
        rejected: list[DeadLetter] = []
        for entry in entries:
            try:
                message, payload = decode(entry, self.partition, self.settings.partitions)
            except Rejected as why:
                rejected.append(self._dead(entry, why, deliveries))
            else:
                decoded.append((entry, message, payload))
        for _ in range(MAX_ATTEMPTS):
            plan = await self._plan(decoded, deliveries)
            plan.dead[:0] = rejected
            plan.count("rejected", len(rejected))
            await self._register_images(plan.images)
            if await self._commit(plan, [entry.entry_id for entry in entries]):
                return plan.stats
        raise RuntimeError(f"{self.partition.inbox}: gave up after {MAX_ATTEMPTS} conflicts")

    def _dead(self, entry: InboxEntry, why: Rejected, deliveries: int) -> DeadLetter:
        return DeadLetter.of(
            entry.raw,
            service="selection-ingest",
            source=self.partition.inbox,
            entry_id=entry.entry_id,
            code=why.code,
            reason=why.message,
            field=why.field,
            deliveries=deliveries,
            at=ev.utcnow(),
        )

    async def _plan(
        self, decoded: list[tuple[InboxEntry, ev.Inbound, ev.Payload]], deliveries: int
    ) -> Plan:
        states, seen, catalog = await self._load(decoded)
        plan = Plan(expected={m: s.version for m, s in states.items()})
        now = ev.utcnow()
        for entry, message, payload in decoded:
            key = message.idempotency_key
            if key in seen:
                plan.count("duplicates")
                if isinstance(payload, ev.ImageRegistered):
                    plan.images[payload.image_id] = (message.member_id, payload, key)
                continue
            seen.add(key)
            state = states[message.member_id]
            try:
                new_events = decide(
                    state, payload, message.member_id, _unless_own(catalog, payload, key),
                    self.rules, self.new_profile_id,
                )  # fmt: skip
            except Rejected as why:
                plan.dead.append(self._dead(entry, why, deliveries))
                plan.count("rejected")
                continue
            occurred = message.occurred_at or now
            for index, event in enumerate(new_events):
                event_id = key if index == len(new_events) - 1 else f"{key}#{index}"
                logged = ev.record(
                    event, event_id=event_id, member_id=message.member_id,
                    occurred_at=occurred, now=now,
                )  # fmt: skip
                plan.events.append(logged.to_bytes())
                state = evolve(state, event, self.rules)
                if isinstance(event, ev.ImageRegistered):
                    plan.images[event.image_id] = (message.member_id, event, key)
                    catalog[event.image_id] = ImageInfo(message.member_id, event.model_version, key)
            states[message.member_id] = state
            plan.states[message.member_id] = state
            plan.idempotency[self.partition.idempotency(key)] = str(len(new_events))
            plan.count("accepted" if new_events else "ignored")
            plan.count("events", len(new_events))
        return plan

    async def _load(
        self, decoded: list[tuple[InboxEntry, ev.Inbound, ev.Payload]]
    ) -> tuple[dict[str, MemberState], set[str], dict[str, ImageInfo]]:
        members = sorted({message.member_id for _, message, _ in decoded})
        keys = sorted({message.idempotency_key for _, message, _ in decoded})
        if not decoded:
            return {}, set(), {}
        wanted = {i for _, _, payload in decoded for i in _images_of(payload)}
        images = sorted(wanted - self.known_images.keys())
        member_keys = [self.partition.member_state(m) for m in members]
        idem_keys = [self.partition.idempotency(k) for k in keys]
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.mget(member_keys)
            if idem_keys:
                pipe.mget(idem_keys)
            for image in images:
                pipe.hmget(image_key(image), "creator", "version", "key")
            replies = await pipe.execute()
        states = {
            member: stored_state(raw) for member, raw in zip(members, replies[0], strict=True)
        }
        flags = replies[1] if idem_keys else []
        seen = {key for key, flag in zip(keys, flags, strict=True) if flag is not None}
        found = {
            image: ImageInfo(text(creator), text(version), text(key))
            for image, (creator, version, key) in zip(
                images, replies[1 + bool(idem_keys) :], strict=True
            )
            if creator is not None
        }
        if len(self.known_images) + len(found) > CATALOG_CACHE:
            self.known_images.clear()
        self.known_images.update(found)
        catalog = {i: self.known_images[i] for i in wanted if i in self.known_images}
        return states, seen, catalog

    async def _commit(self, plan: Plan, ack: list[str]) -> bool:
        part = self.partition
        members = [
            [
                part.member_state(m),
                str(plan.expected[m]),
                str(state.version),
                state.model_dump_json(),
            ]
            for m, state in plan.states.items()
        ]
        body = {
            "ttl": self.settings.idempotency_ttl_s,
            "members": members,
            "idempotency": [[key, value] for key, value in plan.idempotency.items()],
            "events": [event.decode() for event in plan.events],
            "dead": [letter.to_bytes().decode() for letter in plan.dead],
            "stats": [[name, count] for name, count in sorted(plan.stats.items())],
            "log": part.log,
            "dead_letters": part.dead_letters,
            "stats_key": part.stats,
            "inbox": part.inbox,
            "group": GROUP,
            "ack": ack,
        }
        keys = [part.log, part.dead_letters, part.stats, part.inbox]
        keys += [m[0] for m in members] + list(plan.idempotency)
        reply = await self.script(keys=keys, args=[json.dumps(body)])
        return text(reply[0]) == "ok"

    async def _register_images(
        self, images: dict[str, tuple[str, ev.ImageRegistered, str]]
    ) -> None:
        """Write new images to the catalog before their events are appended: a crash in
        between leaves an image whose retried registration is recognised by its key."""
        if not images:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for image_id, (creator, event, key) in images.items():
                entry = catalog_entry(event, creator, key)
                await self.register_once(
                    keys=[image_key(image_id)], args=register_args(entry), client=pipe
                )
                family = family_of(event.model_version)
                if family is not None:
                    pipe.sadd(family_images(family), image_id)
            await pipe.execute()


def _unless_own(
    catalog: dict[str, ImageInfo], payload: ev.Payload, key: str
) -> dict[str, ImageInfo]:
    """The catalog as a registration sees it: without the image its own earlier, interrupted
    attempt (same idempotency key) already wrote."""
    if isinstance(payload, ev.ImageRegistered):
        known = catalog.get(payload.image_id)
        if known is not None and known.registered_by == key:
            return {k: v for k, v in catalog.items() if k != payload.image_id}
    return catalog


def _images_of(payload: ev.Payload) -> list[str]:
    if isinstance(payload, ev.ImageRegistered | ev.ImageLiked | ev.ImageUnliked):
        return [payload.image_id]
    if isinstance(payload, ev.GridServed):
        return list(payload.image_ids)
    if isinstance(payload, ev.PairRanked):
        return [payload.winner_image_id, payload.loser_image_id]
    return []
