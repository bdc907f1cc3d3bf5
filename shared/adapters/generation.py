"""The active generation of read models: the one the live projector writes and readers read."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.keys import ACTIVE_GENERATION

from .store import text


async def active_generation(client: aioredis.Redis) -> int:
    """The active generation, starting at 1 on a fresh server."""
    await client.set(ACTIVE_GENERATION, 1, nx=True)
    return int(text(await client.get(ACTIVE_GENERATION)))
