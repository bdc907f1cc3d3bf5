"""profile-projector's application layer: load what a batch touches, fold, commit at position."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import numpy as np
import redis.asyncio as aioredis

from shared.adapters.follower import Entry
from shared.adapters.store import APPLY_AT_POSITION
from shared.domain import events as ev
from shared.domain.projection import ProfileChange, Projection, images_needed, touched_profiles
from shared.domain.views import MemberView, ProfileModel
from shared.keys import Partition, image_key
from shared.settings import Settings
from shared.taste.prior import TastePrior

EMBEDDING_CACHE = 200_000


class EmbeddingCache:
    """Catalog embeddings by image ID. Images are immutable, so a cached one never goes stale."""

    def __init__(self, client: aioredis.Redis, limit: int = EMBEDDING_CACHE) -> None:
        self.client = client
        self.limit = limit
        self.vectors: dict[str, np.ndarray] = {}

    async def get_many(self, image_ids: Iterable[str]) -> Mapping[str, np.ndarray]:
        wanted = set(image_ids)
        missing = sorted(wanted - self.vectors.keys())
        if missing:
            async with self.client.pipeline(transaction=False) as pipe:
                for image_id in missing:
                    pipe.hget(image_key(image_id), "emb")
                replies = await pipe.execute()
            if len(self.vectors) + len(missing) > self.limit:
                self.vectors.clear()
            for image_id, raw in zip(missing, replies, strict=True):
                if raw is None:
                    raise LookupError(f"image {image_id!r} is in the log but not in the catalog")
                self.vectors[image_id] = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        return {image_id: self.vectors[image_id] for image_id in wanted}


def change_bytes(change: ProfileChange) -> bytes:
    fields = {**change.__dict__, "vector": ev.encode_vector(change.vector)}
    return json.dumps(fields, sort_keys=True).encode()


class Projector:
    """Folds one partition's log into one generation of read models."""

    def __init__(
        self,
        client: aioredis.Redis,
        settings: Settings,
        prior: TastePrior,
        generation: int,
        emit_changes: bool = True,
    ) -> None:
        self.client = client
        self.settings = settings
        self.prior = prior
        self.generation = generation
        self.emit_changes = emit_changes
        self.embeddings = EmbeddingCache(client)
        self.script = client.register_script(APPLY_AT_POSITION)
        self.thresholds = {"v6": settings.unlock_v6, "v7": settings.unlock_v7}

    def position_key(self, partition: Partition) -> str:
        return partition.read_model(self.generation).position

    async def apply(self, partition: Partition, position: str, entries: list[Entry]) -> bool:
        logged = [(entry_id, ev.LoggedEvent.from_bytes(f[b"event"])) for entry_id, f in entries]
        projection = await self._load(partition, [event for _, event in logged])
        for entry_id, event in logged:
            projection.fold(entry_id, event)
        projection.flush_learners()
        return await self._commit(partition, position, entries[-1][0], projection)

    async def _load(self, partition: Partition, events: list[ev.LoggedEvent]) -> Projection:
        keys = partition.read_model(self.generation)
        members = sorted({e.member_id for e in events})
        profiles = sorted({p for e in events for p in touched_profiles(e)})
        images = {i for e in events for i in images_needed(e)}
        async with self.client.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.get(keys.member(member))
            for profile in profiles:
                pipe.get(keys.profile(profile))
            replies = await pipe.execute()
        return Projection(
            members={
                m: MemberView.from_bytes(raw)
                for m, raw in zip(members, replies, strict=False)
                if raw is not None
            },
            profiles={
                p: ProfileModel.from_bytes(raw)
                for p, raw in zip(profiles, replies[len(members) :], strict=True)
                if raw is not None
            },
            prior=self.prior,
            thresholds=self.thresholds,
            embeddings=await self.embeddings.get_many(images),
        )

    async def _commit(
        self, partition: Partition, position: str, last: str, projection: Projection
    ) -> bool:
        keys = partition.read_model(self.generation)
        writes: dict[str, bytes] = {}
        for member_id in sorted(projection.dirty_members):
            writes[keys.member(member_id)] = projection.members[member_id].to_bytes()
        for profile_id, model in sorted(projection.profiles.items()):
            writes[keys.profile(profile_id)] = model.to_bytes()
        for code, view in sorted(projection.codes.items()):
            writes[keys.code(code)] = view.to_bytes()
        changes = (
            [change_bytes(c) for c in projection.changes.values()] if self.emit_changes else []
        )
        stream = partition.changes if self.emit_changes else keys.position
        result = await self.script(
            keys=[keys.position, stream, *writes],
            args=[position, last, len(changes), *writes.values(), *changes],
        )
        return bool(result)
