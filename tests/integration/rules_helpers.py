"""Helpers for the rule tests: a two-style catalog per family, grids with picks, and waits on
listings, dead letters and log events. Everything goes through the public contract."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from shared.client import Client, inbound
from shared.deadletter import DeadLetter
from shared.domain.events import LoggedEvent
from shared.domain.listing import CodeListing, Listing, ProfileListing
from tests.helpers import dead_letters, eventually, log_events

ARTIST = "artist"
PER_STYLE = 6
STYLES = {"warm": 0, "cool": 1}
_grid_ids = itertools.count()


def styled_catalog(dim: int, version: str, prefix: str, seed: int = 7) -> list[dict[str, Any]]:
    """``PER_STYLE`` images per style made by ``ARTIST``: the ``warm`` ones lean on axis 0,
    the ``cool`` ones on axis 1, so picking one style gives a taste we can recognise."""
    rng = np.random.default_rng(seed)
    messages = []
    for style, leaning in STYLES.items():
        for i in range(PER_STYLE):
            embedding = rng.normal(scale=0.3, size=dim)
            embedding[leaning] += 2.0
            payload = {
                "image_id": image(prefix, style, i),
                "model_version": version,
                "embedding": embedding.tolist(),
            }
            messages.append(
                inbound("ImageRegistered", ARTIST, payload, key=f"reg-{prefix}-{style}{i}")
            )
    return messages


def image(prefix: str, style: str, i: int) -> str:
    return f"{prefix}-{style}{i % PER_STYLE}"


def axis(dim: int, style: str) -> np.ndarray:
    unit = np.zeros(dim)
    unit[STYLES[style]] = 1.0
    return unit


def grid(
    member: str,
    images: list[str],
    picks: list[str],
    profile_id: str | None = None,
    grid_id: str | None = None,
) -> list[dict[str, Any]]:
    """A grid served to ``member`` (for ``profile_id``, else the Global Profile) and picks."""
    grid_id = grid_id or f"{member}-grid{next(_grid_ids)}"
    payload: dict[str, Any] = {"grid_id": grid_id, "image_ids": images}
    if profile_id is not None:
        payload["profile_id"] = profile_id
    served = inbound("GridServed", member, payload, key=f"serve-{grid_id}")
    picked = [
        inbound(
            "ImagePicked", member, {"grid_id": grid_id, "image_id": i}, key=f"pick-{grid_id}-{i}"
        )
        for i in picks
    ]
    return [served, *picked]


def picks(
    member: str, count: int, prefix: str = "v7", style: str = "warm", profile_id: str | None = None
) -> list[dict[str, Any]]:
    """Grids of 3 warm and 3 cool images; ``count`` picks of ``style`` in all, 3 per grid."""
    other = "cool" if style == "warm" else "warm"
    messages: list[dict[str, Any]] = []
    for start in range(0, count, 3):
        liked = [image(prefix, style, start + k) for k in range(3)]
        shown = liked + [image(prefix, other, start + k) for k in range(3)]
        messages += grid(member, shown, liked[: min(3, count - start)], profile_id)
    return messages


async def listing(
    client: Client,
    member: str,
    accept: Callable[[Listing], bool],
    include_deleted: bool = False,
) -> Listing:
    return await eventually(lambda: client.profiles(member, include_deleted), accept)


def named(found: Listing, name: str) -> ProfileListing | None:
    return next((p for p in found.profiles if p.name == name), None)


def global_of(found: Listing, family: str) -> ProfileListing | None:
    return next((p for p in found.profiles if p.is_global and p.family == family), None)


def codes_of(found: Listing, profile_id: str) -> list[CodeListing]:
    return [c for c in found.codes if c.profile_id == profile_id]


async def unlocked_global(client: Client, member: str, family: str = "v7") -> ProfileListing:
    """Wait until ``member``'s Global Profile of ``family`` is unlocked and has a code."""
    found = await listing(
        client,
        member,
        lambda f: (g := global_of(f, family)) is not None and g.latest_code is not None,
    )
    profile = global_of(found, family)
    assert profile is not None
    return profile


async def created(client: Client, member: str, name: str) -> ProfileListing:
    """Wait until ``member`` has a profile called ``name``."""
    profile = named(await listing(client, member, lambda f: named(f, name) is not None), name)
    assert profile is not None
    return profile


async def coded(client: Client, member: str, name: str) -> ProfileListing:
    """Wait until ``member``'s profile called ``name`` has a code."""
    found = await listing(
        client, member, lambda f: (p := named(f, name)) is not None and p.latest_code is not None
    )
    profile = named(found, name)
    assert profile is not None
    return profile


async def rejection(client: Client, key: str) -> DeadLetter:
    """The dead letter of the inbound message published with idempotency key ``key``."""

    def match(letters: list[DeadLetter]) -> bool:
        return any(_key(letter) == key for letter in letters)

    letters = await eventually(lambda: dead_letters(client.redis, client.partitions), match)
    return next(letter for letter in letters if _key(letter) == key)


def _key(letter: DeadLetter) -> str | None:
    try:
        return json.loads(letter.original or "{}").get("idempotency_key")
    except ValueError:
        return None


async def logged(client: Client, key: str) -> list[LoggedEvent]:
    """Every log event that the inbound message with idempotency key ``key`` appended
    (waits until its last one, whose event ID is the key itself, is in the log)."""
    events = await eventually(
        lambda: log_events(client.redis, client.partitions),
        lambda found: any(e.event_id == key for e in found),
    )
    return [e for e in events if e.event_id == key or e.event_id.startswith(f"{key}#")]


async def vector_of(client: Client, member: str, code: str) -> np.ndarray:
    """A code's vector, as the resolver applies it when the code is used alone."""
    reply = await client.resolve(member, f"x --p {code}")
    assert reply.ok and reply.vector is not None, reply
    return np.asarray(reply.vector)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
