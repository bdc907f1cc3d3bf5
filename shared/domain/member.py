"""The member aggregate that selection-ingest decides with: pure ``decide`` and ``evolve``.

``decide`` checks an inbound message against the member's current state and returns the
events to append (or raises :class:`Rejected`); ``evolve`` folds an appended event into the
state. Ingest stores the state beside the log and appends with optimistic concurrency on
``MemberState.version``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

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
    profiles and images the messages being decided name (:func:`named_profiles`,
    :func:`named_images`). ``liked`` is only read: states written before the sets existed."""

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


def named_profiles(state: MemberState, payload: ev.Payload) -> set[str]:
    """The profile IDs deciding ``payload`` may ask about that are not among the state's
    profiles: whether they are deleted profiles of the member must be looked up first."""
    named: set[str] = set()
    if isinstance(payload, ev.GridServed | ev.ProfileRenamed | ev.ProfileDeleted):
        named = {payload.profile_id} if payload.profile_id else set()
    elif isinstance(payload, ev.DefaultProfilesSelected):
        named = set(payload.profile_ids)
    elif isinstance(payload, ev.ImagePicked) and payload.grid_id in state.grids:
        named = {state.grids[payload.grid_id].profile_id}
    return named - state.profiles.keys()


def named_images(payload: ev.Payload) -> set[str]:
    """The images whose "liked" flag deciding ``payload`` needs."""
    if isinstance(payload, ev.ImageLiked | ev.ImageUnliked):
        return {payload.image_id}
    return set()


SetChange = tuple[str, str, str]
"""(``"gone"`` or ``"liked"``, ``"add"`` or ``"remove"``, the member's profile or image ID)."""


def set_changes(payload: ev.Payload) -> list[SetChange]:
    """What an appended event changes in the member's sets beside the state."""
    if isinstance(payload, ev.ProfileDeleted):
        return [("gone", "add", payload.profile_id)]
    if isinstance(payload, ev.ImageLiked):
        return [("liked", "add", payload.image_id)]
    if isinstance(payload, ev.ImageUnliked):
        return [("liked", "remove", payload.image_id)]
    return []


def decide(
    state: MemberState,
    payload: ev.Payload,
    member_id: str,
    catalog: Catalog,
    rules: Rules,
    new_id: NewId,
) -> list[ev.Payload]:
    """The events that an accepted inbound message appends; ``[]`` means ignored."""
    handler = _DECIDERS[type(payload)]
    return handler(state, payload, member_id, catalog, rules, new_id)


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


def _global_for(state: MemberState, family: Family, new_id: NewId) -> tuple[str, list[ev.Payload]]:
    existing = state.global_profile(family)
    if existing is not None:
        return existing.profile_id, []
    profile_id = new_id()
    version = "7" if family == "v7" else "6.1"
    created = ev.ProfileCreated(
        name=f"Global {family.upper()} Profile",
        profile_id=profile_id,
        family=family,
        version=version,
        is_global=True,
    )
    return profile_id, [created]


def _registered(state, payload, member_id, catalog, rules, new_id):  # type: ignore[no-untyped-def]
    if len(payload.embedding) != rules.embed_dim:
        raise Rejected(
            "INVALID_FIELD",
            f"embedding has {len(payload.embedding)} values; this system uses {rules.embed_dim}",
            "payload.embedding",
        )
    if payload.image_id in catalog:
        raise Rejected(
            "DUPLICATE_IMAGE",
            f"image {payload.image_id!r} is already registered; images are immutable",
            "payload.image_id",
        )
    return [payload]


def _grid(state, payload, member_id, catalog, rules, new_id):  # type: ignore[no-untyped-def]
    if payload.grid_id in state.grids:
        raise Rejected("DUPLICATE_GRID", f"grid {payload.grid_id!r} was served already")
    images = [_image(catalog, image_id, "payload.image_ids") for image_id in payload.image_ids]
    derived: list[ev.Payload] = []
    if payload.profile_id is None:
        family = _family_or_reject(state.default_version, "default_version")
        profile_id, derived = _global_for(state, family, new_id)
    else:
        profile = state.owned(payload.profile_id, "payload.profile_id")
        profile_id, family = profile.profile_id, profile.family  # type: ignore[assignment]
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


def _picked(state, payload, member_id, catalog, rules, new_id):  # type: ignore[no-untyped-def]
    grid = state.grids.get(payload.grid_id)
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
    state.owned(grid.profile_id, "payload.grid_id")
    enriched = {"profile_id": grid.profile_id, "candidates": grid.remaining}
    return [payload.model_copy(update=enriched)]


def _liked(state, payload, member_id, catalog, rules, new_id):  # type: ignore[no-untyped-def]
    info = _image(catalog, payload.image_id, "payload.image_id")
    if info.creator == member_id or state.has_liked(payload.image_id) or info.family is None:
        return []
    profile_id, derived = _global_for(state, info.family, new_id)
    return [*derived, payload.model_copy(update={"profile_id": profile_id})]


def _unliked(state, payload, member_id, catalog, rules, new_id):  # type: ignore[no-untyped-def]
    info = _image(catalog, payload.image_id, "payload.image_id")
    if not state.has_liked(payload.image_id) or info.family is None:
        return []
    profile = state.global_profile(info.family)
    assert profile is not None  # a like created it
    return [payload.model_copy(update={"profile_id": profile.profile_id})]


def _ranked(state, payload, member_id, catalog, rules, new_id):  # type: ignore[no-untyped-def]
    if payload.winner_image_id == payload.loser_image_id:
        raise Rejected("INVALID_FIELD", "a pair needs two different images", "payload")
    winner = _image(catalog, payload.winner_image_id, "payload.winner_image_id")
    loser = _image(catalog, payload.loser_image_id, "payload.loser_image_id")
    family = _family_or_reject(winner.model_version, "payload.winner_image_id")
    if loser.family != family:
        raise Rejected(
            "VERSION_MISMATCH",
            f"both images of a pair must come from one family; got {family} and {loser.family}",
            "payload.loser_image_id",
        )
    profile_id, derived = _global_for(state, family, new_id)
    return [*derived, payload.model_copy(update={"profile_id": profile_id})]


def _created(state, payload, member_id, catalog, rules, new_id):  # type: ignore[no-untyped-def]
    family = _family_or_reject(state.default_version, "default_version")
    base = state.global_profile(family)
    needed = rules.unlock[family]
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
        profile_id=new_id(),
        family=family,
        version=state.default_version,
        is_global=False,
    )
    return [created]


def _renamed(state, payload, member_id, catalog, rules, new_id):  # type: ignore[no-untyped-def]
    state.owned(payload.profile_id)
    return [payload]


def _deleted(state, payload, member_id, catalog, rules, new_id):  # type: ignore[no-untyped-def]
    if state.is_deleted(payload.profile_id):
        return []
    profile = state.owned(payload.profile_id)
    if profile.is_global:
        raise Rejected("GLOBAL_PROFILE", "a Global Profile cannot be deleted", "payload.profile_id")
    return [payload]


def _selected(state, payload, member_id, catalog, rules, new_id):  # type: ignore[no-untyped-def]
    for profile_id in payload.profile_ids:
        state.owned(profile_id, "payload.profile_ids")
    return [payload]


def _as_is(state, payload, member_id, catalog, rules, new_id):  # type: ignore[no-untyped-def]
    return [payload]


_DECIDERS: dict[type[ev.Payload], Callable[..., list[ev.Payload]]] = {
    ev.ImageRegistered: _registered,
    ev.GridServed: _grid,
    ev.ImagePicked: _picked,
    ev.ImageLiked: _liked,
    ev.ImageUnliked: _unliked,
    ev.PairRanked: _ranked,
    ev.ProfileCreated: _created,
    ev.ProfileRenamed: _renamed,
    ev.ProfileDeleted: _deleted,
    ev.DefaultProfilesSelected: _selected,
    ev.PersonalizationToggled: _as_is,
    ev.DefaultVersionSet: _as_is,
}


def evolve(state: MemberState, payload: ev.Payload, rules: Rules) -> MemberState:
    """Fold one appended event into the member's ingest state."""
    changes = _EVOLVERS.get(type(payload), lambda s, p, r: {})(state, payload, rules)
    return state.model_copy(update={**changes, "version": state.version + 1})


def _with_profile(state: MemberState, profile_id: str, **update: object) -> dict[str, object]:
    profile = state.profiles[profile_id].model_copy(update=update)
    return {"profiles": {**state.profiles, profile_id: profile}}


def _bump(state: MemberState, profile_id: str) -> dict[str, object]:
    return _with_profile(state, profile_id, ratings=state.profiles[profile_id].ratings + 1)


def _evolve_created(state, p, rules):  # type: ignore[no-untyped-def]
    profile = ProfileState(
        profile_id=p.profile_id,
        family=p.family,
        version=p.version,
        name=p.name,
        is_global=p.is_global,
    )
    update: dict[str, object] = {"profiles": {**state.profiles, p.profile_id: profile}}
    if p.is_global:
        update["globals"] = {**state.globals, p.family: p.profile_id}
    return update


def _evolve_grid(state, p, rules):  # type: ignore[no-untyped-def]
    grids = {**state.grids, p.grid_id: GridState(profile_id=p.profile_id, images=p.image_ids)}
    while len(grids) > rules.grids_kept:
        grids.pop(next(iter(grids)))
    return {"grids": grids}


def _evolve_picked(state, p, rules):  # type: ignore[no-untyped-def]
    grid = state.grids[p.grid_id]
    grids = {
        **state.grids,
        p.grid_id: grid.model_copy(update={"picked": [*grid.picked, p.image_id]}),
    }
    return {"grids": grids, **_bump(state, p.profile_id)}


def _evolve_liked(state, p, rules):  # type: ignore[no-untyped-def]
    return {"likes": state.likes | {p.image_id}}


def _evolve_unliked(state, p, rules):  # type: ignore[no-untyped-def]
    return {
        "likes": state.likes - {p.image_id},
        "liked": [image for image in state.liked if image != p.image_id],
    }


def _evolve_deleted(state, p, rules):  # type: ignore[no-untyped-def]
    profiles = {pid: profile for pid, profile in state.profiles.items() if pid != p.profile_id}
    return {
        "profiles": profiles,
        "gone": state.gone | {p.profile_id},
        "defaults": [d for d in state.defaults if d != p.profile_id],
    }


_EVOLVERS: dict[type[ev.Payload], Callable[..., dict[str, object]]] = {
    ev.ProfileCreated: _evolve_created,
    ev.GridServed: _evolve_grid,
    ev.ImagePicked: _evolve_picked,
    ev.ImageLiked: _evolve_liked,
    ev.ImageUnliked: _evolve_unliked,
    ev.PairRanked: lambda s, p, r: _bump(s, p.profile_id),
    ev.ProfileRenamed: lambda s, p, r: _with_profile(s, p.profile_id, name=p.name),
    ev.ProfileDeleted: _evolve_deleted,
    ev.DefaultProfilesSelected: lambda s, p, r: {"defaults": list(p.profile_ids)},
    ev.PersonalizationToggled: lambda s, p, r: {"personalization": p.enabled},
    ev.DefaultVersionSet: lambda s, p, r: {"default_version": p.version},
}
