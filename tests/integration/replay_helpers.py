"""Helpers of the replay tests: a whole system on any server, waiting until it is idle,
snapshots of key spaces, and a poison log entry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from services.code_minter.app import build as build_minter
from services.profile_projector.app import build as build_projector
from services.prompt_resolver.app import build as build_resolver
from services.selection_ingest.app import build as build_ingest
from shared.adapters.generation import read_generation
from shared.client import Client, inbound
from shared.domain import events as ev
from shared.keys import Partition, all_partitions, partition_for
from shared.settings import Settings
from tests.helpers import catalog, eventually, grid_and_picks, register


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Client]:
    """The four services in this process against ``settings.redis_url``, and a client."""
    async with AsyncExitStack() as stack:
        for build in (build_ingest, build_projector, build_minter, build_resolver):
            await stack.enter_async_context(build(settings))
        yield await stack.enter_async_context(Client(settings.redis_url, settings.partitions))


async def mixed_scenario(client: Client, settings: Settings, members: int = 4) -> None:
    """A catalog of two families, and members who pick, like, rank and unlock (with codes)."""
    await register(client, catalog(30, settings.embed_dim))
    await register(client, catalog(10, settings.embed_dim, seed=2, version="6.1", prefix="old"))
    rng = np.random.default_rng(5)
    messages = []
    for m in range(members):
        member = f"m{m}"
        for grid in range(4):
            shown = [f"img{i}" for i in rng.choice(30, 9, replace=False)]
            messages += grid_and_picks(member, f"{member}-{grid}", shown, 3)
        messages.append(inbound("ImageLiked", member, {"image_id": f"old{m}"}))
        messages.append(
            inbound("PairRanked", member, {"winner_image_id": "img1", "loser_image_id": "img2"})
        )
        messages.append(inbound("PersonalizationToggled", member, {"enabled": m % 2 == 0}))
    await client.publish_many(messages)
    for m in range(members):
        await eventually(
            lambda m=m: client.profiles(f"m{m}"),
            lambda found: (
                len(found.codes) >= 1 and len(found.profiles) == 2 and found.profiles[0].picks == 13
            ),
        )


async def _heads(client: aioredis.Redis, settings: Settings) -> list[Any]:
    generation = await read_generation(client)
    state = []
    for partition in all_partitions(settings.partitions):
        log: Any = await client.xrevrange(partition.log, count=1)
        changes: Any = await client.xrevrange(partition.changes, count=1)
        state += [
            log[0][0] if log else b"0-0",
            await client.get(partition.read_model(generation).position) or b"0-0",
            changes[0][0] if changes else b"0-0",
            await client.get(partition.minter_position) or b"0-0",
        ]
    return state


async def settled(
    client: aioredis.Redis, settings: Settings, still: float = 0.8, timeout: float = 30.0
) -> None:
    """Wait until the projector is at the head of every log, the minter at the head of every
    change stream, and nothing moved for ``still`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        state = await _heads(client, settings)
        caught_up = all(state[i] == state[i + 1] for i in range(0, len(state), 2))
        if state != last or not caught_up:
            last, since = state, time.monotonic()
        elif time.monotonic() - since >= still:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the system did not settle within {timeout}s: {last}")


async def snapshot(client: aioredis.Redis, pattern: str) -> dict[str, bytes]:
    keys = sorted([k.decode() async for k in client.scan_iter(match=pattern, count=1000)])
    values = await client.mget(keys) if keys else []
    return dict(zip(keys, values, strict=True))


async def log_ids(client: aioredis.Redis, settings: Settings) -> list[tuple[str, str, str]]:
    """Every log entry as (entry ID, event type, event ID)."""
    found = []
    for partition in all_partitions(settings.partitions):
        for entry_id, fields in await client.xrange(partition.log):
            event = ev.LoggedEvent.from_bytes(fields[b"event"])
            found.append((entry_id.decode(), event.type, event.event_id))
    return found


async def append_poison(client: Client, settings: Settings, member: str) -> tuple[Partition, str]:
    """Append to the member's log, as an admin would, a pick the projector cannot fold: its
    grid is real but its candidates are not in the catalog. Returns where it went."""
    listing = await client.profiles(member)
    profile = listing.profiles[0].profile_id
    partition = partition_for(member, settings.partitions)
    payload = ev.ImagePicked(
        grid_id=f"{member}-0", image_id="ghost1", profile_id=profile, candidates=["ghost1", "x2"]
    )
    now = ev.utcnow()
    event = ev.record(payload, event_id="poison-1", member_id=member, occurred_at=now, now=now)
    entry_id = await client.redis.xadd(partition.log, {"event": event.to_bytes()})
    return partition, entry_id.decode()
