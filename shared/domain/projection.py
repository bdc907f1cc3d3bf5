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
from typing import Annotated

import numpy as np
from pydantic import ConfigDict, PlainSerializer, PlainValidator

from shared.taste.learner import TasteLearner
from shared.taste.prior import TastePrior

from . import events as ev
from .views import (
    CodeView,
    MemberCode,
    MemberDeletion,
    MemberView,
    PriorView,
    ProfileModel,
    ProfileSummary,
    View,
)

Embeddings = Callable[[Iterable[str]], Mapping[str, np.ndarray]]


def _vector(value: object) -> np.ndarray:
    return ev.decode_vector(value) if isinstance(value, str) else np.asarray(value, np.float64)


Vector = Annotated[
    np.ndarray, PlainValidator(_vector), PlainSerializer(ev.encode_vector, return_type=str)
]


class ProfileChange(View):
    """A profile whose taste moved: what code-minter needs to decide on a new code (an
    entry of the partition's change stream; ``vector`` travels as base64 float64)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    member_id: str
    profile_id: str
    name: str
    family: str
    version: str
    evidence: int
    picks: int
    unlocked: bool
    vector: Vector
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


def touched_profiles(payload: ev.Payload) -> set[str]:
    profile_id = getattr(payload, "profile_id", None)
    return {profile_id} if isinstance(profile_id, str) else set()


def images_needed(payload: ev.Payload) -> set[str]:
    """The catalog images whose embeddings folding this (upcast) payload needs."""
    if isinstance(payload, ev.ImagePicked):
        return set(payload.candidates or ())
    if isinstance(payload, ev.ImageLiked | ev.ImageUnliked):
        return {payload.image_id}
    if isinstance(payload, ev.PairRanked):
        return {payload.winner_image_id, payload.loser_image_id}
    return set()


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
        if isinstance(payload, ev.TasteModelPublished):
            self.priors[payload.model_id] = TastePrior.from_payload(payload.prior)
            self.current_prior = payload.model_id
            self.published[payload.model_id] = PriorView(
                model_id=payload.model_id, position=position
            )
            return
        member = self.members.get(event.member_id) or MemberView(member_id=event.member_id)
        handler = _FOLDS.get(type(payload))
        if handler is None:
            return
        handler(self, member, payload, event, position)
        self.members[event.member_id] = member.model_copy(update={"position": position})
        self.dirty_members.add(event.member_id)

    def changed(self) -> Changed:
        """What this batch wrote, each key once, in a deterministic order."""
        self.flush_learners()
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

    def flush_learners(self) -> None:
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

    def _learned(self, member: MemberView, profile_id: str, position: str, picks: int = 0) -> None:
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


def _created(proj: Projection, member: MemberView, p, event, position) -> None:  # type: ignore[no-untyped-def]
    member.profiles[p.profile_id] = ProfileSummary(
        profile_id=p.profile_id,
        name=p.name,
        family=p.family,
        version=p.version,
        is_global=p.is_global,
        needed=proj.thresholds[p.family],
        created_at=event.occurred_at,
        created_position=position,
    )
    proj.profiles[p.profile_id] = ProfileModel(
        profile_id=p.profile_id,
        member_id=member.member_id,
        position=position,
        prior=proj.current_prior,
    )
    proj.created.add(p.profile_id)


def _for_active_profile(fold: Callable[..., None]) -> Callable[..., None]:
    """Data for a profile that is not active (ingest never appends any) changes nothing."""

    def apply(proj, member, p, event, position):  # type: ignore[no-untyped-def]
        if p.profile_id in member.profiles:
            fold(proj, member, p, event, position)

    return apply


def _picked(proj: Projection, member: MemberView, p, event, position) -> None:  # type: ignore[no-untyped-def]
    shown = np.stack([proj.embeddings[image] for image in p.candidates])
    proj.learner(member.member_id, p.profile_id).observe_grid(
        shown, [p.candidates.index(p.image_id)]
    )
    proj._learned(member, p.profile_id, position, picks=1)


def _ranked(proj: Projection, member: MemberView, p, event, position) -> None:  # type: ignore[no-untyped-def]
    learner = proj.learner(member.member_id, p.profile_id)
    learner.observe_pair(proj.embeddings[p.winner_image_id], proj.embeddings[p.loser_image_id])
    proj._learned(member, p.profile_id, position, picks=1)


def _liked(proj: Projection, member: MemberView, p, event, position) -> None:  # type: ignore[no-untyped-def]
    proj.learner(member.member_id, p.profile_id).observe_like(proj.embeddings[p.image_id])
    proj._learned(member, p.profile_id, position)


def _unliked(proj: Projection, member: MemberView, p, event, position) -> None:  # type: ignore[no-untyped-def]
    proj.learner(member.member_id, p.profile_id).observe_unlike(proj.embeddings[p.image_id])
    proj._learned(member, p.profile_id, position)


def _summary_update(**fields: str) -> Callable[..., None]:
    def apply(proj, member, p, event, position):  # type: ignore[no-untyped-def]
        values = {name: getattr(p, source) for name, source in fields.items()}
        member.profiles[p.profile_id] = member.profiles[p.profile_id].model_copy(update=values)

    return apply


def _deleted(proj: Projection, member: MemberView, p, event, position) -> None:  # type: ignore[no-untyped-def]
    summary = member.profiles.pop(p.profile_id)
    member.defaults = [d for d in member.defaults if d != p.profile_id]
    proj.retire(member.member_id, summary.model_copy(update={"deleted": True}), position)
    proj.deletions.append(
        MemberDeletion(
            member_id=member.member_id,
            index=member.profiles_deleted,
            profile_id=p.profile_id,
            position=position,
        )
    )
    member.profiles_deleted += 1


def _minted(proj: Projection, member: MemberView, p, event, position) -> None:  # type: ignore[no-untyped-def]
    proj.codes[p.code] = CodeView(
        code=p.code,
        member_id=member.member_id,
        profile_id=p.profile_id,
        profile_name=p.profile_name,
        family=p.family,
        version=p.version,
        vector=p.vector,
        evidence=p.evidence,
        picks=p.picks,
        minted_at=event.occurred_at,
        position=position,
    )
    proj.minted.append(
        MemberCode(
            member_id=member.member_id, index=member.codes_minted, code=p.code, position=position
        )
    )
    member.codes_minted += 1
    if p.profile_id in member.profiles:
        member.profiles[p.profile_id] = member.profiles[p.profile_id].model_copy(
            update={"latest_code": p.code}
        )
    else:
        _deleted_profile_minted(proj, p.profile_id, p.code, position)


def _deleted_profile_minted(proj: Projection, profile_id: str, code: str, position: str) -> None:
    """A code minted from data the profile took before it was deleted is still its latest."""
    model = proj.profiles.get(profile_id)
    if model is None or model.summary is None:
        return
    summary = model.summary.model_copy(update={"latest_code": code})
    proj.profiles[profile_id] = model.model_copy(update={"summary": summary, "position": position})
    proj.retired.add(profile_id)


def _member_field(name: str, source: str) -> Callable[..., None]:
    def apply(proj, member, p, event, position):  # type: ignore[no-untyped-def]
        setattr(member, name, getattr(p, source))

    return apply


_FOLDS: dict[type[ev.Payload], Callable[..., None]] = {
    ev.ProfileCreated: _created,
    ev.ImagePicked: _for_active_profile(_picked),
    ev.PairRanked: _for_active_profile(_ranked),
    ev.ImageLiked: _for_active_profile(_liked),
    ev.ImageUnliked: _for_active_profile(_unliked),
    ev.ProfileRenamed: _for_active_profile(_summary_update(name="name")),
    ev.ProfileDeleted: _for_active_profile(_deleted),
    ev.DefaultProfilesSelected: _member_field("defaults", "profile_ids"),
    ev.PersonalizationToggled: _member_field("personalization", "enabled"),
    ev.DefaultVersionSet: _member_field("default_version", "version"),
    ev.CodeMinted: _minted,
}
