"""The contract: inbound messages, logged events, payload validation and upcasting."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from shared.domain import events as ev
from shared.domain.events import FieldError, Inbound, request_digest
from tests.unit.builders import T0, logged


def inbound(**changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "ImageLiked",
        "idempotency_key": "web-42",
        "member_id": "alice",
        "payload": {"image_id": "r1"},
    }
    return {**message, **changes}


def first_error(caught: pytest.ExceptionInfo[ValidationError]) -> dict[str, Any]:
    return dict(caught.value.errors()[0])


def invalid_inbound(message: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as caught:
        ev.Inbound.model_validate(message)
    return first_error(caught)


def invalid_payload(message: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as caught:
        ev.Inbound.model_validate(message).typed_payload()
    return first_error(caught)


def registered(embedding: list[float]) -> dict[str, Any]:
    payload = {"image_id": "r1", "model_version": "7", "embedding": embedding}
    return inbound(type="ImageRegistered", payload=payload)


def test_contract_valid_inbound_parses_into_its_typed_payload() -> None:
    message = ev.Inbound.model_validate(inbound(occurred_at="2025-01-01T00:00:00Z"))
    assert message.schema_version == 1
    assert message.occurred_at == T0
    assert message.typed_payload() == ev.ImageLiked(image_id="r1")


def test_contract_inbound_parses_from_json() -> None:
    raw = b'{"type":"PersonalizationToggled","idempotency_key":"k","member_id":"m","payload":{"enabled":true}}'
    assert ev.Inbound.model_validate_json(raw).typed_payload() == ev.PersonalizationToggled(
        enabled=True
    )


def test_contract_unknown_type_is_rejected_with_the_allowed_types() -> None:
    error = invalid_inbound(inbound(type="ImageStolen"))
    assert error["loc"] == ("type",)
    assert "unknown type 'ImageStolen'" in error["msg"]
    assert "ImagePicked" in error["msg"]


def test_contract_code_minted_is_not_an_inbound_type() -> None:
    assert invalid_inbound(inbound(type="CodeMinted"))["loc"] == ("type",)


@pytest.mark.parametrize("missing", ["type", "idempotency_key", "member_id", "payload"])
def test_contract_missing_field_is_named(missing: str) -> None:
    message = inbound()
    del message[missing]
    error = invalid_inbound(message)
    assert (error["loc"], error["type"]) == ((missing,), "missing")


def test_contract_extra_field_is_named() -> None:
    error = invalid_inbound(inbound(priority="high"))
    assert (error["loc"], error["type"]) == (("priority",), "extra_forbidden")


@pytest.mark.parametrize("member_id", ["", "al ice", "a/b", "x" * 65, "ålice"])
def test_contract_bad_member_id_is_named(member_id: str) -> None:
    assert invalid_inbound(inbound(member_id=member_id))["loc"] == ("member_id",)


@pytest.mark.parametrize("key", ["", "tab\tkey", "new\nline", "é", "k" * 201])
def test_contract_bad_idempotency_key_is_named(key: str) -> None:
    assert invalid_inbound(inbound(idempotency_key=key))["loc"] == ("idempotency_key",)


@pytest.mark.parametrize("key", ["has space", " ", "~!|{}", "k" * 200])
def test_contract_idempotency_key_is_any_printable_ascii_as_documented(key: str) -> None:
    assert Inbound.model_validate(inbound(idempotency_key=key)).idempotency_key == key


@pytest.mark.parametrize(
    ("type_", "payload", "derived"),
    [
        ("ImagePicked", {"grid_id": "g", "image_id": "i", "candidates": ["i"]}, "candidates"),
        ("ImagePicked", {"grid_id": "g", "image_id": "i", "profile_id": "p1"}, "profile_id"),
        ("ImageLiked", {"image_id": "i", "profile_id": "p1"}, "profile_id"),
        ("ProfileCreated", {"name": "n", "is_global": True}, "is_global"),
        ("ProfileCreated", {"name": "n", "family": "v6"}, "family"),
        ("PairRanked", {"winner_image_id": "a", "loser_image_id": "b", "profile_id": "p"}, "profile_id"),
    ],
)  # fmt: skip
def test_contract_fields_ingest_derives_are_refused_from_publishers(
    type_: str, payload: dict[str, Any], derived: str
) -> None:
    message = Inbound.model_validate(inbound(type=type_, payload=payload))
    with pytest.raises(FieldError) as caught:
        message.typed_payload()
    assert caught.value.field == f"payload.{derived}"
    assert "set by ingest" in str(caught.value)


def test_request_digest_ignores_formatting_and_sees_every_payload_change() -> None:
    one = Inbound.model_validate(inbound(payload={"image_id": "r1"}))
    same = Inbound.model_validate_json('{"type":"ImageLiked","idempotency_key":"x",'
                                       '"member_id":"bob","payload":{ "image_id" : "r1" }}')  # fmt: skip
    other = Inbound.model_validate(inbound(payload={"image_id": "r2"}))
    digest = request_digest(one.type, one.typed_payload())
    assert digest == request_digest(same.type, same.typed_payload())
    assert digest != request_digest(other.type, other.typed_payload())


def test_contract_schema_version_below_one_is_named() -> None:
    assert invalid_inbound(inbound(schema_version=0))["loc"] == ("schema_version",)


def test_contract_missing_payload_field_is_named() -> None:
    error = invalid_payload(inbound(payload={}))
    assert (error["loc"], error["type"]) == (("image_id",), "missing")


def test_contract_extra_payload_field_is_named() -> None:
    error = invalid_payload(inbound(payload={"image_id": "r1", "stars": 5}))
    assert (error["loc"], error["type"]) == (("stars",), "extra_forbidden")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_contract_non_finite_embedding_is_named(bad: float) -> None:
    error = invalid_payload(registered([0.5, bad, 0.1]))
    assert error["loc"] == ("embedding",)
    assert "finite" in error["msg"]


def test_contract_all_zero_embedding_is_named() -> None:
    error = invalid_payload(registered([0.0, 0.0, 0.0]))
    assert error["loc"] == ("embedding",)
    assert "all zeros" in error["msg"]


def test_contract_bad_model_version_is_named() -> None:
    payload = {"image_id": "r1", "model_version": "seven", "embedding": [1.0, 0.0]}
    assert invalid_payload(inbound(type="ImageRegistered", payload=payload))["loc"] == (
        "model_version",
    )


def test_contract_grid_shows_each_image_once() -> None:
    error = invalid_payload(
        inbound(type="GridServed", payload={"grid_id": "g1", "image_ids": ["r1", "r1"]})
    )
    assert error["loc"] == ("image_ids",)
    assert "once" in error["msg"]


def test_contract_schema_version_newer_than_supported_is_a_clear_error() -> None:
    message = ev.Inbound.model_validate(inbound(schema_version=2))
    with pytest.raises(
        ValueError, match=r"schema_version 2 of ImageLiked is newer .* \(at most 1\)"
    ):
        message.typed_payload()


@pytest.mark.parametrize("model", list(ev.PAYLOADS.values()), ids=list(ev.PAYLOADS))
def test_contract_every_payload_is_frozen_and_refuses_unknown_fields(
    model: type[ev.Payload],
) -> None:
    assert model.model_config["frozen"] is True
    assert model.model_config["extra"] == "forbid"
    assert model.VERSION >= 1


def test_logged_event_round_trips_through_bytes() -> None:
    payload = ev.ImagePicked(grid_id="g1", image_id="r2", profile_id="p1", candidates=["r1", "r2"])
    event = logged(payload, "alice", 3)
    again = ev.LoggedEvent.from_bytes(event.to_bytes())
    assert again == event
    assert again.to_bytes() == event.to_bytes()
    assert again.typed_payload() == payload


def test_record_names_the_type_and_version_and_leaves_out_unset_fields() -> None:
    event = logged(ev.ImagePicked(grid_id="g1", image_id="r2"), "alice", 0)
    assert (event.type, event.schema_version, event.member_id) == ("ImagePicked", 1, "alice")
    assert event.payload == {"grid_id": "g1", "image_id": "r2"}


def test_vector_encoding_round_trips_exactly() -> None:
    vector = np.array([0.1, -2.5, 1e-300, 3.0])
    decoded = ev.decode_vector(ev.encode_vector(vector))
    assert decoded.dtype == np.float64
    assert np.array_equal(decoded, vector)


@pytest.fixture
def image_liked_v2(monkeypatch: pytest.MonkeyPatch) -> None:
    """ImageLiked at VERSION 2, whose v1 payload called the image ``image``."""

    def rename_image(payload: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in payload.items() if k != "image"}
        return {**rest, "image_id": payload["image"]}

    monkeypatch.setattr(ev.ImageLiked, "VERSION", 2)
    monkeypatch.setitem(ev.UPCASTERS, ("ImageLiked", 1), rename_image)


@pytest.mark.usefixtures("image_liked_v2")
def test_upcast_brings_an_inbound_v1_payload_to_the_current_version() -> None:
    v1 = ev.Inbound.model_validate(inbound(schema_version=1, payload={"image": "r1"}))
    v2 = ev.Inbound.model_validate(inbound(schema_version=2, payload={"image_id": "r1"}))
    assert v1.typed_payload() == v2.typed_payload() == ev.ImageLiked(image_id="r1")


@pytest.mark.usefixtures("image_liked_v2")
def test_upcast_brings_a_logged_v1_event_to_the_current_version() -> None:
    old = logged(ev.ImageLiked(image_id="placeholder"), "alice", 0).model_copy(
        update={"schema_version": 1, "payload": {"image": "r1", "profile_id": "p1"}}
    )
    assert old.typed_payload() == ev.ImageLiked(image_id="r1", profile_id="p1")
    assert logged(ev.ImageLiked(image_id="r1"), "alice", 1).schema_version == 2


def test_upcast_machinery_is_restored_after_the_test() -> None:
    assert ev.ImageLiked.VERSION == 1
    assert ("ImageLiked", 1) not in ev.UPCASTERS
    assert ev.upcast("ImageLiked", 1, {"image_id": "r1"}) == {"image_id": "r1"}
