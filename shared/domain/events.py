"""The contract: inbound messages, the events of the log, and their schema versions.

Other services publish an :class:`Inbound` message (JSON) to a partition's inbox stream;
selection-ingest validates it and appends :class:`LoggedEvent` entries to the log. Every
payload model carries ``VERSION``; older payloads are upcast on read (:func:`upcast`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared.taste.vectors import scaled_norm, unit

Handle = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:@-]{1,64}$")]
IdempotencyKey = Annotated[str, StringConstraints(pattern=r"^[ -~]{1,200}$")]
Version = Annotated[str, StringConstraints(pattern=r"^\d{1,2}(\.\d{1,2})?$")]
UNIT_TOLERANCE = 1e-6
ProfileName = Annotated[str, StringConstraints(min_length=1, max_length=80, strip_whitespace=True)]


class Payload(BaseModel):
    """Base of every event payload: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    VERSION: ClassVar[int] = 1
    DERIVED: ClassVar[frozenset[str]] = frozenset()
    """Fields ingest fills in for the log; a publisher may not send them."""


class ImageRegistered(Payload):
    """A catalog image: who made it, with which model version, and its embedding."""

    image_id: Handle
    model_version: Version
    embedding: list[float] = Field(min_length=2, max_length=4096)

    @field_validator("embedding")
    @classmethod
    def _a_direction(cls, values: list[float]) -> list[float]:
        """Every path that reads an image (ingest, the log, an import) sees the same rule: the
        embedding is a direction, so its normalised form must be a finite unit vector."""
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None:
            raise ValueError(
                f"every embedding value must be a finite number; value {bad} is {values[bad]!r}"
            )
        if not any(values):
            raise ValueError("the embedding must not be all zeros: it has no direction")
        normalised = unit(values)
        if (
            not np.all(np.isfinite(normalised))
            or abs(scaled_norm(normalised) - 1.0) > UNIT_TOLERANCE
        ):
            raise ValueError(
                f"the embedding does not normalise to a finite unit vector (norm "
                f"{scaled_norm(normalised)!r}); send finite values of a usable magnitude"
            )
        return values


class GridServed(Payload):
    """A grid of catalog images shown to the member, for one of their profiles."""

    grid_id: Handle
    image_ids: list[Handle] = Field(min_length=2, max_length=30)
    profile_id: Handle | None = Field(
        default=None, description="the profile the picks feed; the Global Profile if omitted"
    )

    @field_validator("image_ids")
    @classmethod
    def _distinct(cls, ids: list[str]) -> list[str]:
        if len(set(ids)) != len(ids):
            raise ValueError("a grid shows each image once")
        return ids


class ImagePicked(Payload):
    """The member picked one image of a grid served to them.

    In the log, ingest adds ``profile_id`` (the grid's profile) and ``candidates`` (the
    grid's images not picked before this pick, the picked one included).
    """

    DERIVED = frozenset({"profile_id", "candidates"})

    grid_id: Handle
    image_id: Handle
    profile_id: Handle | None = None
    candidates: list[Handle] | None = None


class ImageLiked(Payload):
    """The member liked another member's image; in the log ``profile_id`` names the Global
    Profile it feeds (of the family the image was made with)."""

    DERIVED = frozenset({"profile_id"})

    image_id: Handle
    profile_id: Handle | None = None


class ImageUnliked(Payload):
    """The member took a like back."""

    DERIVED = frozenset({"profile_id"})

    image_id: Handle
    profile_id: Handle | None = None


class PairRanked(Payload):
    """A Rank Image Aesthetics task: the member preferred ``winner_image_id``.

    Version 2 named the images explicitly; version 1 called them ``winner`` and ``loser``
    (see :func:`_pair_ranked_v1_to_v2`).
    """

    VERSION: ClassVar[int] = 2
    DERIVED = frozenset({"profile_id"})

    winner_image_id: Handle
    loser_image_id: Handle
    profile_id: Handle | None = None


class ProfileCreated(Payload):
    """A profile exists. Inbound, only ``name`` is given; ingest assigns the rest."""

    DERIVED = frozenset({"profile_id", "family", "version", "is_global"})

    name: ProfileName
    profile_id: Handle | None = None
    family: str | None = None
    version: Version | None = None
    is_global: bool = False


class ProfileRenamed(Payload):
    profile_id: Handle
    name: ProfileName


class ProfileDeleted(Payload):
    profile_id: Handle


class DefaultProfilesSelected(Payload):
    profile_ids: list[Handle] = Field(max_length=10)


class PersonalizationToggled(Payload):
    enabled: bool


class DefaultVersionSet(Payload):
    version: Version


class CodeMinted(Payload):
    """An immutable code labelling one state of a profile; the snapshot lives here."""

    code: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]{7}$")]
    profile_id: Handle
    profile_name: str
    family: str
    version: Version
    vector: str = Field(description="base64 of the little-endian float64 unit taste vector")
    evidence: int = Field(ge=0)
    picks: int = Field(ge=0)


class TasteModelPublished(Payload):
    """A population prior for taste learning, estimated from the profiles the system has.

    Appended to every partition's log (member ``""``: the system), so that each partition's
    fold knows which prior a new profile starts from; profiles keep the prior they began with.
    """

    model_id: str = Field(description="hex fingerprint of the prior")
    prior: dict[str, Any] = Field(description="TastePrior.to_payload()")
    profiles: int = Field(ge=0, description="how many learned profiles it was estimated from")


PAYLOADS: dict[str, type[Payload]] = {
    model.__name__: model
    for model in (
        ImageRegistered,
        GridServed,
        ImagePicked,
        ImageLiked,
        ImageUnliked,
        PairRanked,
        ProfileCreated,
        ProfileRenamed,
        ProfileDeleted,
        DefaultProfilesSelected,
        PersonalizationToggled,
        DefaultVersionSet,
        CodeMinted,
        TasteModelPublished,
    )
}
SYSTEM_TYPES = frozenset({"CodeMinted", "TasteModelPublished"})
INBOUND_TYPES = frozenset(PAYLOADS) - SYSTEM_TYPES

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _pair_ranked_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    renames = {"winner": "winner_image_id", "loser": "loser_image_id"}
    return {renames.get(name, name): value for name, value in payload.items()}


UPCASTERS: dict[tuple[str, int], Upcaster] = {("PairRanked", 1): _pair_ranked_v1_to_v2}


def upcast(event_type: str, version: int, payload: dict[str, Any]) -> dict[str, Any]:
    """Bring a payload written at ``version`` up to the current version of its type."""
    current = PAYLOADS[event_type].VERSION
    while version < current:
        payload = UPCASTERS[(event_type, version)](payload)
        version += 1
    return payload


class Inbound(BaseModel):
    """A message another service publishes to an inbox stream (see README, "Contract")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = Field(description="one of the inbound event types")
    schema_version: int = Field(default=1, ge=1, description="version of the payload schema")
    idempotency_key: IdempotencyKey = Field(description="the same key is appended only once")
    member_id: Handle
    occurred_at: datetime | None = Field(default=None, description="defaults to arrival time")
    payload: dict[str, Any]

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in INBOUND_TYPES:
            allowed = ", ".join(sorted(INBOUND_TYPES))
            raise ValueError(f"unknown type {value!r}; allowed: {allowed}")
        return value

    def typed_payload(self) -> Payload:
        """The validated payload; :class:`FieldError` for a version or field a publisher may
        not send, pydantic's ``ValidationError`` (paths relative to the payload) otherwise."""
        model = PAYLOADS[self.type]
        if self.schema_version > model.VERSION:
            raise FieldError(
                "schema_version",
                f"schema_version {self.schema_version} of {self.type} is newer than this "
                f"service understands (at most {model.VERSION})",
            )
        payload = upcast(self.type, self.schema_version, self.payload)
        derived = sorted(model.DERIVED & payload.keys())
        if derived:
            raise FieldError(
                f"payload.{derived[0]}",
                f"payload.{derived[0]} is set by ingest, not by publishers; "
                f"send {self.type} without {', '.join(derived)}",
            )
        return model.model_validate(payload)


class FieldError(ValueError):
    """An inbound message names a field it may not, or a version that is not understood."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def request_digest(message_type: str, payload: Payload) -> str:
    """What an idempotency key stands for: the type and the validated payload (not the
    arrival time or schema version), so that a retry matches and a different message does not."""
    body = json.dumps(
        [message_type, payload.model_dump(mode="json")], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(body.encode()).hexdigest()[:32]


class LoggedEvent(BaseModel):
    """One entry of the event log: an immutable fact about one member."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    schema_version: int
    event_id: str = Field(description="idempotency key, with '#n' for the n-th derived event")
    member_id: str
    occurred_at: datetime
    recorded_at: datetime
    payload: dict[str, Any]
    request_digest: str | None = Field(
        default=None, description="digest of the inbound message it came from (idempotency)"
    )

    def typed_payload(self) -> Payload:
        return PAYLOADS[self.type].model_validate(
            upcast(self.type, self.schema_version, self.payload)
        )

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LoggedEvent:
        return cls.model_validate_json(data)


def record(
    payload: Payload,
    *,
    event_id: str,
    member_id: str,
    occurred_at: datetime,
    now: datetime,
    digest: str | None = None,
) -> LoggedEvent:
    return LoggedEvent(
        type=type(payload).__name__,
        schema_version=payload.VERSION,
        event_id=event_id,
        member_id=member_id,
        occurred_at=occurred_at,
        recorded_at=now,
        payload=payload.model_dump(mode="json", exclude_none=True),
        request_digest=digest,
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def encode_vector(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f8").tobytes()).decode()


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f8").astype(np.float64)
