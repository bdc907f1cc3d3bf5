"""The read models, stored: every key, encoding and cache behind :class:`ReadModels`.

Keys are ``shared.keys.ReadModelKeys`` (``pz:{pN}:rm:<generation>:...``) and catalog images
(``pz:img:<id>``, field ``emb``: a unit float32 vector); values are the views' canonical
JSON, priors as canonical JSON of their payload. :class:`KeyedReadModels` maps the port onto
keyed values; :class:`RedisReadModels` stores them in Redis (one MGET per partition, each
partition one cluster slot, all in one round trip), :class:`InMemoryReadModels` in dicts.
Both cache catalog embeddings and priors: images and priors (by model ID) never change.
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

import numpy as np
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from shared.domain.partitions import partition_of
from shared.domain.ports import Found
from shared.domain.projection import Changed
from shared.domain.views import (
    CodeView,
    MemberCode,
    MemberDeletion,
    MemberView,
    PriorView,
    ProfileModel,
    View,
    canonical_json,
)
from shared.keys import ACTIVE_GENERATION, Partition, ReadModelKeys, image_key
from shared.settings import Settings
from shared.taste.learner import TasteLearner
from shared.taste.prior import TastePrior

from .generation import FIRST, read_generation
from .store import text

EMBEDDINGS_CACHED = 200_000
PRIORS_CACHED = 64
CHUNK = 1000
UNINFORMED = ""

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T", bound=View)

APPLY_AT_POSITION = """
-- KEYS: position, changes stream (the position again to emit none), view keys (v of them)
-- ARGV: expected position, new position, c changes, v values, c changes
local current = redis.call('GET', KEYS[1]) or '0-0'
if current ~= ARGV[1] then return 0 end
local v = #KEYS - 2
local c = tonumber(ARGV[3])
for i = 1, v do redis.call('SET', KEYS[2 + i], ARGV[3 + i]) end
for i = 1, c do redis.call('XADD', KEYS[2], '*', 'change', ARGV[3 + v + i]) end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


MODELS: tuple[tuple[Callable[[ReadModelKeys, str], str], type[View]], ...] = (
    (ReadModelKeys.member, MemberView),
    (ReadModelKeys.profile, ProfileModel),
    (ReadModelKeys.code, CodeView),
)  # what :meth:`KeyedReadModels.read` reads, in the order of :class:`Found`'s fields


@dataclass(frozen=True)
class Writes:
    """What one commit stores in a partition: ``values`` by key, the profile changes to emit
    (None: emit none), and the position it moves from ``position`` to ``last``."""

    partition: int
    position: str
    last: str
    values: Mapping[str, bytes]
    changes: Sequence[bytes] | None


class LruCache(Generic[K, V]):
    """At most ``limit`` values; the least recently used goes first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.values: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self.values)

    def get(self, key: K) -> V | None:
        value = self.values.get(key)
        if value is not None:
            self.values.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self.values[key] = value
        self.values.move_to_end(key)
        while len(self.values) > self.limit:
            self.values.popitem(last=False)


def decode_embedding(stored: bytes) -> np.ndarray:
    """A catalog image's ``emb`` field (little-endian float32) as float64."""
    return np.frombuffer(stored, dtype="<f4").astype(np.float64)


def prior_bytes(prior: TastePrior) -> bytes:
    return canonical_json(prior.to_payload())


def prior_from_bytes(stored: bytes) -> TastePrior:
    return TastePrior.from_payload(json.loads(stored))


def stored_values(keys: ReadModelKeys, changed: Changed) -> dict[str, bytes]:
    """Every model a batch changed, in its stored form, by its key."""
    values: dict[str, bytes] = {}
    for member_id, member in changed.members.items():
        values[keys.member(member_id)] = member.to_bytes()
    for profile_id, model in changed.profiles.items():
        values[keys.profile(profile_id)] = model.to_bytes()
    for code, view in changed.codes.items():
        values[keys.code(code)] = view.to_bytes()
    for entry in changed.member_codes:
        values[keys.member_code(entry.member_id, entry.index)] = entry.to_bytes()
    for deletion in changed.deletions:
        values[keys.member_deletion(deletion.member_id, deletion.index)] = deletion.to_bytes()
    for model_id, prior in changed.priors.items():
        values[keys.prior(model_id)] = prior_bytes(prior)
    if changed.current_prior is not None:
        values[keys.current_prior] = changed.current_prior.to_bytes()
    return values


class KeyedReadModels(ABC):
    """The port over keyed values: which model is at which key, in which encoding. Copies
    made by :meth:`at` share the store and the caches."""

    def __init__(self, settings: Settings, generation: int = FIRST) -> None:
        self.partitions = settings.partitions
        self.generation = generation
        self.uninformed = TastePrior.uninformed(settings.embed_dim)
        self.cached_embeddings: LruCache[str, np.ndarray] = LruCache(EMBEDDINGS_CACHED)
        self.cached_priors: LruCache[str, TastePrior] = LruCache(PRIORS_CACHED)

    def at(self, generation: int) -> Self:
        other = copy.copy(self)
        other.generation = generation
        return other

    def keys(self, partition: int) -> ReadModelKeys:
        return Partition(partition).read_model(self.generation)

    def position_key(self, partition: int) -> str:
        return self.keys(partition).position

    async def position(self, partition: int) -> str:
        [stored] = await self.values([(partition, self.position_key(partition))])
        return text(stored) or "0-0"

    async def read(
        self,
        *,
        members: Iterable[str] = (),
        profiles: Iterable[str] = (),
        codes: Iterable[str] = (),
        partition: int | None = None,
    ) -> Found:
        names = [sorted(set(members)), sorted(set(profiles)), sorted(set(codes))]
        located = []
        for (key, _), ids in zip(MODELS, names, strict=True):
            for name in ids:
                where = partition_of(name, self.partitions) if partition is None else partition
                located.append((where, key(self.keys(where), name)))
        stored = await self.values(located)
        found: list[dict[str, Any]] = []
        for (_, view), ids in zip(MODELS, names, strict=True):
            values, stored = stored[: len(ids)], stored[len(ids) :]
            found.append(
                {name: view.from_bytes(raw) for name, raw in zip(ids, values, strict=True) if raw}
            )
        return Found(*found)

    async def member_codes(self, member: MemberView) -> list[CodeView]:
        home = partition_of(member.member_id, self.partitions)
        keys = self.keys(home)
        numbered = reversed(range(member.codes_minted))
        entry_keys = [keys.member_code(member.member_id, i) for i in numbered]
        entries = await self._views(home, MemberCode, entry_keys)
        return await self._views(home, CodeView, [keys.code(e.code) for e in entries])

    async def deletions(self, member: MemberView) -> list[MemberDeletion]:
        home = partition_of(member.member_id, self.partitions)
        keys = self.keys(home)
        numbered = range(member.profiles_deleted)
        deletion_keys = [keys.member_deletion(member.member_id, i) for i in numbered]
        return await self._views(home, MemberDeletion, deletion_keys)

    async def _views(self, partition: int, view: type[T], keys: Sequence[str]) -> list[T]:
        """The views at ``keys`` that exist, in order."""
        found = await self.values([(partition, key) for key in keys])
        return [view.from_bytes(stored) for stored in found if stored is not None]

    async def current_prior(self, partition: int) -> str:
        [stored] = await self.values([(partition, self.keys(partition).current_prior)])
        return PriorView.from_bytes(stored).model_id if stored else UNINFORMED

    async def priors(self, partition: int, model_ids: Iterable[str]) -> dict[str, TastePrior]:
        wanted = set(model_ids) - {UNINFORMED}
        cached = {i: self.cached_priors.get(i) for i in wanted}
        found = {i: prior for i, prior in cached.items() if prior is not None}
        missing = sorted(wanted - found.keys())
        keys = self.keys(partition)
        stored = await self.values([(partition, keys.prior(m)) for m in missing])
        for model_id, raw in zip(missing, stored, strict=True):
            if raw is None:
                raise LookupError(f"prior {model_id} is not projected in {keys.base}")
            found[model_id] = prior_from_bytes(raw)
            self.cached_priors.put(model_id, found[model_id])
        return {UNINFORMED: self.uninformed, **found}

    async def learner(self, partition: int, profile_id: str | None) -> TasteLearner:
        found = await self.read(profiles=[profile_id] if profile_id else [], partition=partition)
        model = found.profiles.get(profile_id) if profile_id else None
        prior_id = model.prior if model else await self.current_prior(partition)
        prior = (await self.priors(partition, [prior_id]))[prior_id]
        return model.learner(prior) if model else TasteLearner(prior)

    async def learners(self, partition: int) -> list[TasteLearner]:
        keys = await self.scan(self.keys(partition).profile(""))
        stored = await self.values([(partition, key) for key in keys])
        models = [ProfileModel.from_bytes(raw) for raw in stored if raw is not None]
        learned = [model for model in models if model.state]
        priors = await self.priors(partition, {model.prior for model in learned})
        return [model.learner(priors[model.prior]) for model in learned]

    async def embeddings(self, image_ids: Iterable[str]) -> dict[str, np.ndarray]:
        wanted = set(image_ids)
        cached = {i: self.cached_embeddings.get(i) for i in wanted}
        found = {i: vector for i, vector in cached.items() if vector is not None}
        missing = sorted(wanted - found.keys())
        for image_id, stored in zip(missing, await self.stored_embeddings(missing), strict=True):
            if stored is None:
                raise LookupError(f"image {image_id!r} is in the log but not in the catalog")
            found[image_id] = decode_embedding(stored)
            self.cached_embeddings.put(image_id, found[image_id])
        return found

    async def catalog_sample(self, limit: int) -> np.ndarray:
        image_ids = sorted(await self.catalog_images(limit))
        stored = await self.stored_embeddings(image_ids)
        rows = [decode_embedding(raw) for raw in stored if raw]
        if not rows:
            raise ValueError("the catalog is empty: register images first")
        return np.stack(rows)

    async def snapshot(self, partition: int) -> dict[str, bytes]:
        keys = self.keys(partition)
        found = [key for key in await self.scan(f"{keys.base}:") if key != keys.position]
        stored = await self.values([(partition, key) for key in found])
        return {
            key[len(keys.base) :]: raw
            for key, raw in zip(found, stored, strict=True)
            if raw is not None
        }

    async def commit(
        self, partition: int, position: str, last: str, changed: Changed, emit_changes: bool
    ) -> bool:
        values = stored_values(self.keys(partition), changed)
        changes = [c.to_bytes() for c in changed.profile_changes] if emit_changes else None
        if not await self.apply(Writes(partition, position, last, values, changes)):
            return False
        for model_id, prior in changed.priors.items():
            self.cached_priors.put(model_id, prior)
        return True

    async def values(self, keys: Sequence[tuple[int, str]]) -> list[bytes | None]:
        """The values of (partition, key) pairs, in order, read in batches of one partition."""
        batches: list[list[int]] = []
        by_partition: dict[int, list[int]] = defaultdict(list)
        for index, (partition, _) in enumerate(keys):
            by_partition[partition].append(index)
        for indexes in by_partition.values():
            batches += [indexes[i : i + CHUNK] for i in range(0, len(indexes), CHUNK)]
        found: list[bytes | None] = [None] * len(keys)
        replies = await self.get([[keys[i][1] for i in batch] for batch in batches])
        for batch, reply in zip(batches, replies, strict=True):
            for index, stored in zip(batch, reply, strict=True):
                found[index] = stored
        return found

    @abstractmethod
    async def active_generation(self) -> int: ...

    @abstractmethod
    async def get(self, batches: Sequence[Sequence[str]]) -> list[list[bytes | None]]:
        """The values of each batch of keys (each batch in one partition)."""

    @abstractmethod
    async def scan(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix``, sorted."""

    @abstractmethod
    async def stored_embeddings(self, image_ids: Sequence[str]) -> list[bytes | None]: ...

    @abstractmethod
    async def catalog_images(self, limit: int) -> list[str]:
        """Up to ``limit`` image IDs of the catalog."""

    @abstractmethod
    async def apply(self, writes: Writes) -> bool:
        """Store ``writes`` if the position is still the one they were made at."""


async def apply_at_position(
    script: AsyncScript, position_key: str, changes_stream: str | None, writes: Writes
) -> bool:
    """Run :data:`APPLY_AT_POSITION`: every value and change, and the new position, or none."""
    stream = changes_stream or position_key  # a key of the same slot; nothing is added to it
    changes = writes.changes or []
    result = await script(
        keys=[position_key, stream, *writes.values],
        args=[writes.position, writes.last, len(changes), *writes.values.values(), *changes],
    )
    return bool(result)


class RedisReadModels(KeyedReadModels):
    """The read models in Redis (or a Redis Cluster: each batch is one partition's slot)."""

    def __init__(self, client: aioredis.Redis, settings: Settings, generation: int = FIRST) -> None:
        super().__init__(settings, generation)
        self.client = client
        self.script = client.register_script(APPLY_AT_POSITION)

    async def active_generation(self) -> int:
        return await read_generation(self.client)

    async def get(self, batches: Sequence[Sequence[str]]) -> list[list[bytes | None]]:
        if len(batches) <= 1:  # no pipeline for a single command
            found: list[Any] = [await self.client.mget(batch) for batch in batches]
            return found
        async with self.client.pipeline(transaction=False) as pipe:
            for batch in batches:
                pipe.mget(batch)
            return list(await pipe.execute())

    async def scan(self, prefix: str) -> list[str]:
        found = self.client.scan_iter(match=f"{prefix}*", count=CHUNK)
        return sorted([text(key) async for key in found])

    async def stored_embeddings(self, image_ids: Sequence[str]) -> list[bytes | None]:
        found: list[bytes | None] = []
        for start in range(0, len(image_ids), CHUNK):
            async with self.client.pipeline(transaction=False) as pipe:
                for image_id in image_ids[start : start + CHUNK]:
                    pipe.hget(image_key(image_id), "emb")
                found += await pipe.execute()
        return found

    async def catalog_images(self, limit: int) -> list[str]:
        found: list[str] = []
        async for key in self.client.scan_iter(match=image_key("*"), count=CHUNK):
            found.append(text(key).removeprefix(image_key("")))
            if len(found) >= limit:
                break
        return found

    async def apply(self, writes: Writes) -> bool:
        stream = Partition(writes.partition).changes if writes.changes is not None else None
        return await apply_at_position(
            self.script, self.position_key(writes.partition), stream, writes
        )


class InMemoryReadModels(KeyedReadModels):
    """The read models in dicts, under the keys and in the encodings Redis has: for fast tests
    of the application layer. ``catalog`` holds images' stored embeddings by ID, ``changes``
    each partition's emitted profile changes."""

    def __init__(self, settings: Settings, generation: int = FIRST) -> None:
        super().__init__(settings, generation)
        self.stored: dict[str, bytes] = {}
        self.catalog: dict[str, bytes] = {}
        self.changes: dict[int, list[bytes]] = defaultdict(list)

    def activate(self, generation: int) -> None:
        """Make ``generation`` the active one (what a replay's switch does)."""
        self.stored[ACTIVE_GENERATION] = str(generation).encode()

    async def active_generation(self) -> int:
        return int(text(self.stored.get(ACTIVE_GENERATION)) or FIRST)

    async def get(self, batches: Sequence[Sequence[str]]) -> list[list[bytes | None]]:
        return [[self.stored.get(key) for key in batch] for batch in batches]

    async def scan(self, prefix: str) -> list[str]:
        return sorted(key for key in self.stored if key.startswith(prefix))

    async def stored_embeddings(self, image_ids: Sequence[str]) -> list[bytes | None]:
        return [self.catalog.get(image_id) for image_id in image_ids]

    async def catalog_images(self, limit: int) -> list[str]:
        return sorted(self.catalog)[:limit]

    async def apply(self, writes: Writes) -> bool:
        key = self.position_key(writes.partition)
        if (text(self.stored.get(key)) or "0-0") != writes.position:
            return False
        self.stored |= writes.values
        self.changes[writes.partition] += writes.changes or []
        self.stored[key] = writes.last.encode()
        return True
