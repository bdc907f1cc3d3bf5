"""The active generation of read models: the one the live projector writes and readers read."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.keys import ACTIVE_GENERATION

from .store import text

FIRST = 1


async def active_generation(client: aioredis.Redis) -> int:
    """The active generation, established as 1 on a fresh server (needs write access)."""
    await client.set(ACTIVE_GENERATION, FIRST, nx=True)
    return await read_generation(client)


async def read_generation(client: aioredis.Redis) -> int:
    """The active generation, for readers: 1 until something establishes one."""
    return int(text(await client.get(ACTIVE_GENERATION)) or FIRST)
