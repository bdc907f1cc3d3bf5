"""The image catalog: ``pz:img:<id>`` hashes of creator, model version and unit embedding."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.domain.events import ImageRegistered
from shared.taste.vectors import unit

REGISTER_ONCE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


def catalog_entry(event: ImageRegistered, creator: str, key: str) -> dict[Any, Any]:
    """The stored form of an image: its embedding as a unit float32 vector, and the
    idempotency key that registered it (so a retry of that very message is recognised)."""
    stored = unit(event.embedding).astype("<f4")
    if not np.all(np.isfinite(stored)) or not np.any(stored):
        raise ValueError(f"image {event.image_id!r}: its unit embedding is not finite in float32")
    return {"creator": creator, "version": event.model_version, "key": key, "emb": stored.tobytes()}


def register_args(entry: dict[Any, Any]) -> list[Any]:
    return [x for pair in entry.items() for x in pair]
