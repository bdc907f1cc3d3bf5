"""prompt-resolver's pure core: turn a parsed prompt and the member's read models into the
conditioning the generator applies, or a clear error with a stable code.

Resolution happens in steps so the I/O stays outside: :func:`lookups` says which codes and
profile IDs the adapter must fetch, :func:`followups` which member views and profile models
tell whether those codes' profiles were deleted (the owners' views hold active profiles
only), :func:`deleted_profiles` reads that answer, and :func:`resolve` decides. Nothing read
grows with how many profiles a member deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, Field

from shared.prompt.grammar import ParsedPrompt, PValue, render_prompt, strength
from shared.taste.vectors import scaled_norm, unit

from .events import decode_vector
from .families import DEFAULT_VERSION, family_of, usable_with
from .rpc import RpcRequest
from .views import CodeView, MemberView, ProfileModel, ProfileSummary

#: A weighted sum shorter than this fraction of its terms' total length counts as cancelled.
CANCELLED = 1e-9


class ResolveRequest(RpcRequest):
    """RPC request to ``pz:rpc:resolve``: whose prompt, and the prompt as typed."""

    prompt: str


class ResolvedEntry(BaseModel):
    code: str
    weight: float
    family: str
    version: str
    source: str = Field(description="'code', 'profile' or 'default'")
    profile_id: str | None = Field(default=None, description="only for the code's owner")
    profile_name: str | None = None


class ResolveError(BaseModel):
    code: str = Field(description="stable machine code, see README")
    message: str
    token: str = ""
    position: int = -1


class ResolveResponse(BaseModel):
    """RPC reply: the canonical prompt and the conditioning, or an error."""

    schema_version: int = 1
    ok: bool
    prompt: str | None = None
    version: str | None = None
    family: str | None = None
    stylize: int | None = None
    strength: float | None = None
    entries: list[ResolvedEntry] = []
    vector: list[float] | None = None
    warnings: list[str] = []
    error: ResolveError | None = None


class Refusal(Exception):
    def __init__(self, code: str, message: str, token: str = "", position: int = -1) -> None:
        super().__init__(message)
        self.error = ResolveError(code=code, message=message, token=token, position=position)


@dataclass(frozen=True)
class Wanted:
    """What to fetch: codes, profile models (by profile ID) and member views (by member)."""

    codes: set[str] = field(default_factory=set)
    profiles: set[str] = field(default_factory=set)
    members: set[str] = field(default_factory=set)


def prompt_version(parsed: ParsedPrompt, member: MemberView | None) -> str:
    return parsed.version or (member.default_version if member else DEFAULT_VERSION)


def applies(parsed: ParsedPrompt, member: MemberView | None) -> bool:
    return parsed.personalize or bool(member and member.personalization)


def lookups(parsed: ParsedPrompt, member: MemberView | None) -> Wanted:
    """The codes and foreign profile IDs :func:`resolve` may need for this prompt."""
    own = member.profiles if member else {}
    wanted = Wanted()
    for value in parsed.p_values:
        if value.value in own:
            wanted.codes.add(own[value.value].latest_code or "")
        else:
            (wanted.codes if value.looks_like_code else wanted.profiles).add(value.value)
    if member is not None and not parsed.p_values:
        wanted.codes.update(p.latest_code or "" for p in member.profiles.values())
    wanted.codes.discard("")
    return wanted


def followups(member_id: str, member: MemberView | None, codes: Mapping[str, CodeView]) -> Wanted:
    """After the codes came back: the views of other members whose codes these are, and the
    models of the member's own profiles behind codes that are not among her active ones."""
    active = member.profiles if member else {}
    wanted = Wanted()
    for view in codes.values():
        if view.member_id != member_id:
            wanted.members.add(view.member_id)
        elif view.profile_id not in active:
            wanted.profiles.add(view.profile_id)
    return wanted


def deleted_profiles(
    member_id: str,
    codes: Mapping[str, CodeView],
    models: Mapping[str, ProfileModel],
    owners: Mapping[str, MemberView],
) -> dict[str, ProfileSummary | None]:
    """The profiles known to be deleted, with their summary where it was read (the member's
    own). A shared code's profile is deleted when its owner's view, written with or after
    the code, no longer has it among the active profiles."""
    deleted: dict[str, ProfileSummary | None] = {
        profile_id: model.summary for profile_id, model in models.items() if model.summary
    }
    for view in codes.values():
        owner = owners.get(view.member_id)
        if view.member_id != member_id and owner and view.profile_id not in owner.profiles:
            deleted[view.profile_id] = None
    return deleted


def resolve(
    parsed: ParsedPrompt,
    member_id: str,
    member: MemberView | None,
    codes: Mapping[str, CodeView],
    foreign_profiles: Mapping[str, str],
    deleted: Mapping[str, ProfileSummary | None] | None = None,
    needed: Mapping[str, int] | None = None,
) -> ResolveResponse:
    """Resolve ``parsed`` for ``member_id``. ``codes`` holds the codes found, by code;
    ``foreign_profiles`` maps profile IDs that exist but are not among the member's active
    profiles to their owners; ``deleted`` names the profiles known to be deleted (see
    :func:`deleted_profiles`), for refusals and warnings."""
    deleted = deleted or {}
    version = prompt_version(parsed, member)
    base = ResolveResponse(
        ok=True, version=version, family=family_of(version), stylize=parsed.stylize
    )
    if not applies(parsed, member):
        return base.model_copy(update={"prompt": render_prompt(parsed, None), "strength": 0.0})
    known = Known(member_id, member, codes, foreign_profiles, deleted, needed or {})
    try:
        entries, warnings = _entries(parsed, known, version)
        vector = _combine(parsed, entries, codes)
    except Refusal as refusal:
        if not parsed.personalize:
            return _without_defaults(parsed, base, refusal)
        return base.model_copy(update={"ok": False, "error": refusal.error})
    warnings += [
        f"code {e.code} comes from a deleted profile; it keeps working"
        for e in entries
        if codes[e.code].profile_id in deleted
    ]
    return base.model_copy(
        update={
            "prompt": render_prompt(parsed, [_token(e) for e in entries]),
            "strength": strength(parsed.stylize),
            "entries": entries,
            "vector": vector.tolist(),
            "warnings": warnings,
        }
    )


def _without_defaults(
    parsed: ParsedPrompt, base: ResolveResponse, refusal: Refusal
) -> ResolveResponse:
    """Personalization switched on never blocks a prompt that did not ask for ``--p``: when
    the defaults cannot apply, the prompt goes out without them, with a warning."""
    warning = f"personalization is on but was not applied: {refusal.error.message}"
    update = {"prompt": render_prompt(parsed, None), "strength": 0.0, "warnings": [warning]}
    return base.model_copy(update=update)


def _token(entry: ResolvedEntry) -> str:
    """The entry as a canonical ``--p`` value: its code, and its weight unless 1."""
    return entry.code if entry.weight == 1.0 else f"{entry.code}::{_decimal(entry.weight)}"


def _decimal(weight: float) -> str:
    """The weight as a plain decimal that parses back to the same float (never 1e-05)."""
    return np.format_float_positional(weight, trim="-")


@dataclass(frozen=True)
class Known:
    """What resolving a prompt of ``member_id`` found: see :func:`resolve`."""

    member_id: str
    member: MemberView | None
    codes: Mapping[str, CodeView]
    foreign: Mapping[str, str]
    deleted: Mapping[str, ProfileSummary | None]
    needed: Mapping[str, int]


def _entries(
    parsed: ParsedPrompt, known: Known, version: str
) -> tuple[list[ResolvedEntry], list[str]]:
    family = family_of(version)
    if family is None:
        token, position = _version_token(parsed)
        raise Refusal(
            "VERSION_MISMATCH",
            f"personalization works with V6 (6, 6.1) and V7 (7, 8, 8.1); version {version} has "
            "none: use --v 6, 6.1, 7, 8 or 8.1",
            token,
            position,
        )
    if not parsed.p_values:
        return _defaults(parsed, known.member, version, family, known.needed.get(family)), []
    return [_entry(value, known, version) for value in parsed.p_values], []


def _defaults(
    parsed: ParsedPrompt,
    member: MemberView | None,
    version: str,
    family: str,
    needed: int | None,
) -> list[ResolvedEntry]:
    token, position = _p_token(parsed)
    profiles = member.profiles if member else {}
    selected = [profiles[p] for p in (member.defaults if member else []) if p in profiles]
    usable = [p for p in selected if usable_with(p.family, p.version, version)]  # type: ignore[arg-type]
    if not usable:
        found = member.global_profile(family) if member else None
        if found is None:
            how_many = f"{needed} images (0/{needed})" if needed else "images"
            raise Refusal(
                "PROFILE_LOCKED",
                f"pick {how_many} to unlock your Global {family.upper()} Profile",
                token,
                position,
            )
        usable = [found]
    return [_from_profile(p, 1.0, version, "default", token, position) for p in usable]


def _entry(value: PValue, known: Known, version: str) -> ResolvedEntry:
    member, member_id = known.member, known.member_id
    own = member.profiles.get(value.value) if member else None
    if own is not None:
        return _from_profile(own, value.weight, version, "profile", value.token, value.position)
    view = known.codes.get(value.value)
    if view is not None:
        if not usable_with(view.family, view.version, version):  # type: ignore[arg-type]
            raise _mismatch(f"code {view.code}", view.family, view.version, version, value)
        mine = view.member_id == member_id
        active = member.profiles.get(view.profile_id) if member else None
        now = active or known.deleted.get(view.profile_id)
        return ResolvedEntry(
            code=view.code,
            weight=value.weight,
            family=view.family,
            version=view.version,
            source="code",
            profile_id=view.profile_id if mine else None,
            profile_name=(now.name if now else view.profile_name) if mine else None,
        )
    if known.foreign.get(value.value) == member_id:
        raise _inactive_own_profile(value, value.value in known.deleted)
    if value.value in known.foreign:
        raise Refusal(
            "NOT_OWNER",
            f"profile {value.value!r} belongs to another member; ask them for one of its codes",
            value.token,
            value.position,
        )
    kind = "code" if value.looks_like_code else "profile ID"
    raise Refusal(
        "UNKNOWN_CODE",
        f"no {kind} {value.value!r} exists; use a code (7 letters/digits) or one of your profile IDs",
        value.token,
        value.position,
    )


def _inactive_own_profile(value: PValue, deleted: bool) -> Refusal:
    if deleted:
        return Refusal(
            "PROFILE_DELETED",
            f"profile {value.value!r} is deleted; its codes keep working: use one of them",
            value.token,
            value.position,
        )
    # Her view was read just before the profile's creation was projected: it is brand new.
    return Refusal(
        "PROFILE_LOCKED",
        f"your profile {value.value!r} was just created: pick images for it to unlock it",
        value.token,
        value.position,
    )


def _from_profile(
    profile: ProfileSummary, weight: float, version: str, source: str, token: str, position: int
) -> ResolvedEntry:
    if not usable_with(profile.family, profile.version, version):  # type: ignore[arg-type]
        raise Refusal(
            "VERSION_MISMATCH",
            f"profile {profile.name!r} is a {profile.family.upper()} profile made for version "
            f"{profile.version}; it cannot condition a --v {version} prompt",
            token,
            position,
        )
    if profile.latest_code is None and profile.unlocked:
        raise Refusal(
            "CODE_PENDING",
            f"your {profile.family.upper()} profile {profile.name!r} just unlocked and its first "
            "code is being minted: try again in a moment",
            token,
            position,
        )
    if profile.latest_code is None:
        raise Refusal(
            "PROFILE_LOCKED",
            f"pick {max(1, profile.remaining)} more images to unlock your "
            f"{profile.family.upper()} profile {profile.name!r} ({profile.picks}/{profile.needed})",
            token,
            position,
        )
    return ResolvedEntry(
        code=profile.latest_code,
        weight=weight,
        family=profile.family,
        version=profile.version,
        source=source,
        profile_id=profile.profile_id,
        profile_name=profile.name,
    )


def _mismatch(what: str, family: str, made_for: str, version: str, value: PValue) -> Refusal:
    return Refusal(
        "VERSION_MISMATCH",
        f"{what} is a {family.upper()} code made for version {made_for}; "
        f"it cannot condition a --v {version} prompt",
        value.token,
        value.position,
    )


def _combine(
    parsed: ParsedPrompt, entries: list[ResolvedEntry], codes: Mapping[str, CodeView]
) -> np.ndarray:
    """The unit vector of the weighted sum of the entries' code vectors.

    A sum whose length is lost in rounding next to the lengths that went into it (opposite
    codes with equal weights) has no direction worth applying: that is refused, never
    answered with a zero or noise vector.
    """
    vectors = [decode_vector(codes[entry.code].vector) * entry.weight for entry in entries]
    total = np.sum(vectors, axis=0)
    size = sum(scaled_norm(v) for v in vectors)
    if not scaled_norm(total) > CANCELLED * size:
        token, position = _p_token(parsed)
        values = " ".join(_token(e) for e in entries)
        raise Refusal(
            "INVALID_PARAMETER",
            f"the --p values '{values}' cancel out: their weighted sum has no direction;"
            " change a weight or leave a value out",
            token,
            position,
        )
    return unit(total)


def _p_token(parsed: ParsedPrompt) -> tuple[str, int]:
    for param in parsed.params:
        if param.name == "p":
            return param.raw_name, param.position
    return "", -1


def _version_token(parsed: ParsedPrompt) -> tuple[str, int]:
    for param in parsed.params:
        if param.name == "v":
            return f"{param.raw_name} {param.value}", param.position
    return "", -1
