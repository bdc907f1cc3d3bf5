"""The profile projection: a deterministic fold of log events into read models.

The adapter loads the views a batch touches, folds every event in log order with
:meth:`Views.fold`, then writes the dirty views and the batch's last position in one
atomic step. The same fold serves the live projector and a replay.

What an event reads never grows with a member's history: a deleted profile leaves the
member view (its summary moves to its own profile model) and codes are counted there, not
listed; both histories are append-only entries (:class:`MemberCode`,
:class:`MemberDeletion`) that the fold writes and never reads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import singledispatch, wraps
from typing import Annotated, Any, TypeVar, cast

import numpy as np
from pydantic import ConfigDict, PlainSerializer, PlainValidator

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
    """Where in the log an event is folded, when it happened, and whose it is."""

    position: str
    occurred_at: datetime
    member_id: str


@dataclass(frozen=True)
class Taught:
    """A profile's learner and summary after the last signal it learned from in a batch:
    the :class:`ProfileChange` code-minter hears of, made only when the batch commits."""

    member_id: str
    summary: ProfileSummary
    learner: TasteLearner
    position: str

    def change(self) -> ProfileChange:
        return ProfileChange(
            member_id=self.member_id,
            profile_id=self.summary.profile_id,
            name=self.summary.name,
            family=self.summary.family,
            version=self.summary.version,
            evidence=self.learner.evidence,
            picks=self.summary.picks,
            unlocked=self.summary.unlocked,
            vector=self.learner.vector(),
            position=self.position,
        )


@dataclass(frozen=True)
class Views:
    """The read models one batch folds into, never changed in place: :meth:`fold` returns
    new views. ``loaded_*`` are what the batch read (the adapter's, read only while the
    views are in use); the rest is what the fold wrote, each a new object per change."""

    thresholds: Mapping[str, int]
    embeddings: Mapping[str, np.ndarray]
    priors: Mapping[str, TastePrior]
    current_prior: str = ""
    loaded_members: Mapping[str, MemberView] = field(default_factory=dict)
    loaded_profiles: Mapping[str, ProfileModel] = field(default_factory=dict)
    loaded_learners: Mapping[str, TasteLearner] = field(default_factory=dict)
    written_members: Mapping[str, MemberView] = field(default_factory=dict)
    written_profiles: Mapping[str, ProfileModel] = field(default_factory=dict)
    codes: Mapping[str, CodeView] = field(default_factory=dict)
    minted: tuple[MemberCode, ...] = ()
    deletions: tuple[MemberDeletion, ...] = ()
    taught: Mapping[str, Taught] = field(default_factory=dict)
    published: Mapping[str, PriorView] = field(default_factory=dict)

    def fold(
        self, position: str, event: ev.LoggedEvent, payload: ev.Payload | None = None
    ) -> Views:
        """These views with one more event folded in."""
        payload = payload or event.typed_payload()
        return project(payload, self, At(position, event.occurred_at, event.member_id))

    def changed(self) -> Changed:
        """What this batch wrote, each key once, in a deterministic order; a profile that
        learned carries its learner's state as of its last change."""
        profiles = dict(self.written_profiles)
        retired = self.retired
        for profile_id, taught in self.taught.items():
            model = self.profile(profile_id)
            if profile_id not in retired and model is not None:
                profiles[profile_id] = model.taught(taught.learner, taught.position)
        return Changed(
            members=dict(sorted(self.written_members.items())),
            profiles=dict(sorted(profiles.items())),
            codes=dict(sorted(self.codes.items())),
            member_codes=self.minted,
            deletions=self.deletions,
            priors={m: self.priors[m] for m in sorted(self.published)},
            current_prior=self.published[self.current_prior] if self.published else None,
            profile_changes=tuple(t.change() for t in self.taught.values()),
        )

    @property
    def changes(self) -> Mapping[str, ProfileChange]:
        """The profiles whose taste moved in this batch, as code-minter will hear of them."""
        return {profile_id: t.change() for profile_id, t in self.taught.items()}

    @property
    def members(self) -> Mapping[str, MemberView]:
        """Every member view as of the last event folded."""
        return {**self.loaded_members, **self.written_members}

    @property
    def profiles(self) -> Mapping[str, ProfileModel]:
        """Every profile model as it would be stored now."""
        return {**self.loaded_profiles, **self.changed().profiles}

    @property
    def learners(self) -> Mapping[str, TasteLearner]:
        """The learners of the active profiles this batch has read or taught."""
        merged = {**self.loaded_learners, **{p: t.learner for p, t in self.taught.items()}}
        retired = self.retired
        return {p: learner for p, learner in merged.items() if p not in retired}

    @property
    def touched(self) -> set[str]:
        """The profiles that learned in this batch (their learner state is written)."""
        return set(self.taught) - self.retired

    @property
    def retired(self) -> set[str]:
        """The deleted profiles whose model (the summary they keep) this batch wrote."""
        return {p for p, model in self.written_profiles.items() if model.summary is not None}

    @property
    def dirty_members(self) -> set[str]:
        return set(self.written_members)

    def member(self, member_id: str) -> MemberView:
        found = self.written_members.get(member_id) or self.loaded_members.get(member_id)
        return found or MemberView(member_id=member_id)

    def profile(self, profile_id: str) -> ProfileModel | None:
        return self.written_profiles.get(profile_id) or self.loaded_profiles.get(profile_id)

    def learner(self, member_id: str, profile_id: str) -> TasteLearner:
        """The profile's learner now (a new one, from its stored state or its prior, if
        this batch has not taught it yet); callers teach a copy, never this one."""
        if profile_id in self.taught:
            return self.taught[profile_id].learner
        if profile_id in self.loaded_learners:
            return self.loaded_learners[profile_id]
        model = self._model(member_id, profile_id)
        return model.learner(self.priors[model.prior])

    def with_member(self, member: MemberView, at: At, **update: object) -> Views:
        """These views with ``member`` (updated with ``update``) as of ``at``."""
        member = member.model_copy(update={**update, "position": at.position})
        return self.updated(written_members={**self.written_members, member.member_id: member})

    def with_profile(self, model: ProfileModel) -> Views:
        return self.updated(written_profiles={**self.written_profiles, model.profile_id: model})

    def with_summary(self, member: MemberView, summary: ProfileSummary, at: At) -> Views:
        profiles = {**member.profiles, summary.profile_id: summary}
        return self.with_member(member, at, profiles=profiles)

    def learned(self, at: At, profile_id: str, teach: Teach, picks: int = 0) -> Views:
        """These views after the profile's learner was taught with ``teach``: the learner,
        the profile's summary and the change code-minter hears of."""
        member = self.member(at.member_id)
        learner = copy.copy(self.learner(at.member_id, profile_id))
        teach(learner)
        summary = member.profiles[profile_id]
        summary = summary.model_copy(
            update={"picks": summary.picks + picks, "evidence": learner.evidence}
        )
        profiles = self.written_profiles
        if self.profile(profile_id) is None:
            profiles = {**profiles, profile_id: self._model(member.member_id, profile_id)}
        member = member.model_copy(
            update={"profiles": {**member.profiles, profile_id: summary}, "position": at.position}
        )
        return self.updated(
            taught={
                **self.taught,
                profile_id: Taught(member.member_id, summary, learner, at.position),
            },
            written_profiles=profiles,
            written_members={**self.written_members, member.member_id: member},
        )

    def retire(self, at: At, summary: ProfileSummary) -> Views:
        """Keep a deleted profile's summary on its model, and no learner state (no more data)."""
        profile_id = summary.profile_id
        model = self._model(at.member_id, profile_id).model_copy(
            update={"state": "", "summary": summary, "position": at.position}
        )
        return self.with_profile(model)

    def publish(self, payload: ev.TasteModelPublished, position: str) -> Views:
        """A new population prior: the one new profiles start from from now on."""
        prior = TastePrior.from_payload(payload.prior)
        view = PriorView(model_id=payload.model_id, position=position)
        return self.updated(
            priors={**self.priors, payload.model_id: prior},
            current_prior=payload.model_id,
            published={**self.published, payload.model_id: view},
        )

    def updated(self, **fields: object) -> Views:
        """These views with ``fields`` replaced (cheaper than ``dataclasses.replace``: the
        fold makes a few per event)."""
        views = copy.copy(self)
        for name, value in fields.items():
            object.__setattr__(views, name, value)
        return views

    def _model(self, member_id: str, profile_id: str) -> ProfileModel:
        return self.profile(profile_id) or ProfileModel(
            profile_id=profile_id, member_id=member_id, prior=self.current_prior
        )


Teach = Callable[[TasteLearner], None]


@singledispatch
def project(payload: ev.Payload, views: Views, at: At) -> Views:
    """The views with one event folded in (its member's position moves to the event's
    when it changes their view)."""
    raise Unhandled("project", payload, WHERE)


Fold = TypeVar("Fold", bound=Callable[..., Views])


def _for_active_profile(fold: Fold) -> Fold:
    """Data for a profile that is not active (ingest never appends any) changes nothing
    but its member's position."""

    @wraps(fold)
    def apply(payload: Any, views: Views, at: At) -> Views:
        member = views.member(at.member_id)
        if payload.profile_id not in member.profiles:
            return views.with_member(member, at)
        return fold(payload, views, at)

    return cast(Fold, apply)


def _one_profile(payload: ev.Payload) -> frozenset[str]:
    profile_id = getattr(payload, "profile_id", None)
    return frozenset({profile_id}) if isinstance(profile_id, str) else frozenset()


# ProfileCreated, ProfileRenamed, ProfileDeleted


@project.register
def _(payload: ev.ProfileCreated, views: Views, at: At) -> Views:
    assert payload.profile_id and payload.family and payload.version  # ingest derives them
    summary = ProfileSummary(
        profile_id=payload.profile_id,
        name=payload.name,
        family=payload.family,
        version=payload.version,
        is_global=payload.is_global,
        needed=views.thresholds[payload.family],
        created_at=at.occurred_at,
        created_position=at.position,
    )
    model = ProfileModel(
        profile_id=payload.profile_id,
        member_id=at.member_id,
        position=at.position,
        prior=views.current_prior,
    )
    return views.with_profile(model).with_summary(views.member(at.member_id), summary, at)


@project.register
@_for_active_profile
def _(payload: ev.ProfileRenamed, views: Views, at: At) -> Views:
    member = views.member(at.member_id)
    summary = member.profiles[payload.profile_id].model_copy(update={"name": payload.name})
    return views.with_summary(member, summary, at)


@project.register
@_for_active_profile
def _(payload: ev.ProfileDeleted, views: Views, at: At) -> Views:
    member = views.member(at.member_id)
    gone = payload.profile_id
    deletion = MemberDeletion(
        member_id=member.member_id,
        index=member.profiles_deleted,
        profile_id=gone,
        position=at.position,
    )
    views = views.retire(at, member.profiles[gone].model_copy(update={"deleted": True}))
    return views.updated(deletions=(*views.deletions, deletion)).with_member(
        member,
        at,
        profiles={p: summary for p, summary in member.profiles.items() if p != gone},
        defaults=[d for d in member.defaults if d != gone],
        profiles_deleted=member.profiles_deleted + 1,
    )


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
def _(payload: ev.ImagePicked, views: Views, at: At) -> Views:
    assert payload.profile_id is not None and payload.candidates is not None  # ingest derives
    shown = np.stack([views.embeddings[image] for image in payload.candidates])
    picked = [payload.candidates.index(payload.image_id)]
    return views.learned(
        at, payload.profile_id, lambda learner: learner.observe_grid(shown, picked), picks=1
    )


@reads.register
def _(payload: ev.ImagePicked) -> Reads:
    return Reads(profiles=_one_profile(payload), images=frozenset(payload.candidates or ()))


@project.register
@_for_active_profile
def _(payload: ev.PairRanked, views: Views, at: At) -> Views:
    assert payload.profile_id is not None  # ingest derives it
    winner = views.embeddings[payload.winner_image_id]
    loser = views.embeddings[payload.loser_image_id]
    return views.learned(
        at, payload.profile_id, lambda learner: learner.observe_pair(winner, loser), picks=1
    )


@reads.register
def _(payload: ev.PairRanked) -> Reads:
    images = frozenset({payload.winner_image_id, payload.loser_image_id})
    return Reads(profiles=_one_profile(payload), images=images)


@project.register
@_for_active_profile
def _(payload: ev.ImageLiked | ev.ImageUnliked, views: Views, at: At) -> Views:
    assert payload.profile_id is not None  # ingest derives it
    image = views.embeddings[payload.image_id]
    liked = isinstance(payload, ev.ImageLiked)

    def teach(learner: TasteLearner) -> None:
        (learner.observe_like if liked else learner.observe_unlike)(image)

    return views.learned(at, payload.profile_id, teach)


@reads.register
def _(payload: ev.ImageLiked | ev.ImageUnliked) -> Reads:
    return Reads(profiles=_one_profile(payload), images=frozenset({payload.image_id}))


# Member settings


@project.register
def _(payload: ev.DefaultProfilesSelected, views: Views, at: At) -> Views:
    return views.with_member(views.member(at.member_id), at, defaults=list(payload.profile_ids))


@project.register
def _(payload: ev.PersonalizationToggled, views: Views, at: At) -> Views:
    return views.with_member(views.member(at.member_id), at, personalization=payload.enabled)


@project.register
def _(payload: ev.DefaultVersionSet, views: Views, at: At) -> Views:
    return views.with_member(views.member(at.member_id), at, default_version=payload.version)


# CodeMinted


@project.register
def _(payload: ev.CodeMinted, views: Views, at: At) -> Views:
    member = views.member(at.member_id)
    code = CodeView(
        **payload.model_dump(),
        member_id=member.member_id,
        minted_at=at.occurred_at,
        position=at.position,
    )
    entry = MemberCode(
        member_id=member.member_id,
        index=member.codes_minted,
        code=payload.code,
        position=at.position,
    )
    views = views.updated(codes={**views.codes, code.code: code}, minted=(*views.minted, entry))
    profiles = dict(member.profiles)
    if payload.profile_id in profiles:
        latest = {"latest_code": payload.code}
        profiles[payload.profile_id] = profiles[payload.profile_id].model_copy(update=latest)
    else:
        views = _deleted_profile_minted(views, payload.profile_id, payload.code, at.position)
    return views.with_member(member, at, profiles=profiles, codes_minted=member.codes_minted + 1)


def _deleted_profile_minted(views: Views, profile_id: str, code: str, position: str) -> Views:
    """A code minted from data the profile took before it was deleted is still its latest."""
    model = views.profile(profile_id)
    if model is None or model.summary is None:
        return views
    summary = model.summary.model_copy(update={"latest_code": code})
    return views.with_profile(model.model_copy(update={"summary": summary, "position": position}))


# Events with no member read model: the catalog, grids (ingest's), the system's priors


@project.register
def _(payload: ev.ImageRegistered | ev.GridServed, views: Views, at: At) -> Views:
    return views


@project.register
def _(payload: ev.TasteModelPublished, views: Views, at: At) -> Views:
    return views.publish(payload, at.position)


@reads.register
def _(
    payload: ev.ImageRegistered
    | ev.DefaultProfilesSelected
    | ev.PersonalizationToggled
    | ev.DefaultVersionSet
    | ev.TasteModelPublished,
) -> Reads:
    return Reads()
