"""Shared test helpers: waiting for eventual effects, a tiny catalog, reading streams."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import redis.asyncio as aioredis

from shared.client import Client, inbound
from shared.deadletter import DeadLetter
from shared.domain.events import LoggedEvent
from shared.keys import all_partitions

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], timeout: float = 15.0
) -> T:
    """Poll ``probe`` until ``accept`` holds for its value; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.05)


def catalog(
    n: int, dim: int, seed: int = 1, version: str = "7", prefix: str = "img"
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        inbound(
            "ImageRegistered",
            "artist",
            {"image_id": f"{prefix}{i}", "model_version": version,
             "embedding": rng.normal(size=dim).tolist()},
            key=f"reg-{prefix}{i}",
        )
        for i in range(n)
    ]  # fmt: skip


async def register(client: Client, messages: list[dict[str, Any]]) -> None:
    """Publish ImageRegistered messages and wait until the catalog has every image (grids
    that name an image before its registration is processed are rejected, by contract)."""
    await client.publish_many(messages)
    for message in messages:
        receipt = await client.receipt(message, timeout=30)
        assert receipt.status in ("accepted", "duplicate"), receipt


def grid_and_picks(
    member: str, grid_id: str, images: list[str], picks: int
) -> list[dict[str, Any]]:
    messages = [inbound("GridServed", member, {"grid_id": grid_id, "image_ids": images})]
    messages += [
        inbound("ImagePicked", member, {"grid_id": grid_id, "image_id": image})
        for image in images[:picks]
    ]
    return messages


async def log_events(client: aioredis.Redis, partitions: int) -> list[LoggedEvent]:
    found = []
    for partition in all_partitions(partitions):
        for _, fields in await client.xrange(partition.log):
            found.append(LoggedEvent.from_bytes(fields[b"event"]))
    return found


async def dead_letters(client: aioredis.Redis, partitions: int) -> list[DeadLetter]:
    found = []
    for partition in all_partitions(partitions):
        for _, fields in await client.xrange(partition.dead_letters):
            found.append(DeadLetter.model_validate(json.loads(fields[b"dead"])))
    return found
