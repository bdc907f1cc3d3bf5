"""The read-model port: what the application layer reads and commits, whatever stores it.

Implementations (``shared/adapters/readmodels.py``): Redis, the real one, and an in-memory
one for fast tests of the application layer; ``tests/readmodels_contract.py`` holds both to
one contract. A partition is given by its index: a member's view, her profiles' models and
her codes all live in her partition (``partition_of`` of the member ID, profile ID or code).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, Self

import numpy as np

from shared.taste.learner import TasteLearner
from shared.taste.prior import TastePrior

from .projection import Changed
from .views import CodeView, MemberDeletion, MemberView, ProfileModel


@dataclass(frozen=True)
class Found:
    """The models :meth:`ReadModels.read` found, by ID (one that does not exist is absent)."""

    members: Mapping[str, MemberView]
    profiles: Mapping[str, ProfileModel]
    codes: Mapping[str, CodeView]


class ReadModels(Protocol):
    """One generation of the read models: profile-projector commits them, everyone reads them."""

    @property
    def generation(self) -> int: ...

    def at(self, generation: int) -> Self:
        """The same read models (and caches) in another generation."""
        ...

    async def active_generation(self) -> int:
        """The generation readers use (1 until something establishes one)."""
        ...

    def position_key(self, partition: int) -> str:
        """Where the partition's position is stored (a follower reads it and moves it)."""
        ...

    async def position(self, partition: int) -> str:
        """The log position the partition's models reflect (``0-0``: none yet)."""
        ...

    async def read(
        self,
        *,
        members: Iterable[str] = (),
        profiles: Iterable[str] = (),
        codes: Iterable[str] = (),
        partition: int | None = None,
    ) -> Found:
        """Member views, profile models and codes, in one round trip; each in the partition
        of its ID unless ``partition`` is given."""
        ...

    async def member_codes(self, member: MemberView) -> list[CodeView]:
        """Every code the member minted, newest first."""
        ...

    async def deletions(self, member: MemberView) -> list[MemberDeletion]:
        """Every profile the member deleted, first deleted first."""
        ...

    async def current_prior(self, partition: int) -> str:
        """The model ID of the prior the partition's new profiles start from (``""``: none)."""
        ...

    async def priors(self, partition: int, model_ids: Iterable[str]) -> dict[str, TastePrior]:
        """Priors by model ID (``""``: the uninformed one); LookupError if one is unknown."""
        ...

    async def learner(self, partition: int, profile_id: str | None) -> TasteLearner:
        """The profile's learner; a fresh one of the current prior if it has no model yet."""
        ...

    async def learners(self, partition: int) -> list[TasteLearner]:
        """The learner of every profile of the partition that has taken a signal."""
        ...

    async def embeddings(self, image_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Catalog embeddings (float64) by image ID; LookupError if one is not in the catalog."""
        ...

    async def catalog_sample(self, limit: int) -> np.ndarray:
        """The embeddings (n, d) of up to ``limit`` catalog images; ValueError if none."""
        ...

    async def snapshot(self, partition: int) -> dict[str, bytes]:
        """Every model of the partition in its stored form, by its key in the generation."""
        ...

    async def commit(
        self, partition: int, position: str, last: str, changed: Changed, emit_changes: bool
    ) -> bool:
        """Store what a batch changed and move the position from ``position`` to ``last``, in
        one atomic step; False (and nothing stored) if the position was not ``position``.
        With ``emit_changes``, the profile changes go to the partition's change stream."""
        ...
