"""A member's profiles and codes, as the Personalize page and ``/list_personalize_codes`` show them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel, Field

from .rpc import RpcRequest
from .views import CodeView, MemberView, ProfileSummary


class ListRequest(RpcRequest):
    """RPC request to ``pz:rpc:profiles``."""

    include_deleted: bool = Field(default=False, description="also list deleted profiles")


class ProfileListing(BaseModel):
    profile_id: str
    name: str
    family: str
    version: str
    is_global: bool
    deleted: bool
    picks: int
    needed: int
    unlocked: bool
    progress: float = Field(description="picks / needed, capped at 1.0, for a progress bar")
    evidence: int
    latest_code: str | None


class CodeListing(BaseModel):
    code: str
    profile_id: str
    profile_name_then: str
    profile_name_now: str | None
    family: str
    version: str
    minted_at: datetime
    evidence: int
    picks: int
    profile_deleted: bool


class Listing(BaseModel):
    """RPC reply: profiles (deleted ones only on request) and every code, newest first."""

    schema_version: int = 1
    member_id: str
    default_version: str
    personalization: bool
    defaults: list[str]
    profiles: list[ProfileListing]
    codes: list[CodeListing]


def listing(
    member_id: str,
    member: MemberView | None,
    codes: Sequence[CodeView],
    deleted: Mapping[str, ProfileSummary],
    include_deleted: bool,
) -> Listing:
    """The member's listing. ``codes``: every code they minted, newest first; ``deleted``:
    summaries of deleted profiles, by ID (all of them when ``include_deleted``, else at least
    those behind ``codes``), as they were when deleted."""
    if member is None:
        member = MemberView(member_id=member_id)
    shown = [*member.profiles.values(), *(deleted.values() if include_deleted else ())]
    return Listing(
        member_id=member_id,
        default_version=member.default_version,
        personalization=member.personalization,
        defaults=member.defaults,
        profiles=[_profile(p) for p in sorted(shown, key=lambda p: p.order)],
        codes=[_code(view, _now(view.profile_id, member, deleted)) for view in codes],
    )


def _now(
    profile_id: str, member: MemberView, deleted: Mapping[str, ProfileSummary]
) -> ProfileSummary | None:
    return member.profiles.get(profile_id) or deleted.get(profile_id)


def _profile(p: ProfileSummary) -> ProfileListing:
    return ProfileListing(
        **p.model_dump(include={"profile_id", "name", "family", "version", "is_global"}),
        deleted=p.deleted,
        picks=p.picks,
        needed=p.needed,
        unlocked=p.unlocked,
        progress=min(1.0, p.picks / p.needed),
        evidence=p.evidence,
        latest_code=p.latest_code,
    )


def _code(view: CodeView, now: ProfileSummary | None) -> CodeListing:
    return CodeListing(
        code=view.code,
        profile_id=view.profile_id,
        profile_name_then=view.profile_name,
        profile_name_now=now.name if now else None,
        family=view.family,
        version=view.version,
        minted_at=view.minted_at,
        evidence=view.evidence,
        picks=view.picks,
        profile_deleted=bool(now and now.deleted),
    )
