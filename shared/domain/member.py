"""The member aggregate that selection-ingest decides with: pure ``decide`` and ``evolve``.

``decide`` checks an inbound message against the member's current state and returns the
events to append (or raises :class:`Rejected`); ``evolve`` folds an appended event into the
state. Ingest stores the state beside the log and appends with optimistic concurrency on
``MemberState.version``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import singledispatch

from pydantic import BaseModel, ConfigDict, Field

from . import events as ev
from .families import DEFAULT_VERSION, Family, family_of

MAX_PROFILES = 100


class Rejected(Exception):
    """An inbound message that cannot be accepted: what was wrong, in which field."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class ImageInfo:
    """A catalog image as ingest sees it; a ``pending`` one is claimed by a registration
    whose event is not in the log yet: no one may show, like or rank it."""

    creator: str
    model_version: str
    registered_by: str = ""
    pending: bool = False

    @property
    def family(self) -> Family | None:
        return family_of(self.model_version)


@dataclass(frozen=True)
class Rules:
    unlock: Mapping[str, int]
    embed_dim: int
    grids_kept: int = 64


class ProfileState(BaseModel):
    model_config = ConfigDict(frozen=True)

    profile_id: str
    family: str
    version: str
    name: str
    is_global: bool
    deleted: bool = False
    ratings: int = 0


class GridState(BaseModel):
    model_config = ConfigDict(frozen=True)

    profile_id: str
    images: list[str]
    picked: list[str] = []

    @property
    def remaining(self) -> list[str]:
        return [image for image in self.images if image not in self.picked]


class MemberState(BaseModel):
    """What ingest decides with, read on every message of the member, so nothing in it may
    grow without bound: deleted profile IDs and liked images live in sets beside it
    (:func:`set_changes`), and ``gone`` and ``likes`` hold what those sets say about the
    profiles and images the messages being decided name (:class:`Needs`). ``liked`` is
    only read: states written before the sets existed."""

    model_config = ConfigDict(frozen=True)

    version: int = 0
    default_version: str = DEFAULT_VERSION
    profiles: dict[str, ProfileState] = {}
    globals: dict[str, str] = {}
    grids: dict[str, GridState] = {}
    liked: list[str] = []
    defaults: list[str] = []
    personalization: bool = False
    gone: frozenset[str] = Field(default=frozenset(), exclude=True)
    likes: frozenset[str] = Field(default=frozenset(), exclude=True)

    def owned(self, profile_id: str, field: str = "payload.profile_id") -> ProfileState:
        profile = self.profiles.get(profile_id)
        if self.is_deleted(profile_id):
            raise Rejected(
                "PROFILE_DELETED", f"profile {profile_id!r} is deleted and takes no data", field
            )
        if profile is None:
            raise Rejected("NOT_OWNER", f"profile {profile_id!r} is not one of yours", field)
        return profile

    def has_liked(self, image_id: str) -> bool:
        return image_id in self.likes or image_id in self.liked

    def is_deleted(self, profile_id: str) -> bool:
        profile = self.profiles.get(profile_id)
        return profile_id in self.gone or (profile is not None and profile.deleted)

    def global_profile(self, family: str) -> ProfileState | None:
        profile_id = self.globals.get(family)
        return self.profiles[profile_id] if profile_id else None

    def to_bytes(self) -> bytes:
        """The stored form, ``b"<version> <json>"``: ingest's append script compares the
        version prefix with the one the batch was decided on."""
        return f"{self.version} {self.model_dump_json()}".encode()

    @classmethod
    def from_bytes(cls, stored: bytes | None) -> MemberState:
        """A stored state; ``None`` (nothing stored) is a member never seen."""
        if stored is None:
            return cls()
        version, state = stored.split(b" ", 1)
        loaded = cls.model_validate_json(state)
        assert loaded.version == int(version), f"state version {loaded.version} != {version!r}"
        return loaded


Catalog = Mapping[str, ImageInfo]
NewId = Callable[[], str]


class Unhandled(TypeError):
    """An event type without one of its handlers: say which, and where it goes."""

    def __init__(self, handler: str, payload: object, where: str) -> None:
        super().__init__(
            f"{type(payload).__name__} has no {handler} handler; register one with "
            f"@{handler}.register in {where} (README, 'Adding an event')"
        )


@dataclass(frozen=True)
class Context:
    """Everything deciding one inbound message reads besides the message itself."""

    state: MemberState
    member_id: str
    catalog: Catalog
    rules: Rules
    new_id: NewId


@dataclass(frozen=True)
class Needs:
    """What deciding a message reads beyond the member's state: catalog ``images``, and
    which profiles (``profiles``, or the profile of ``grid``) and ``likes`` it names must
    be looked up in the member's sets (deleted profiles, liked images)."""

    images: frozenset[str] = frozenset()
    profiles: frozenset[str] = frozenset()
    grid: str | None = None
    likes: frozenset[str] = frozenset()

    def unknown_profiles(self, state: MemberState) -> set[str]:
        """The named profiles that are not among the state's (active) profiles."""
        named = set(self.profiles)
        if self.grid is not None and self.grid in state.grids:
            named.add(state.grids[self.grid].profile_id)
        return named - state.profiles.keys()


WHERE = "shared/domain/member.py"


@singledispatch
def decide(payload: ev.Payload, context: Context) -> list[ev.Payload]:
    """The events that an accepted inbound message appends; ``[]`` means ignored."""
    raise Unhandled("decide", payload, WHERE)


@singledispatch
def needs(payload: ev.Payload) -> Needs:
    """What deciding ``payload`` reads besides the member's state."""
    raise Unhandled("needs", payload, WHERE)


@singledispatch
def evolved(payload: ev.Payload, state: MemberState, rules: Rules) -> dict[str, object]:
    """The fields of the member's state an appended event changes."""
    raise Unhandled("evolved", payload, WHERE)


def evolve(state: MemberState, payload: ev.Payload, rules: Rules) -> MemberState:
    """Fold one appended event into the member's ingest state."""
    changes = evolved(payload, state, rules)
    return state.model_copy(update={**changes, "version": state.version + 1})


SetChange = tuple[str, str, str]
"""(``"gone"`` or ``"liked"``, ``"add"`` or ``"remove"``, the member's profile or image ID)."""


def set_changes(before: MemberState, after: MemberState) -> list[SetChange]:
    """What folding an event (``before`` -> ``after``) changes in the member's sets beside
    the state: the sets hold exactly what ``gone`` and ``likes`` learn and forget."""
    return [
        *(("gone", "add", p) for p in sorted(after.gone - before.gone)),
        *(("liked", "add", i) for i in sorted(after.likes - before.likes)),
        *(("liked", "remove", i) for i in sorted(before.likes - after.likes)),
    ]


def _image(catalog: Catalog, image_id: str, field: str) -> ImageInfo:
    info = catalog.get(image_id)
    if info is None or info.pending:
        raise Rejected("UNKNOWN_IMAGE", f"image {image_id!r} is not registered", field)
    return info


def _family_or_reject(version: str, field: str) -> Family:
    family = family_of(version)
    if family is None:
        raise Rejected(
            "VERSION_MISMATCH",
            f"version {version} has no personalization; use V6 (6, 6.1) or V7 (7, 8, 8.1)",
            field,
        )
    return family


def _global_for(context: Context, family: Family) -> tuple[str, list[ev.Payload]]:
    existing = context.state.global_profile(family)
    if existing is not None:
        return existing.profile_id, []
    profile_id = context.new_id()
    version = "7" if family == "v7" else "6.1"
    created = ev.ProfileCreated(
        name=f"Global {family.upper()} Profile",
        profile_id=profile_id,
        family=family,
        version=version,
        is_global=True,
    )
    return profile_id, [created]


def _with_profile(state: MemberState, profile_id: str, **update: object) -> dict[str, object]:
    profile = state.profiles[profile_id].model_copy(update=update)
    return {"profiles": {**state.profiles, profile_id: profile}}


def _bump(state: MemberState, profile_id: str | None) -> dict[str, object]:
    assert profile_id is not None  # ingest derives it for every event that rates a profile
    return _with_profile(state, profile_id, ratings=state.profiles[profile_id].ratings + 1)


# ImageRegistered


@decide.register
def _(payload: ev.ImageRegistered, context: Context) -> list[ev.Payload]:
    if len(payload.embedding) != context.rules.embed_dim:
        raise Rejected(
            "INVALID_FIELD",
            f"embedding has {len(payload.embedding)} values; this system uses "
            f"{context.rules.embed_dim}",
            "payload.embedding",
        )
    if payload.image_id in context.catalog:
        raise Rejected(
            "DUPLICATE_IMAGE",
            f"image {payload.image_id!r} is already registered; images are immutable",
            "payload.image_id",
        )
    return [payload]


@needs.register
def _(payload: ev.ImageRegistered) -> Needs:
    return Needs(images=frozenset({payload.image_id}))


# GridServed


@decide.register
def _(payload: ev.GridServed, context: Context) -> list[ev.Payload]:
    state = context.state
    if payload.grid_id in state.grids:
        raise Rejected("DUPLICATE_GRID", f"grid {payload.grid_id!r} was served already")
    images = [_image(context.catalog, i, "payload.image_ids") for i in payload.image_ids]
    derived: list[ev.Payload] = []
    family: str
    if payload.profile_id is None:
        family = _family_or_reject(state.default_version, "default_version")
        profile_id, derived = _global_for(context, family)
    else:
        profile = state.owned(payload.profile_id, "payload.profile_id")
        profile_id, family = profile.profile_id, profile.family
    foreign = [
        i for i, info in zip(payload.image_ids, images, strict=True) if info.family != family
    ]
    if foreign:
        raise Rejected(
            "VERSION_MISMATCH",
            f"a grid for a {family.upper()} profile shows only {family.upper()} images; "
            f"{', '.join(repr(i) for i in foreign[:3])}{' and more' if len(foreign) > 3 else ''} "
            "were made with another version",
            "payload.image_ids",
        )
    return [*derived, payload.model_copy(update={"profile_id": profile_id})]


@needs.register
def _(payload: ev.GridServed) -> Needs:
    profiles = frozenset({payload.profile_id}) if payload.profile_id else frozenset()
    return Needs(images=frozenset(payload.image_ids), profiles=profiles)


@evolved.register
def _(payload: ev.GridServed, state: MemberState, rules: Rules) -> dict[str, object]:
    assert payload.profile_id is not None  # ingest derives it
    grid = GridState(profile_id=payload.profile_id, images=payload.image_ids)
    grids = {**state.grids, payload.grid_id: grid}
    while len(grids) > rules.grids_kept:
        grids.pop(next(iter(grids)))
    return {"grids": grids}


# ImagePicked


@decide.register
def _(payload: ev.ImagePicked, context: Context) -> list[ev.Payload]:
    grid = context.state.grids.get(payload.grid_id)
    if grid is None:
        raise Rejected(
            "UNKNOWN_GRID",
            f"grid {payload.grid_id!r} was not served to this member (or is too old)",
            "payload.grid_id",
        )
    if payload.image_id not in grid.images:
        raise Rejected(
            "NOT_IN_GRID",
            f"image {payload.image_id!r} is not in grid {payload.grid_id!r}",
            "payload.image_id",
        )
    if payload.image_id in grid.picked:
        return []
    context.state.owned(grid.profile_id, "payload.grid_id")
    enriched = {"profile_id": grid.profile_id, "candidates": grid.remaining}
    return [payload.model_copy(update=enriched)]


@needs.register
def _(payload: ev.ImagePicked) -> Needs:
    return Needs(grid=payload.grid_id)


@evolved.register
def _(payload: ev.ImagePicked, state: MemberState, rules: Rules) -> dict[str, object]:
    grid = state.grids[payload.grid_id]
    picked = grid.model_copy(update={"picked": [*grid.picked, payload.image_id]})
    return {"grids": {**state.grids, payload.grid_id: picked}, **_bump(state, payload.profile_id)}


# ImageLiked, ImageUnliked


@decide.register
def _(payload: ev.ImageLiked, context: Context) -> list[ev.Payload]:
    info = _image(context.catalog, payload.image_id, "payload.image_id")
    if (
        info.creator == context.member_id
        or context.state.has_liked(payload.image_id)
        or info.family is None
    ):
        return []
    profile_id, derived = _global_for(context, info.family)
    return [*derived, payload.model_copy(update={"profile_id": profile_id})]


@decide.register
def _(payload: ev.ImageUnliked, context: Context) -> list[ev.Payload]:
    info = _image(context.catalog, payload.image_id, "payload.image_id")
    if not context.state.has_liked(payload.image_id) or info.family is None:
        return []
    profile = context.state.global_profile(info.family)
    assert profile is not None  # a like created it
    return [payload.model_copy(update={"profile_id": profile.profile_id})]


@needs.register
def _(payload: ev.ImageLiked | ev.ImageUnliked) -> Needs:
    image = frozenset({payload.image_id})
    return Needs(images=image, likes=image)


@evolved.register
def _(payload: ev.ImageLiked, state: MemberState, rules: Rules) -> dict[str, object]:
    return {"likes": state.likes | {payload.image_id}}


@evolved.register
def _(payload: ev.ImageUnliked, state: MemberState, rules: Rules) -> dict[str, object]:
    return {
        "likes": state.likes - {payload.image_id},
        "liked": [image for image in state.liked if image != payload.image_id],
    }


# PairRanked


@decide.register
def _(payload: ev.PairRanked, context: Context) -> list[ev.Payload]:
    if payload.winner_image_id == payload.loser_image_id:
        raise Rejected("INVALID_FIELD", "a pair needs two different images", "payload")
    winner = _image(context.catalog, payload.winner_image_id, "payload.winner_image_id")
    loser = _image(context.catalog, payload.loser_image_id, "payload.loser_image_id")
    family = _family_or_reject(winner.model_version, "payload.winner_image_id")
    if loser.family != family:
        raise Rejected(
            "VERSION_MISMATCH",
            f"both images of a pair must come from one family; got {family} and {loser.family}",
            "payload.loser_image_id",
        )
    profile_id, derived = _global_for(context, family)
    return [*derived, payload.model_copy(update={"profile_id": profile_id})]


@needs.register
def _(payload: ev.PairRanked) -> Needs:
    return Needs(images=frozenset({payload.winner_image_id, payload.loser_image_id}))


@evolved.register
def _(payload: ev.PairRanked, state: MemberState, rules: Rules) -> dict[str, object]:
    return _bump(state, payload.profile_id)


# ProfileCreated


@decide.register
def _(payload: ev.ProfileCreated, context: Context) -> list[ev.Payload]:
    state = context.state
    family = _family_or_reject(state.default_version, "default_version")
    base = state.global_profile(family)
    needed = context.rules.unlock[family]
    have = base.ratings if base else 0
    if have < needed:
        raise Rejected(
            "PROFILE_LOCKED",
            f"unlock your Global {family.upper()} Profile first: pick {needed - have} more images",
            "type",
        )
    if sum(not p.deleted for p in state.profiles.values()) >= MAX_PROFILES:
        raise Rejected(
            "PROFILE_LIMIT",
            f"a member has at most {MAX_PROFILES} profiles (deleted ones do not count); "
            "delete one before creating another",
            "type",
        )
    created = ev.ProfileCreated(
        name=payload.name,
        profile_id=context.new_id(),
        family=family,
        version=state.default_version,
        is_global=False,
    )
    return [created]


@evolved.register
def _(payload: ev.ProfileCreated, state: MemberState, rules: Rules) -> dict[str, object]:
    assert payload.profile_id and payload.family and payload.version  # ingest derives them
    profile = ProfileState(
        profile_id=payload.profile_id,
        family=payload.family,
        version=payload.version,
        name=payload.name,
        is_global=payload.is_global,
    )
    update: dict[str, object] = {"profiles": {**state.profiles, payload.profile_id: profile}}
    if payload.is_global:
        update["globals"] = {**state.globals, payload.family: payload.profile_id}
    return update


# ProfileRenamed, ProfileDeleted, DefaultProfilesSelected


@decide.register
def _(payload: ev.ProfileRenamed, context: Context) -> list[ev.Payload]:
    context.state.owned(payload.profile_id)
    return [payload]


@needs.register
def _(payload: ev.ProfileRenamed | ev.ProfileDeleted) -> Needs:
    return Needs(profiles=frozenset({payload.profile_id}))


@evolved.register
def _(payload: ev.ProfileRenamed, state: MemberState, rules: Rules) -> dict[str, object]:
    return _with_profile(state, payload.profile_id, name=payload.name)


@decide.register
def _(payload: ev.ProfileDeleted, context: Context) -> list[ev.Payload]:
    if context.state.is_deleted(payload.profile_id):
        return []
    profile = context.state.owned(payload.profile_id)
    if profile.is_global:
        raise Rejected("GLOBAL_PROFILE", "a Global Profile cannot be deleted", "payload.profile_id")
    return [payload]


@evolved.register
def _(payload: ev.ProfileDeleted, state: MemberState, rules: Rules) -> dict[str, object]:
    gone = payload.profile_id
    return {
        "profiles": {pid: profile for pid, profile in state.profiles.items() if pid != gone},
        "gone": state.gone | {gone},
        "defaults": [d for d in state.defaults if d != gone],
    }


@decide.register
def _(payload: ev.DefaultProfilesSelected, context: Context) -> list[ev.Payload]:
    for profile_id in payload.profile_ids:
        context.state.owned(profile_id, "payload.profile_ids")
    return [payload]


@needs.register
def _(payload: ev.DefaultProfilesSelected) -> Needs:
    return Needs(profiles=frozenset(payload.profile_ids))


@evolved.register
def _(payload: ev.DefaultProfilesSelected, state: MemberState, rules: Rules) -> dict[str, object]:
    return {"defaults": list(payload.profile_ids)}


# PersonalizationToggled, DefaultVersionSet: settings, always accepted


@decide.register
def _(
    payload: ev.PersonalizationToggled | ev.DefaultVersionSet, context: Context
) -> list[ev.Payload]:
    return [payload]


@needs.register
def _(payload: ev.ProfileCreated | ev.PersonalizationToggled | ev.DefaultVersionSet) -> Needs:
    return Needs()


@evolved.register
def _(payload: ev.PersonalizationToggled, state: MemberState, rules: Rules) -> dict[str, object]:
    return {"personalization": payload.enabled}


@evolved.register
def _(payload: ev.DefaultVersionSet, state: MemberState, rules: Rules) -> dict[str, object]:
    return {"default_version": payload.version}


# Events that change nothing ingest decides with: the catalog lives apart, and the system's
# own events (codes, priors) are not about what a member may do.


@evolved.register
def _(
    payload: ev.ImageRegistered | ev.CodeMinted | ev.TasteModelPublished,
    state: MemberState,
    rules: Rules,
) -> dict[str, object]:
    return {}
