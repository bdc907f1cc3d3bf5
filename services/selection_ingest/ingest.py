"""selection-ingest's application layer: validate, authorise, de-duplicate, order, append.

A batch of inbox entries of one partition is decided in memory against the members'
current states, then committed by one script that checks every state's version and every
idempotency key, appends the events and the dead letters, stores the new states,
acknowledges the entries and trims the inbox; then its new images become visible, and a
receipt is pushed for every message it can address.

Idempotency keys belong to a member: ``(member_id, idempotency_key)`` is appended once and
remembers the digest of the message it stood for, so a retry is a counted duplicate and a
*different* message under a used key is dead-lettered as ``KEY_REUSED``.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

import redis.asyncio as aioredis
from faststream.redis.parser import BinaryMessageFormatV1
from pydantic import ValidationError

from shared.adapters.catalog import CLAIM_IMAGE, catalog_entry, claim_args
from shared.adapters.store import APPEND_BATCH, text
from shared.deadletter import DeadLetter
from shared.domain import events as ev
from shared.domain.families import family_of
from shared.domain.member import (
    Context,
    ImageInfo,
    MemberState,
    Rejected,
    decide,
    evolve,
    needs,
    set_changes,
)
from shared.domain.receipt import Receipt, Status
from shared.keys import Partition, family_images, image_key, partition_of
from shared.settings import Settings

GROUP = "ingest"
CATALOG_CACHE = 500_000
MAX_ATTEMPTS = 20
HANDLE = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
KEY = re.compile(r"[ -~]{1,200}")
OVERSIZE = b"__oversize__"


@dataclass(frozen=True)
class InboxEntry:
    entry_id: str
    fields: dict[bytes, bytes]

    @property
    def raw(self) -> bytes:
        if OVERSIZE in self.fields:
            return self.fields[b"__prefix__"]
        for name in (b"data", b"__data__"):
            if name in self.fields:
                return self.fields[name]
        return json.dumps(
            {k.decode("latin-1"): v.decode("latin-1") for k, v in self.fields.items()}
        ).encode()

    def address(self) -> tuple[str, str] | None:
        """``(member_id, idempotency_key)`` if the entry names valid ones, even when it is
        otherwise rejected: where its receipt goes."""
        try:
            body = json.loads(self.raw)
        except (ValueError, RecursionError):
            return None
        if not isinstance(body, dict):
            return None
        member, key = body.get("member_id"), body.get("idempotency_key")
        if isinstance(member, str) and isinstance(key, str) and HANDLE.fullmatch(member):
            return (member, key) if KEY.fullmatch(key) else None
        return None


@dataclass(frozen=True)
class Decoded:
    """An inbox entry that parsed: its message, validated payload and digest."""

    entry: InboxEntry
    message: ev.Inbound
    payload: ev.Payload
    digest: str

    @property
    def member_id(self) -> str:
        return self.message.member_id

    @property
    def key(self) -> str:
        return self.message.idempotency_key

    @property
    def scope(self) -> tuple[str, str]:
        return self.message.member_id, self.message.idempotency_key

    @property
    def owner(self) -> str:
        """Who registers an image with this message (stored in the catalog entry)."""
        return f"{self.message.member_id}|{self.message.idempotency_key}"


def decode(entry: InboxEntry, partition: Partition, partitions: int, max_bytes: int) -> Decoded:
    """Parse and validate one inbox entry, or raise :class:`Rejected` saying why."""
    if OVERSIZE in entry.fields:
        size, _, sha1 = text(entry.fields[OVERSIZE]).split(" ")
        raise Rejected(
            "TOO_LARGE",
            f"the entry is {size} bytes; at most {max_bytes}. Only the first {len(entry.raw)} "
            f"bytes are kept, with the size and SHA-1 ({sha1}) of the whole",
            "data",
        )
    if b"data" not in entry.fields and b"__data__" not in entry.fields:
        names = sorted(k.decode("latin-1") for k in entry.fields)
        raise Rejected("MALFORMED", f"the entry has no 'data' field (fields: {names})", "data")
    raw = entry.raw
    if len(raw) > max_bytes:
        raise Rejected("TOO_LARGE", f"message is {len(raw)} bytes; at most {max_bytes}", "data")
    if raw.startswith(b"\x89BIN"):
        raw, _headers = BinaryMessageFormatV1.parse(raw)
    try:
        message = ev.Inbound.model_validate_json(raw)
    except ValidationError as error:
        raise _rejection(error) from None
    try:
        payload = message.typed_payload()
    except ValidationError as error:
        raise _rejection(error, "payload.") from None
    except ev.FieldError as error:
        raise Rejected("INVALID_FIELD", str(error), error.field) from None
    home = partition_of(message.member_id, partitions)
    if home != partition.index:
        raise Rejected(
            "WRONG_PARTITION",
            f"member {message.member_id!r} belongs to partition {home}, not {partition.index}; "
            f"publish to {Partition(home).inbox}",
            "member_id",
        )
    return Decoded(entry, message, payload, ev.request_digest(message.type, payload))


def _rejection(error: ValidationError, prefix: str = "") -> Rejected:
    first = error.errors(include_url=False)[0]
    where = prefix + ".".join(str(part) for part in first["loc"]) or "message"
    if first["type"] in ("json_invalid", "json_type"):
        return Rejected("MALFORMED", f"not a JSON object: {first['msg']}", "data")
    value = first.get("input")
    shown = repr(value)[:80] if not isinstance(value, dict) else "{...}"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return Rejected("INVALID_FIELD", f"{where}: {first['msg']}, got {shown}{more}", where)


@dataclass
class Plan:
    """What one batch appends: checked states and keys, events, dead letters, receipts."""

    expected: dict[str, int] = field(default_factory=dict)
    states: dict[str, MemberState] = field(default_factory=dict)
    idempotency: dict[str, str] = field(default_factory=dict)
    events: list[bytes] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    images: dict[str, tuple[Decoded, ev.ImageRegistered]] = field(default_factory=dict)
    sets: list[tuple[str, str, str]] = field(default_factory=list)
    receipts: list[tuple[str, str, int, int]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, amount: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + amount


@dataclass
class Loaded:
    """What a batch is decided against: member states, stored digests, catalog."""

    states: dict[str, MemberState]
    digests: dict[tuple[str, str], str]
    catalog: dict[str, ImageInfo]


class Ingest:
    """Turns inbox entries of one partition into log events, dead letters and receipts."""

    def __init__(self, client: aioredis.Redis, settings: Settings, partition: Partition) -> None:
        self.client = client
        self.settings = settings
        self.partition = partition
        self.rules = settings.rules()
        self.script = client.register_script(APPEND_BATCH)
        self.claim_script = client.register_script(CLAIM_IMAGE)
        self.known_images: dict[str, ImageInfo] = {}

    def new_profile_id(self) -> str:
        while True:
            candidate = "p" + secrets.token_hex(6)
            if partition_of(candidate, self.settings.partitions) == self.partition.index:
                return candidate

    async def process(self, entries: list[InboxEntry], deliveries: int = 1) -> dict[str, int]:
        decoded: list[Decoded] = []
        rejected: list[tuple[InboxEntry, Rejected]] = []
        for entry in entries:
            try:
                decoded.append(self._decode(entry))
            except Rejected as why:
                rejected.append((entry, why))
        for _ in range(MAX_ATTEMPTS):
            plan = await self._plan(decoded, deliveries)
            for entry, reason in rejected:
                self._reject(plan, entry, reason, deliveries, entry.address())
            if not await self._claim_images(plan.images):
                continue
            logged = await self._commit(plan, [entry.entry_id for entry in entries])
            if logged is not None:
                await self._publish_images(plan.images)
                await self._push_receipts(plan, logged)
                return plan.stats
        raise RuntimeError(f"{self.partition.inbox}: gave up after {MAX_ATTEMPTS} conflicts")

    def _decode(self, entry: InboxEntry) -> Decoded:
        settings = self.settings
        return decode(entry, self.partition, settings.partitions, settings.max_message_bytes)

    def _reject(
        self,
        plan: Plan,
        entry: InboxEntry,
        why: Rejected,
        deliveries: int,
        address: tuple[str, str] | None,
    ) -> None:
        plan.dead.append(self._dead(entry, why, deliveries))
        plan.count("rejected")
        if address is not None:
            receipt = Receipt(status="rejected", code=why.code, reason=why.message, field=why.field)
            self._receipt(plan, address, receipt, 0)

    def _receipt(self, plan: Plan, address: tuple[str, str], receipt: Receipt, events: int) -> None:
        """Push ``receipt`` with the entry IDs of the plan's last ``events`` events."""
        key = self.partition.receipt(*address)
        plan.receipts.append(
            (key, receipt.body_without_entries(), len(plan.events) - events, events)
        )

    def _dead(self, entry: InboxEntry, why: Rejected, deliveries: int) -> DeadLetter:
        extra: dict[str, Any] = {}
        if OVERSIZE in entry.fields:
            _, size, sha1 = text(entry.fields[OVERSIZE]).split(" ")
            extra = {"original_size": int(size), "original_sha1": sha1}
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
            **extra,
        )

    async def _plan(self, decoded: list[Decoded], deliveries: int) -> Plan:
        loaded = await self._load(decoded)
        states, digests = loaded.states, loaded.digests
        plan = Plan(expected={m: s.version for m, s in states.items()})
        now = ev.utcnow()
        for item in decoded:
            stored = digests.get(item.scope)
            if stored == item.digest:
                plan.count("duplicates")
                self._receipt(plan, item.scope, Receipt(status="duplicate"), 0)
                if isinstance(item.payload, ev.ImageRegistered):
                    plan.images[item.payload.image_id] = (item, item.payload)
                continue
            if stored is not None:
                self._reject(plan, item.entry, _reused(item, stored), deliveries, item.scope)
                continue
            state = states[item.member_id]
            catalog = _unless_own(loaded.catalog, item)
            try:
                context = Context(state, item.member_id, catalog, self.rules, self.new_profile_id)
                new_events = decide(item.payload, context)
            except Rejected as why:
                self._reject(plan, item.entry, why, deliveries, item.scope)
                continue
            state = self._append(plan, item, new_events, state, loaded.catalog, now)
            states[item.member_id] = plan.states[item.member_id] = state
            digests[item.scope] = item.digest
            key = self.partition.idempotency(item.member_id, item.key)
            plan.idempotency[key] = item.digest
            plan.count("accepted" if new_events else "ignored")
            plan.count("events", len(new_events))
            status: Status = "accepted" if new_events else "ignored"
            self._receipt(plan, item.scope, Receipt(status=status), len(new_events))
        return plan

    def _append(
        self,
        plan: Plan,
        item: Decoded,
        new_events: list[ev.Payload],
        state: MemberState,
        catalog: dict[str, ImageInfo],
        now: Any,
    ) -> MemberState:
        occurred = item.message.occurred_at or now
        for index, event in enumerate(new_events):
            event_id = item.key if index == len(new_events) - 1 else f"{item.key}#{index}"
            logged = ev.record(
                event, event_id=event_id, member_id=item.member_id, occurred_at=occurred,
                now=now, digest=item.digest,
            )  # fmt: skip
            plan.events.append(logged.to_bytes())
            before, state = state, evolve(state, event, self.rules)
            if isinstance(event, ev.ImageRegistered):
                plan.images[event.image_id] = (item, event)
                plan.sets.append((self.partition.unpublished, "add", event.image_id))
                catalog[event.image_id] = ImageInfo(item.member_id, event.model_version, item.owner)
            for name, change, value in set_changes(before, state):
                plan.sets.append((self.partition.member_set(name, item.member_id), change, value))
        return state

    async def _load(self, decoded: list[Decoded]) -> Loaded:
        if not decoded:
            return Loaded({}, {}, {})
        members = sorted({item.member_id for item in decoded})
        scopes = sorted({item.scope for item in decoded})
        wanted = {i for item in decoded for i in needs(item.payload).images}
        images = sorted(wanted - self.known_images.keys())
        part = self.partition
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.mget([part.member_state(m) for m in members])
            pipe.mget([part.idempotency(member, key) for member, key in scopes])
            for image in images:
                pipe.hmget(image_key(image), "creator", "version", "key", "pending")
            replies = await pipe.execute()
        states = {
            m: MemberState.from_bytes(raw) for m, raw in zip(members, replies[0], strict=True)
        }
        digests = {scope: text(raw) for scope, raw in zip(scopes, replies[1], strict=True) if raw}
        pending = await self._settled(
            self._cache_images(dict(zip(images, replies[2:], strict=True)))
        )
        catalog = {i: self.known_images[i] for i in wanted if i in self.known_images}
        return Loaded(await self._with_sets(states, decoded), digests, pending | catalog)

    async def _settled(self, claims: dict[str, ImageInfo]) -> dict[str, ImageInfo]:
        """Claims whose registration is in the log after all (its owner's idempotency key
        exists: a crash, or another partition's ingest, came between the append and the
        clearing of the claim) are registered images: clear them now. The rest stay
        pending."""
        if not claims:
            return {}
        owners = {
            image: info.registered_by.split("|", 1)
            for image, info in claims.items()
            if "|" in info.registered_by
        }
        async with self.client.pipeline(transaction=False) as pipe:
            for member, key in owners.values():
                pipe.exists(self._home(member).idempotency(member, key))
            logged = await pipe.execute()
        done = {image for image, flag in zip(owners, logged, strict=True) if flag}
        await self._publish(
            {image: claims[image].model_version for image in done},
            {image: self._home(owners[image][0]).unpublished for image in done},
        )
        for image in done:
            self.known_images[image] = replace(claims[image], pending=False)
        return {image: info for image, info in claims.items() if image not in done}

    def _cache_images(self, found: dict[str, list[Any]]) -> dict[str, ImageInfo]:
        """Remember registered images (they are immutable); return the claims that are
        still pending (not remembered: they are read again until their event is logged)."""
        if len(self.known_images) + len(found) > CATALOG_CACHE:
            self.known_images.clear()
        pending = {}
        for image, (creator, version, owner, claim) in found.items():
            if creator is None:
                continue
            info = ImageInfo(text(creator), text(version), text(owner), claim is not None)
            if info.pending:
                pending[image] = info
            else:
                self.known_images[image] = info
        return pending

    async def _with_sets(
        self, states: dict[str, MemberState], decoded: list[Decoded]
    ) -> dict[str, MemberState]:
        """The states, each knowing what its sets say about the profiles and images its
        messages name: which are deleted, which are liked."""
        asked: list[tuple[str, str, list[str]]] = []
        for member in sorted({item.member_id for item in decoded}):
            items = [item for item in decoded if item.member_id == member]
            asks = [needs(item.payload) for item in items]
            profiles = {p for ask in asks for p in ask.unknown_profiles(states[member])}
            images = {i for ask in asks for i in ask.likes}
            asked += [(member, "gone", sorted(profiles)), (member, "likes", sorted(images))]
        asked = [question for question in asked if question[2]]
        if not asked:
            return states
        async with self.client.pipeline(transaction=False) as pipe:
            for member, name, ids in asked:
                kind = "gone" if name == "gone" else "liked"
                pipe.smismember(self.partition.member_set(kind, member), ids)
            replies = await pipe.execute()
        for (member, name, ids), flags in zip(asked, replies, strict=True):
            found = frozenset(i for i, flag in zip(ids, flags, strict=True) if flag)
            states[member] = states[member].model_copy(update={name: found})
        return states

    async def _commit(self, plan: Plan, ack: list[str]) -> list[str] | None:
        """Run :data:`APPEND_BATCH`: a small header, then every event, dead letter and
        member state as an argument of its own (none of them is ever larger than about a
        message, so a server that caps arguments, ``proto-max-bulk-len``, accepts them)."""
        part = self.partition
        members = [[part.member_state(m), str(plan.expected[m])] for m in plan.states]
        header = {
            "members": members,
            "idempotency": [[key, digest] for key, digest in plan.idempotency.items()],
            "ttl": self.settings.idempotency_ttl_s,
            "events": len(plan.events),
            "dead": len(plan.dead),
            "dead_kept": self.settings.dead_letters_kept,
            "stats": [[name, count] for name, count in sorted(plan.stats.items())],
            "sets": [list(change) for change in plan.sets],
            "log": part.log,
            "dead_letters": part.dead_letters,
            "stats_key": part.stats,
            "inbox": part.inbox,
            "group": GROUP,
            "ack": ack,
        }
        args: list[Any] = [json.dumps(header), *plan.events]
        args += [letter.to_bytes() for letter in plan.dead]
        args += [state.to_bytes() for state in plan.states.values()]
        keys = [part.log, part.dead_letters, part.stats, part.inbox]
        keys += [m[0] for m in members] + list(plan.idempotency)
        keys += sorted({key for key, _, _ in plan.sets})
        reply: Any = await self.script(keys=keys, args=args)
        return [text(i) for i in reply[1:]] if text(reply[0]) == "ok" else None

    async def _push_receipts(self, plan: Plan, logged: list[str]) -> None:
        """Once the batch is in the log and its images are visible. A crash before this
        loses only receipts: their publishers send again and get ``duplicate``."""
        if not plan.receipts:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for key, body, first, count in plan.receipts:
                ids = json.dumps(logged[first : first + count])
                pipe.rpush(key, f'{body},"entry_ids":{ids}}}')
                pipe.expire(key, self.settings.receipt_ttl_s)
            await pipe.execute()

    async def _claim_images(self, images: dict[str, tuple[Decoded, ev.ImageRegistered]]) -> bool:
        """Claim every new image ID for the message that registers it, before its event is
        appended: only one message anywhere can win an ID (every partition shares the
        catalog). ``False`` if another message holds a claim: the batch is decided again,
        and that registration is then a ``DUPLICATE_IMAGE``."""
        if not images:
            return True
        async with self.client.pipeline(transaction=False) as pipe:
            for image_id, (item, event) in images.items():
                entry = catalog_entry(event, item.member_id, item.owner)
                await self.claim_script(
                    keys=[image_key(image_id)], args=claim_args(entry), client=pipe
                )
            owners = await pipe.execute()
        lost = [
            image_id
            for (image_id, (item, _)), owner in zip(images.items(), owners, strict=True)
            if text(owner) != item.owner
        ]
        for image_id in lost:
            self.known_images.pop(image_id, None)
        return not lost

    async def _publish_images(self, images: dict[str, tuple[Decoded, ev.ImageRegistered]]) -> None:
        versions = {image: event.model_version for image, (_, event) in images.items()}
        await self._publish(versions, dict.fromkeys(versions, self.partition.unpublished))

    async def republish(self, limit: int = 500) -> int:
        """Publish the images whose events are in this partition's log but that a crash
        kept from being published (between the commit and :meth:`_publish_images`); how
        many. Run now and then by every replica: publishing twice is harmless."""
        listed: Any = await self.client.srandmember(self.partition.unpublished, limit)
        ids = [text(i) for i in listed]
        if not ids:
            return 0
        async with self.client.pipeline(transaction=False) as pipe:
            for image_id in ids:
                pipe.hget(image_key(image_id), "version")
            versions = await pipe.execute()
        found = {i: text(v) for i, v in zip(ids, versions, strict=True) if v is not None}
        await self._publish(found, dict.fromkeys(ids, self.partition.unpublished))
        return len(ids)

    async def _publish(self, versions: dict[str, str], listed_in: dict[str, str]) -> None:
        """Once their events are in the log, images stop being claims: grids may show them,
        and they leave the sets (``listed_in``) that remember them until then."""
        if not versions and not listed_in:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for image_id, version in versions.items():
                pipe.hdel(image_key(image_id), "pending")
                family = family_of(version)
                if family is not None:
                    pipe.sadd(family_images(family), image_id)
            for image_id, key in listed_in.items():
                pipe.srem(key, image_id)
            await pipe.execute()

    def _home(self, member_id: str) -> Partition:
        return Partition(partition_of(member_id, self.settings.partitions))


def _reused(item: Decoded, stored: str) -> Rejected:
    return Rejected(
        "KEY_REUSED",
        f"idempotency key {item.key!r} of member {item.member_id!r} was used for a different "
        f"message (digest {stored}; this one {item.digest}); use a new key for a new message",
        "idempotency_key",
    )


def _unless_own(catalog: dict[str, ImageInfo], item: Decoded) -> dict[str, ImageInfo]:
    """The catalog as a registration sees it: without the image its own earlier, interrupted
    attempt (same member and idempotency key) already claimed."""
    if isinstance(item.payload, ev.ImageRegistered):
        known = catalog.get(item.payload.image_id)
        if known is not None and known.registered_by == item.owner:
            return {k: v for k, v in catalog.items() if k != item.payload.image_id}
    return catalog
