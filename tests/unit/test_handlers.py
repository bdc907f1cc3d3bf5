"""Every event type has each of its handlers: a type added without one fails here, by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared.domain import events as ev
from shared.domain.member import Context, MemberState, Unhandled, decide, evolved, needs
from shared.domain.projection import project, reads
from tests.unit.builders import RULES

INBOUND = sorted(ev.INBOUND_TYPES)
LOGGED = sorted(ev.PAYLOADS)

#: handler -> the event types it must handle: ingest decides inbound messages; every logged
#: event is folded into ingest's state (a replay rebuilds it), the read models, and their reads.
HANDLERS: dict[str, tuple[Any, list[str]]] = {
    "decide": (decide, INBOUND),
    "needs": (needs, INBOUND),
    "evolved": (evolved, LOGGED),
    "project": (project, LOGGED),
    "reads": (reads, LOGGED),
}


def missing(event_type: type[ev.Payload]) -> list[str]:
    """The handlers ``event_type`` must have and has not."""
    return [
        name
        for name, (handler, types) in HANDLERS.items()
        if event_type.__name__ in types and handler.dispatch(event_type) is handler.dispatch(object)
    ]


@pytest.mark.parametrize("event_type", LOGGED)
def test_every_event_type_has_all_its_handlers(event_type: str) -> None:
    lacking = missing(ev.PAYLOADS[event_type])
    assert not lacking, f"{event_type} lacks handlers: {lacking} (README, 'Adding an event')"


class Brand(ev.Payload):
    """An event type a newcomer added to the contract and nowhere else."""

    name: str


def test_a_type_without_handlers_is_named_with_each_missing_handler() -> None:
    before = {name: list(types) for name, (_, types) in HANDLERS.items()}
    try:
        for _, types in HANDLERS.values():
            types.append("Brand")
        assert missing(Brand) == list(HANDLERS)
    finally:
        for name, (_, types) in HANDLERS.items():
            types[:] = before[name]


@pytest.mark.parametrize(
    ("handler", "call"),
    [
        ("decide", lambda: decide(Brand(name="x"), Context(MemberState(), "a", {}, RULES, str))),
        ("evolved", lambda: evolved(Brand(name="x"), MemberState(), RULES)),
        ("reads", lambda: reads(Brand(name="x"))),
    ],
)
def test_a_missing_handler_says_which_and_where_to_register_it(
    handler: str, call: Callable[[], object]
) -> None:
    with pytest.raises(Unhandled, match=rf"Brand has no {handler} handler; register one with @"):
        call()


def test_a_handler_registered_for_a_union_serves_each_member_of_it() -> None:
    assert needs(ev.ImageLiked(image_id="i1")).likes == {"i1"}
    assert needs(ev.ImageUnliked(image_id="i1")).likes == {"i1"}
    assert reads(ev.ImageUnliked(image_id="i1")).images == {"i1"}
