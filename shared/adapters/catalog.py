"""The image catalog: ``pz:img:<id>`` hashes of creator, model version and unit embedding."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.domain.events import ImageRegistered
from shared.keys import image_key
from shared.taste.vectors import unit

CLAIM_IMAGE = """
-- KEYS[1]: the image; ARGV: its fields and values, 'key' naming the claimant.
-- The first claim of an ID wins; every claim returns the winner.
local owner = redis.call('HGET', KEYS[1], 'key')
if owner then return owner end
redis.call('HSET', KEYS[1], unpack(ARGV))
return redis.call('HGET', KEYS[1], 'key')
"""


def catalog_entry(event: ImageRegistered, creator: str, key: str) -> dict[Any, Any]:
    """The stored form of an image: its embedding as a unit float32 vector, and
    ``member_id|idempotency_key`` of the message that registered it (so a retry of that very
    message is recognised)."""
    stored = unit(event.embedding).astype("<f4")
    if not np.all(np.isfinite(stored)) or not np.any(stored):
        raise ValueError(f"image {event.image_id!r}: its unit embedding is not finite in float32")
    return {"creator": creator, "version": event.model_version, "key": key, "emb": stored.tobytes()}


def claim_args(entry: dict[Any, Any]) -> list[Any]:
    """The claim of a new image: its entry, marked pending until its event is logged."""
    return [x for pair in {**entry, "pending": "1"}.items() for x in pair]


async def registered(client: Any, image_ids: list[str]) -> list[bool]:
    """Whether each image is in the catalog and no longer a pending claim."""
    async with client.pipeline(transaction=False) as pipe:
        for image_id in image_ids:
            pipe.hmget(image_key(image_id), "creator", "pending")
        found = await pipe.execute()
    return [creator is not None and pending is None for creator, pending in found]
