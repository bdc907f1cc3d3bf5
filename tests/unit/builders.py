"""Builders shared by the domain unit tests: a small catalog, a member's journal, read models."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from shared.domain import events as ev
from shared.domain.member import (
    Context,
    ImageInfo,
    MemberState,
    NewId,
    Rejected,
    Rules,
    decide,
    evolve,
)
from shared.domain.projection import Views
from shared.domain.views import CodeView, MemberView, ProfileModel, ProfileSummary
from shared.taste.prior import TastePrior

DIM = 4
T0 = datetime(2025, 1, 1, tzinfo=UTC)
RULES = Rules(unlock={"v6": 3, "v7": 3}, embed_dim=DIM)
THRESHOLDS = dict(RULES.unlock)

V7_IMAGES = ("r1", "r2", "r3", "r4", "r5", "r6")
V6_IMAGES = ("s1", "s2", "s3", "s4")
CATALOG: dict[str, ImageInfo] = {
    **{image: ImageInfo(creator="bob", model_version="7") for image in V7_IMAGES},
    **{image: ImageInfo(creator="bob", model_version="6.1") for image in V6_IMAGES},
    "old": ImageInfo(creator="bob", model_version="5.2"),
    "own": ImageInfo(creator="alice", model_version="7"),
}


def _embeddings() -> dict[str, np.ndarray]:
    rows = np.random.default_rng(7).normal(size=(len(CATALOG), DIM))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return dict(zip(sorted(CATALOG), rows, strict=True))


EMBEDDINGS = _embeddings()


def sequential_ids(prefix: str = "prof") -> NewId:
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def at(index: int) -> datetime:
    return T0 + timedelta(seconds=index)


def position(index: int) -> str:
    return f"{index + 1}-0"


def logged(payload: ev.Payload, member_id: str, index: int) -> ev.LoggedEvent:
    return ev.record(
        payload,
        event_id=f"key-{index}",
        member_id=member_id,
        occurred_at=at(index),
        now=at(index),
    )


@dataclass
class Journal:
    """One member seen from selection-ingest: decide, evolve, and record what was appended."""

    member_id: str = "alice"
    rules: Rules = RULES
    catalog: dict[str, ImageInfo] = field(default_factory=lambda: dict(CATALOG))
    new_id: NewId = field(default_factory=sequential_ids)
    state: MemberState = field(default_factory=MemberState)
    log: list[ev.LoggedEvent] = field(default_factory=list)

    def send(self, payload: ev.Payload) -> list[ev.Payload]:
        context = Context(self.state, self.member_id, self.catalog, self.rules, self.new_id)
        appended = decide(payload, context)
        for event in appended:
            self.append(event)
        return appended

    def append(self, event: ev.Payload) -> None:
        self.state = evolve(self.state, event, self.rules)
        self.log.append(logged(event, self.member_id, len(self.log)))

    def reject(self, payload: ev.Payload) -> Rejected:
        with pytest.raises(Rejected) as caught:
            self.send(payload)
        return caught.value

    def grid(self, grid_id: str, images: Iterable[str], profile_id: str | None = None) -> str:
        served = self.send(
            ev.GridServed(grid_id=grid_id, image_ids=list(images), profile_id=profile_id)
        )
        grid = served[-1]
        assert isinstance(grid, ev.GridServed) and grid.profile_id is not None
        return grid.profile_id

    def pick(self, grid_id: str, *images: str) -> None:
        for image in images:
            self.send(ev.ImagePicked(grid_id=grid_id, image_id=image))

    def unlock_global(self, grid_id: str = "g-unlock") -> str:
        """Serve one grid for the Global Profile of the default family and pick enough of it."""
        profile_id = self.grid(grid_id, V7_IMAGES[:4] if self._v7() else V6_IMAGES)
        self.pick(grid_id, *(V7_IMAGES[:3] if self._v7() else V6_IMAGES[:3]))
        return profile_id

    def _v7(self) -> bool:
        return not self.state.default_version.startswith("6")


def project(log: Iterable[ev.LoggedEvent], views: Views | None = None, start: int = 0) -> Views:
    """Fold ``log`` (positions counted from ``start``) into ``views`` or fresh ones."""
    views = views or fresh_projection()
    for offset, event in enumerate(log):
        views = views.fold(position(start + offset), event)
    return views


def fresh_projection(
    members: Mapping[str, MemberView] | None = None,
    profiles: Mapping[str, ProfileModel] | None = None,
) -> Views:
    """Views of an empty system, or of one that stored ``members`` and ``profiles``."""
    return Views(
        thresholds=THRESHOLDS,
        embeddings=EMBEDDINGS,
        priors={"": TastePrior.uninformed(DIM)},
        loaded_members=members or {},
        loaded_profiles=profiles or {},
    )


def summary(
    profile_id: str,
    *,
    name: str | None = None,
    family: str = "v7",
    version: str = "7",
    is_global: bool = False,
    picks: int = 3,
    needed: int = 3,
    latest_code: str | None = None,
    deleted: bool = False,
    created: int = 0,
) -> ProfileSummary:
    return ProfileSummary(
        profile_id=profile_id,
        name=name or profile_id,
        family=family,
        version=version,
        is_global=is_global,
        deleted=deleted,
        picks=picks,
        needed=needed,
        evidence=picks,
        latest_code=latest_code,
        created_at=at(created),
    )


def member_view(
    member_id: str,
    *profiles: ProfileSummary,
    defaults: Iterable[str] = (),
    personalization: bool = False,
    default_version: str = "7",
) -> MemberView:
    return MemberView(
        member_id=member_id,
        default_version=default_version,
        personalization=personalization,
        defaults=list(defaults),
        profiles={p.profile_id: p for p in profiles},
    )


def code_view(
    code: str,
    *,
    profile_id: str,
    vector: np.ndarray,
    member_id: str = "alice",
    profile_name: str | None = None,
    family: str = "v7",
    version: str = "7",
    minted: int = 0,
) -> CodeView:
    return CodeView(
        code=code,
        member_id=member_id,
        profile_id=profile_id,
        profile_name=profile_name or profile_id,
        family=family,
        version=version,
        vector=ev.encode_vector(vector),
        evidence=3,
        picks=3,
        minted_at=at(minted),
        position=position(minted),
    )


def minted(code: str, profile_id: str, name: str, evidence: int = 3) -> ev.CodeMinted:
    return ev.CodeMinted(
        code=code,
        profile_id=profile_id,
        profile_name=name,
        family="v7",
        version="7",
        vector=ev.encode_vector(np.array([1.0, 0.0, 0.0, 0.0])),
        evidence=evidence,
        picks=evidence,
    )
