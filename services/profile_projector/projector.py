"""profile-projector's application layer: load what a batch touches, fold, commit at position."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.adapters.follower import Entry
from shared.domain import events as ev
from shared.domain.ports import ReadModels
from shared.domain.projection import Changed, Views, reads
from shared.domain.views import MemberView, ProfileModel
from shared.keys import Partition
from shared.settings import Settings
from shared.taste.learner import TasteLearner

WARM_LIMIT = 50_000


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
        retired = views.retired
        self.learners.update((p, t.learner) for p, t in views.taught.items() if p not in retired)
        for profile_id in retired:
            self.learners.pop(profile_id, None)
        return Warm(position, views.current_prior, self.members, self.profiles, self.learners)


class Projector:
    """Folds one partition's log into one generation of read models."""

    def __init__(
        self,
        models: ReadModels,
        settings: Settings,
        emit_changes: bool = True,
        follow_active: bool = False,
    ) -> None:
        self.models = models
        self.settings = settings
        self.emit_changes = emit_changes
        self.follow_active = follow_active
        self.thresholds = dict(settings.rules().unlock)
        self.warm: dict[int, Warm] = {}

    def position_key(self, partition: Partition) -> str:
        return self.models.position_key(partition.index)

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
            self.warm[partition.index] = warm.advanced(last, views, changed)
        return committed

    async def _generation_moved(self) -> bool:
        """After a replay switched generations, continue in the new one from its position."""
        active = await self.models.active_generation()
        if active == self.models.generation:
            return False
        self.models = self.models.at(active)
        self.warm.clear()
        return True

    async def _load(
        self,
        partition: Partition,
        logged: list[tuple[str, ev.LoggedEvent, ev.Payload]],
        warm: Warm,
    ) -> Views:
        members = sorted({e.member_id for _, e, _ in logged} - warm.members.keys())
        needed = [reads(payload) for _, _, payload in logged]
        profiles = sorted({p for r in needed for p in r.profiles} - warm.profiles.keys())
        images = {i for r in needed for i in r.images}
        found = await self.models.read(
            members=members, profiles=profiles, partition=partition.index
        )
        warm.members |= found.members
        warm.profiles |= found.profiles
        current = warm.current_prior
        if current is None:
            current = await self.models.current_prior(partition.index)
        wanted = {current} | {m.prior for m in warm.profiles.values()}
        return Views(
            thresholds=self.thresholds,
            embeddings=await self.models.embeddings(images),
            priors=await self.models.priors(partition.index, wanted),
            current_prior=current,
            loaded_members=warm.members,
            loaded_profiles=warm.profiles,
            loaded_learners=warm.learners,
        )

    async def _commit(
        self, partition: Partition, position: str, last: str, changed: Changed
    ) -> bool:
        return await self.models.commit(partition.index, position, last, changed, self.emit_changes)
