"""The profile projection: a deterministic fold of log events into read models.

The adapter loads the views a batch touches, folds every event in log order with
:meth:`Projection.fold`, then writes the dirty views and the batch's last position in one
atomic step. The same fold serves the live projector and a replay.

What an event reads never grows with a member's history: a deleted profile leaves the
member view (its summary moves to its own profile model) and codes are counted there, not
listed; both histories are append-only entries (:class:`MemberCode`,
:class:`MemberDeletion`) that the fold writes and never reads.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import singledispatch, wraps
from typing import Any, TypeVar, cast

import numpy as np

from shared.taste.learner import TasteLearner
from shared.taste.prior import TastePrior

from . import events as ev
from .member import Unhandled
from .views import (
    CodeView,
    MemberCode,
    MemberDeletion,
    MemberView,
    PriorView,
    ProfileModel,
    ProfileSummary,
)

Embeddings = Callable[[Iterable[str]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class ProfileChange:
    """A profile whose taste moved: what code-minter needs to decide on a new code."""

    member_id: str
    profile_id: str
    name: str
    family: str
    version: str
    evidence: int
    picks: int
    unlocked: bool
    vector: np.ndarray
    position: str


@dataclass(frozen=True)
class Changed:
    """Every read model a batch wrote, and the profiles whose taste moved: what the committer
    stores (at the batch's last position, in one atomic step) without knowing the fold."""

    members: Mapping[str, MemberView]
    profiles: Mapping[str, ProfileModel]
    codes: Mapping[str, CodeView]
    member_codes: Sequence[MemberCode]
    deletions: Sequence[MemberDeletion]
    priors: Mapping[str, TastePrior]
    current_prior: PriorView | None
    profile_changes: Sequence[ProfileChange]


@dataclass(frozen=True)
class Reads:
    """What folding an event reads besides its member's view: the profile models it
    updates and the catalog images whose embeddings it learns from."""

    profiles: frozenset[str] = frozenset()
    images: frozenset[str] = frozenset()


WHERE = "shared/domain/projection.py"


@singledispatch
def reads(payload: ev.Payload) -> Reads:
    """What folding this (upcast) payload reads; see :class:`Reads`."""
    raise Unhandled("reads", payload, WHERE)


@dataclass(frozen=True)
class At:
    """Where in the log an event is folded: its entry ID and when it happened."""

    position: str
    occurred_at: datetime


@dataclass
class Projection:
    """The read models one batch touches, and the fold that updates them."""

    members: dict[str, MemberView]
    profiles: dict[str, ProfileModel]
    priors: dict[str, TastePrior]
    thresholds: Mapping[str, int]
    embeddings: Mapping[str, np.ndarray]
    codes: dict[str, CodeView] = field(default_factory=dict)
    changes: dict[str, ProfileChange] = field(default_factory=dict)
    dirty_members: set[str] = field(default_factory=set)
    learners: dict[str, TasteLearner] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    created: set[str] = field(default_factory=set)
    retired: set[str] = field(default_factory=set)
    minted: list[MemberCode] = field(default_factory=list)
    deletions: list[MemberDeletion] = field(default_factory=list)
    current_prior: str = ""
    published: dict[str, PriorView] = field(default_factory=dict)

    def fold(self, position: str, event: ev.LoggedEvent, payload: ev.Payload | None = None) -> None:
        payload = payload or event.typed_payload()
        member = self.members.get(event.member_id) or MemberView(member_id=event.member_id)
        if project(payload, self, member, At(position, event.occurred_at)):
            self.members[event.member_id] = member.model_copy(update={"position": position})
            self.dirty_members.add(event.member_id)

    def changed(self) -> Changed:
        """What this batch wrote, each key once, in a deterministic order."""
        self._flush_learners()
        return Changed(
            members={m: self.members[m] for m in sorted(self.dirty_members)},
            profiles={p: self.profiles[p] for p in sorted(self.written_profiles)},
            codes=dict(sorted(self.codes.items())),
            member_codes=tuple(self.minted),
            deletions=tuple(self.deletions),
            priors={m: self.priors[m] for m in sorted(self.published)},
            current_prior=self.published[self.current_prior] if self.published else None,
            profile_changes=tuple(self.changes.values()),
        )

    @property
    def written_profiles(self) -> set[str]:
        """The profile models this batch changed."""
        return self.touched | self.created | self.retired

    def _flush_learners(self) -> None:
        """Write the state of every learner this batch changed into its profile model."""
        for profile_id in sorted(self.touched):
            learner = self.learners[profile_id]
            position = self.changes[profile_id].position
            state = base64.b64encode(learner.state()).decode()
            model = self.profiles[profile_id]
            self.profiles[profile_id] = model.model_copy(
                update={"state": state, "position": position}
            )

    def learner(self, member_id: str, profile_id: str) -> TasteLearner:
        self.touched.add(profile_id)
        if profile_id not in self.learners:
            model = self.profiles.get(profile_id)
            if model is None:
                model = ProfileModel(
                    profile_id=profile_id, member_id=member_id, prior=self.current_prior
                )
                self.profiles[profile_id] = model
            prior = self.priors[model.prior]
            if model.state:
                learner = TasteLearner.from_state(prior, base64.b64decode(model.state))
            else:
                learner = TasteLearner(prior)
            self.learners[profile_id] = learner
        return self.learners[profile_id]

    def publish(self, payload: ev.TasteModelPublished, position: str) -> None:
        """A new population prior: the one new profiles start from from now on."""
        self.priors[payload.model_id] = TastePrior.from_payload(payload.prior)
        self.current_prior = payload.model_id
        self.published[payload.model_id] = PriorView(model_id=payload.model_id, position=position)

    def retire(self, member_id: str, summary: ProfileSummary, position: str) -> None:
        """Keep a deleted profile's summary on its model; drop its learner (no more data)."""
        profile_id = summary.profile_id
        model = self.profiles.get(profile_id) or ProfileModel(
            profile_id=profile_id, member_id=member_id, prior=self.current_prior
        )
        self.profiles[profile_id] = model.model_copy(
            update={"state": "", "summary": summary, "position": position}
        )
        self.touched.discard(profile_id)
        self.learners.pop(profile_id, None)
        self.retired.add(profile_id)

    def learned(self, member: MemberView, profile_id: str, position: str, picks: int = 0) -> None:
        summary = member.profiles[profile_id]
        learner = self.learners[profile_id]
        summary = summary.model_copy(
            update={"picks": summary.picks + picks, "evidence": learner.evidence}
        )
        member.profiles[profile_id] = summary
        self.changes[profile_id] = ProfileChange(
            member_id=member.member_id,
            profile_id=profile_id,
            name=summary.name,
            family=summary.family,
            version=summary.version,
            evidence=learner.evidence,
            picks=summary.picks,
            unlocked=summary.unlocked,
            vector=learner.vector(),
            position=position,
        )


@singledispatch
def project(payload: ev.Payload, proj: Projection, member: MemberView, at: At) -> bool:
    """Fold one event into the batch's views; ``True`` if it changed the member's view
    (then its position moves to the event's)."""
    raise Unhandled("project", payload, WHERE)


Fold = TypeVar("Fold", bound=Callable[..., bool])


def _for_active_profile(fold: Fold) -> Fold:
    """Data for a profile that is not active (ingest never appends any) changes nothing."""

    @wraps(fold)
    def apply(payload: Any, proj: Projection, member: MemberView, at: At) -> bool:
        return payload.profile_id in member.profiles and fold(payload, proj, member, at)

    return cast(Fold, apply)


def _one_profile(payload: ev.Payload) -> frozenset[str]:
    profile_id = getattr(payload, "profile_id", None)
    return frozenset({profile_id}) if isinstance(profile_id, str) else frozenset()


# ProfileCreated, ProfileRenamed, ProfileDeleted


@project.register
def _(payload: ev.ProfileCreated, proj: Projection, member: MemberView, at: At) -> bool:
    assert payload.profile_id and payload.family and payload.version  # ingest derives them
    member.profiles[payload.profile_id] = ProfileSummary(
        profile_id=payload.profile_id,
        name=payload.name,
        family=payload.family,
        version=payload.version,
        is_global=payload.is_global,
        needed=proj.thresholds[payload.family],
        created_at=at.occurred_at,
        created_position=at.position,
    )
    proj.profiles[payload.profile_id] = ProfileModel(
        profile_id=payload.profile_id,
        member_id=member.member_id,
        position=at.position,
        prior=proj.current_prior,
    )
    proj.created.add(payload.profile_id)
    return True


@project.register
@_for_active_profile
def _(payload: ev.ProfileRenamed, proj: Projection, member: MemberView, at: At) -> bool:
    summary = member.profiles[payload.profile_id]
    member.profiles[payload.profile_id] = summary.model_copy(update={"name": payload.name})
    return True


@project.register
@_for_active_profile
def _(payload: ev.ProfileDeleted, proj: Projection, member: MemberView, at: At) -> bool:
    summary = member.profiles.pop(payload.profile_id)
    member.defaults = [d for d in member.defaults if d != payload.profile_id]
    proj.retire(member.member_id, summary.model_copy(update={"deleted": True}), at.position)
    proj.deletions.append(
        MemberDeletion(
            member_id=member.member_id,
            index=member.profiles_deleted,
            profile_id=payload.profile_id,
            position=at.position,
        )
    )
    member.profiles_deleted += 1
    return True


@reads.register
def _(
    payload: ev.ProfileCreated
    | ev.ProfileRenamed
    | ev.ProfileDeleted
    | ev.GridServed
    | ev.CodeMinted,
) -> Reads:
    return Reads(profiles=_one_profile(payload))


# What a profile learns from: picks, ranked pairs, likes


@project.register
@_for_active_profile
def _(payload: ev.ImagePicked, proj: Projection, member: MemberView, at: At) -> bool:
    assert payload.profile_id is not None and payload.candidates is not None  # ingest derives
    shown = np.stack([proj.embeddings[image] for image in payload.candidates])
    proj.learner(member.member_id, payload.profile_id).observe_grid(
        shown, [payload.candidates.index(payload.image_id)]
    )
    proj.learned(member, payload.profile_id, at.position, picks=1)
    return True


@reads.register
def _(payload: ev.ImagePicked) -> Reads:
    return Reads(profiles=_one_profile(payload), images=frozenset(payload.candidates or ()))


@project.register
@_for_active_profile
def _(payload: ev.PairRanked, proj: Projection, member: MemberView, at: At) -> bool:
    assert payload.profile_id is not None  # ingest derives it
    winner, loser = (
        proj.embeddings[payload.winner_image_id],
        proj.embeddings[payload.loser_image_id],
    )
    proj.learner(member.member_id, payload.profile_id).observe_pair(winner, loser)
    proj.learned(member, payload.profile_id, at.position, picks=1)
    return True


@reads.register
def _(payload: ev.PairRanked) -> Reads:
    images = frozenset({payload.winner_image_id, payload.loser_image_id})
    return Reads(profiles=_one_profile(payload), images=images)


@project.register
@_for_active_profile
def _(payload: ev.ImageLiked, proj: Projection, member: MemberView, at: At) -> bool:
    assert payload.profile_id is not None  # ingest derives it
    proj.learner(member.member_id, payload.profile_id).observe_like(
        proj.embeddings[payload.image_id]
    )
    proj.learned(member, payload.profile_id, at.position)
    return True


@project.register
@_for_active_profile
def _(payload: ev.ImageUnliked, proj: Projection, member: MemberView, at: At) -> bool:
    assert payload.profile_id is not None  # ingest derives it
    image = proj.embeddings[payload.image_id]
    proj.learner(member.member_id, payload.profile_id).observe_unlike(image)
    proj.learned(member, payload.profile_id, at.position)
    return True


@reads.register
def _(payload: ev.ImageLiked | ev.ImageUnliked) -> Reads:
    return Reads(profiles=_one_profile(payload), images=frozenset({payload.image_id}))


# Member settings


@project.register
def _(payload: ev.DefaultProfilesSelected, proj: Projection, member: MemberView, at: At) -> bool:
    member.defaults = list(payload.profile_ids)
    return True


@project.register
def _(payload: ev.PersonalizationToggled, proj: Projection, member: MemberView, at: At) -> bool:
    member.personalization = payload.enabled
    return True


@project.register
def _(payload: ev.DefaultVersionSet, proj: Projection, member: MemberView, at: At) -> bool:
    member.default_version = payload.version
    return True


# CodeMinted


@project.register
def _(payload: ev.CodeMinted, proj: Projection, member: MemberView, at: At) -> bool:
    proj.codes[payload.code] = CodeView(
        code=payload.code,
        member_id=member.member_id,
        profile_id=payload.profile_id,
        profile_name=payload.profile_name,
        family=payload.family,
        version=payload.version,
        vector=payload.vector,
        evidence=payload.evidence,
        picks=payload.picks,
        minted_at=at.occurred_at,
        position=at.position,
    )
    proj.minted.append(
        MemberCode(
            member_id=member.member_id,
            index=member.codes_minted,
            code=payload.code,
            position=at.position,
        )
    )
    member.codes_minted += 1
    if payload.profile_id in member.profiles:
        summary = member.profiles[payload.profile_id]
        member.profiles[payload.profile_id] = summary.model_copy(
            update={"latest_code": payload.code}
        )
    else:
        _deleted_profile_minted(proj, payload.profile_id, payload.code, at.position)
    return True


def _deleted_profile_minted(proj: Projection, profile_id: str, code: str, position: str) -> None:
    """A code minted from data the profile took before it was deleted is still its latest."""
    model = proj.profiles.get(profile_id)
    if model is None or model.summary is None:
        return
    summary = model.summary.model_copy(update={"latest_code": code})
    proj.profiles[profile_id] = model.model_copy(update={"summary": summary, "position": position})
    proj.retired.add(profile_id)


# Events with no member read model: the catalog, grids (ingest's), the system's priors


@project.register
def _(
    payload: ev.ImageRegistered | ev.GridServed, proj: Projection, member: MemberView, at: At
) -> bool:
    return False


@project.register
def _(payload: ev.TasteModelPublished, proj: Projection, member: MemberView, at: At) -> bool:
    proj.publish(payload, at.position)
    return False


@reads.register
def _(
    payload: ev.ImageRegistered
    | ev.DefaultProfilesSelected
    | ev.PersonalizationToggled
    | ev.DefaultVersionSet
    | ev.TasteModelPublished,
) -> Reads:
    return Reads()
