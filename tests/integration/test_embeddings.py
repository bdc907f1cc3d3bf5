"""Embeddings are directions: extreme but finite values register as proper unit vectors, feed
picks and replay exactly; what cannot be normalised never reaches the catalog."""

from __future__ import annotations

import json

import numpy as np

from shared.adapters.generation import read_generation
from shared.client import Client, inbound
from shared.keys import image_key
from shared.settings import Settings
from shared.taste.vectors import unit
from tests.helpers import catalog, dead_letters, eventually, grid_and_picks, register
from tests.integration.replay_helpers import settled
from tools.replay import rebuild, verify

SCALES = {"tiny": 1e-170, "huge": 1e150, "huger": 1e170}


async def test_extreme_embeddings_register_as_unit_vectors_feed_picks_and_replay(
    system: Client, settings: Settings
) -> None:
    await register(system, catalog(12, settings.embed_dim))
    rng = np.random.default_rng(3)
    raw = {name: rng.normal(size=settings.embed_dim) * scale for name, scale in SCALES.items()}
    await register(
        system,
        [
            inbound("ImageRegistered", "artist",
                    {"image_id": name, "model_version": "7", "embedding": values.tolist()})
            for name, values in raw.items()
        ],
    )  # fmt: skip
    for name, values in raw.items():
        stored = np.frombuffer(await system.redis.hget(image_key(name), "emb"), dtype="<f4")
        assert np.all(np.isfinite(stored)), name
        assert abs(float(np.linalg.norm(stored.astype(np.float64))) - 1.0) < 1e-6, name
        assert np.allclose(stored, unit(values), atol=1e-7), name

    shown = [*SCALES, *(f"img{i}" for i in range(6))]
    await system.publish_many(grid_and_picks("m0", "g0", shown, 3))
    listing = await eventually(lambda: system.profiles("m0"), lambda f: f.profiles[0].picks == 3)
    await settled(system.redis, settings)
    assert await dead_letters(system.redis, settings.partitions) == []
    assert listing.profiles[0].picks == 3
    live = await read_generation(system.redis)
    result = await verify(system.redis, settings, live, await rebuild(system.redis, settings))
    assert result.ok and result.compared > 0 and result.skipped == 0, result.differences


async def test_an_embedding_that_cannot_be_normalised_is_dead_lettered_and_never_catalogued(
    system: Client, settings: Settings
) -> None:
    values = ", ".join(["1e999"] + ["1.0"] * (settings.embed_dim - 1))
    message = (
        '{"type": "ImageRegistered", "schema_version": 1, "idempotency_key": "bad-1", '
        '"member_id": "artist", "payload": {"image_id": "bad", "model_version": "7", '
        f'"embedding": [{values}]}}}}'
    )
    json.loads(message)
    await system.redis.xadd(system.inbox("artist"), {"data": message})
    zeros = inbound(
        "ImageRegistered", "artist",
        {"image_id": "zero", "model_version": "7", "embedding": [0.0] * settings.embed_dim},
    )  # fmt: skip
    await system.publish(zeros)
    letters = await eventually(
        lambda: dead_letters(system.redis, settings.partitions), lambda found: len(found) == 2
    )
    for letter in letters:
        assert letter.code == "INVALID_FIELD"
        assert letter.field == "payload.embedding"
    reasons = sorted(letter.reason for letter in letters)
    assert "value 0 is inf" in reasons[0] or "value 0 is inf" in reasons[1], reasons
    assert any("no direction" in reason for reason in reasons), reasons
    assert not await system.redis.exists(image_key("bad"), image_key("zero"))
