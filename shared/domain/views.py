"""Read models: what profile-projector writes and prompt-resolver reads.

All of them are disposable and rebuilt from the log; their JSON is canonical (sorted keys,
no spaces) so that a replay is comparable byte for byte with the live models, and each
carries the log ``position`` it reflects. Under ``pz:{pN}:rm:<generation>:``:

* ``member:<member>`` :class:`MemberView`, read on every event and every resolve of the
  member: settings, defaults and *active* profiles only, so its size is bounded by the
  profile limit, never by how many profiles were deleted or codes minted.
* ``profile:<id>`` :class:`ProfileModel`: a profile's learner state; once the profile is
  deleted, its summary then (and no learner state: it takes no more data).
* ``code:<code>`` :class:`CodeView`: an immutable code.
* ``codes:<member>|<n>`` :class:`MemberCode`: the member's n-th code (0 = first), and
  ``deleted:<member>|<n>`` :class:`MemberDeletion`: the n-th profile they deleted. Append
  only, written once; read only by the profiles listing (``|`` never occurs in a member ID).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from shared.taste.learner import TasteLearner
from shared.taste.prior import TastePrior

from .families import DEFAULT_VERSION


class View(BaseModel):
    """A read model: immutable (a fold makes a new one), canonical JSON on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Self:
        return cls.model_validate_json(data)


def canonical_json(value: object) -> bytes:
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class ProfileSummary(View):
    """A profile as its owner's pages show it: progress, latest code, status."""

    profile_id: str
    name: str
    family: str
    version: str
    is_global: bool
    deleted: bool = False
    picks: int = 0
    needed: int
    evidence: int = 0
    latest_code: str | None = None
    created_at: datetime
    created_position: str = "0-0"

    @property
    def order(self) -> tuple[bool, int, int, datetime]:
        """Global Profiles first, then in the order they were created (log position)."""
        millis, sequence = self.created_position.split("-")
        return (not self.is_global, int(millis), int(sequence), self.created_at)

    @property
    def unlocked(self) -> bool:
        return self.picks >= self.needed

    @property
    def remaining(self) -> int:
        return max(0, self.needed - self.picks)


class MemberView(View):
    """One member: settings, defaults, active profiles, and how many codes they minted and
    profiles they deleted (the ``codes:`` and ``deleted:`` entries, numbered from 0)."""

    member_id: str
    default_version: str = DEFAULT_VERSION
    personalization: bool = False
    defaults: list[str] = []
    profiles: dict[str, ProfileSummary] = Field(default={}, description="active profiles only")
    codes_minted: int = 0
    profiles_deleted: int = 0
    position: str = "0-0"

    def global_profile(self, family: str) -> ProfileSummary | None:
        for profile in self.profiles.values():
            if profile.is_global and profile.family == family:
                return profile
        return None


class ProfileModel(View):
    """A profile's learner state (base64), kept apart from the summary the resolver reads;
    once deleted, the summary it had then (``deleted`` set) instead of a learner state."""

    profile_id: str
    member_id: str
    state: str = ""
    position: str = "0-0"
    prior: str = Field(default="", description="model_id of the prior it learns with ('' = none)")
    summary: ProfileSummary | None = Field(default=None, description="only once deleted")

    def learner(self, prior: TastePrior) -> TasteLearner:
        """The profile's learner, which learns with ``prior`` (fresh before its first signal)."""
        if not self.state:
            return TasteLearner(prior)
        return TasteLearner.from_state(prior, base64.b64decode(self.state))

    def taught(self, learner: TasteLearner, position: str) -> Self:
        """This model holding ``learner``'s state, as of ``position``."""
        state = base64.b64encode(learner.state()).decode()
        return self.model_copy(update={"state": state, "position": position})


class MemberCode(View):
    """The ``index``-th code a member minted (0 = the first): the listing's order."""

    member_id: str
    index: int
    code: str
    position: str


class MemberDeletion(View):
    """The ``index``-th profile a member deleted; its summary is on its ``ProfileModel``."""

    member_id: str
    index: int
    profile_id: str
    position: str


class PriorView(View):
    """The population prior a partition's new profiles start from (the latest published)."""

    model_id: str
    position: str


class CodeView(View):
    """An immutable code: the snapshot of one profile state, from its CodeMinted event."""

    code: str
    member_id: str
    profile_id: str
    profile_name: str
    family: str
    version: str
    vector: str
    evidence: int
    picks: int
    minted_at: datetime
    position: str
