"""profile-projector's application layer: load what a batch touches, fold, commit at position."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from shared.adapters.follower import Entry
from shared.adapters.store import APPLY_AT_POSITION, text
from shared.domain import events as ev
from shared.domain.projection import Changed, Views, reads
from shared.domain.views import MemberView, PriorView, ProfileModel, canonical_json
from shared.keys import ACTIVE_GENERATION, Partition, image_key
from shared.settings import Settings
from shared.taste.learner import TasteLearner
from shared.taste.prior import TastePrior

EMBEDDING_CACHE = 200_000
WARM_LIMIT = 50_000


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


@dataclass
class Warm:
    """What one partition's read models hold after this process's last commit there.

    Valid only while the stored position is the one that commit wrote: then no one else
    has written the partition since, and the batch need not read those models again.
    """

    position: str
    current_prior: str | None = None
    members: dict[str, MemberView] = field(default_factory=dict)
    profiles: dict[str, ProfileModel] = field(default_factory=dict)
    learners: dict[str, TasteLearner] = field(default_factory=dict)

    def small(self) -> bool:
        return len(self.members) + len(self.profiles) < WARM_LIMIT

    def advanced(self, position: str, views: Views, changed: Changed) -> Warm:
        """What the models hold once ``changed`` is committed at ``position``."""
        self.members.update(changed.members)
        self.profiles.update(changed.profiles)
        for profile_id, learner in views.written_learners.items():
            if learner is None:
                self.learners.pop(profile_id, None)
            else:
                self.learners[profile_id] = learner
        return Warm(position, views.current_prior, self.members, self.profiles, self.learners)


class Projector:
    """Folds one partition's log into one generation of read models."""

    def __init__(
        self,
        client: aioredis.Redis,
        settings: Settings,
        prior: TastePrior,
        generation: int,
        emit_changes: bool = True,
        follow_active: bool = False,
    ) -> None:
        self.client = client
        self.settings = settings
        self.priors: dict[str, TastePrior] = {"": prior}
        self.generation = generation
        self.emit_changes = emit_changes
        self.follow_active = follow_active
        self.embeddings = EmbeddingCache(client)
        self.script = client.register_script(APPLY_AT_POSITION)
        self.thresholds = {"v6": settings.unlock_v6, "v7": settings.unlock_v7}
        self.warm: dict[int, Warm] = {}

    def position_key(self, partition: Partition) -> str:
        return partition.read_model(self.generation).position

    async def apply(self, partition: Partition, position: str, entries: list[Entry]) -> bool:
        if self.follow_active and await self._generation_moved():
            return False
        warm = self.warm.pop(partition.index, None)
        if warm is None or warm.position != position or not warm.small():
            warm = Warm(position)
        logged = []
        for entry_id, fields in entries:
            event = ev.LoggedEvent.from_bytes(fields[b"event"])
            logged.append((entry_id, event, event.typed_payload()))
        views = await self._load(partition, logged, warm)
        for entry_id, event, payload in logged:
            views = views.fold(entry_id, event, payload)
        last = entries[-1][0]
        changed = views.changed()
        committed = await self._commit(partition, position, last, changed)
        if committed:
            self.priors.update(changed.priors)
            self.warm[partition.index] = warm.advanced(last, views, changed)
        return committed

    async def _generation_moved(self) -> bool:
        """After a replay switched generations, continue in the new one from its position."""
        active = int(text(await self.client.get(ACTIVE_GENERATION)) or self.generation)
        if active == self.generation:
            return False
        self.generation = active
        self.warm.clear()
        return True

    async def _load(
        self,
        partition: Partition,
        logged: list[tuple[str, ev.LoggedEvent, ev.Payload]],
        warm: Warm,
    ) -> Views:
        keys = partition.read_model(self.generation)
        members = sorted({e.member_id for _, e, _ in logged} - warm.members.keys())
        needed = [reads(payload) for _, _, payload in logged]
        profiles = sorted({p for r in needed for p in r.profiles} - warm.profiles.keys())
        images = {i for r in needed for i in r.images}
        replies: list[Any] = []
        if members or profiles:
            replies = await self.client.mget(
                [keys.member(m) for m in members] + [keys.profile(p) for p in profiles]
            )
        for member, raw in zip(members, replies, strict=False):
            if raw is not None:
                warm.members[member] = MemberView.from_bytes(raw)
        for profile, raw in zip(profiles, replies[len(members) :], strict=True):
            if raw is not None:
                warm.profiles[profile] = ProfileModel.from_bytes(raw)
        current = await self._current_prior(partition, warm)
        await self._known_priors(partition, {current} | {m.prior for m in warm.profiles.values()})
        return Views(
            thresholds=self.thresholds,
            embeddings=await self.embeddings.get_many(images),
            priors=self.priors,
            current_prior=current,
            loaded_members=warm.members,
            loaded_profiles=warm.profiles,
            loaded_learners=warm.learners,
        )

    async def _current_prior(self, partition: Partition, warm: Warm) -> str:
        if warm.current_prior is not None:
            return warm.current_prior
        raw = await self.client.get(partition.read_model(self.generation).current_prior)
        return PriorView.from_bytes(raw).model_id if raw else ""

    async def _known_priors(self, partition: Partition, wanted: set[str]) -> None:
        """Load the priors (published in this partition's log) that profiles learn with."""
        keys = partition.read_model(self.generation)
        for model_id in sorted(wanted - self.priors.keys()):
            raw = await self.client.get(keys.prior(model_id))
            if raw is None:
                raise LookupError(f"prior {model_id} is not in {keys.base}")
            self.priors[model_id] = TastePrior.from_payload(json.loads(raw))

    async def _commit(
        self, partition: Partition, position: str, last: str, changed: Changed
    ) -> bool:
        keys = partition.read_model(self.generation)
        writes: dict[str, bytes] = {}
        for member_id, member in changed.members.items():
            writes[keys.member(member_id)] = member.to_bytes()
        for profile_id, model in changed.profiles.items():
            writes[keys.profile(profile_id)] = model.to_bytes()
        for code, view in changed.codes.items():
            writes[keys.code(code)] = view.to_bytes()
        for entry in changed.member_codes:
            writes[keys.member_code(entry.member_id, entry.index)] = entry.to_bytes()
        for deletion in changed.deletions:
            writes[keys.member_deletion(deletion.member_id, deletion.index)] = deletion.to_bytes()
        for model_id, prior in changed.priors.items():
            writes[keys.prior(model_id)] = canonical_json(prior.to_payload())
        if changed.current_prior is not None:
            writes[keys.current_prior] = changed.current_prior.to_bytes()
        changes = [c.to_bytes() for c in changed.profile_changes] if self.emit_changes else []
        stream = partition.changes if self.emit_changes else keys.position
        result = await self.script(
            keys=[keys.position, stream, *writes],
            args=[position, last, len(changes), *writes.values(), *changes],
        )
        return bool(result)
