"""The live projector learns with exactly the offline learner: a simulated member picks
through the running services, and the profile's state equals, byte for byte, the state of a
``TasteLearner`` fed the same events outside the services."""

from __future__ import annotations

import base64

import numpy as np

from shared.adapters.generation import active_generation
from shared.client import Client, inbound
from shared.domain.views import ProfileModel
from shared.keys import image_key, partition_for
from shared.settings import Settings
from shared.taste.learner import TasteLearner
from shared.taste.prior import TastePrior
from shared.taste.simulation import WorldConfig, make_world
from tests.helpers import eventually, log_events, register


async def test_the_live_profile_equals_the_offline_learner_on_the_same_events(
    system: Client, settings: Settings
) -> None:
    world = make_world(
        WorldConfig(dim=settings.embed_dim, n_images=60, n_styles=4, taste_rank=2), seed=3
    )
    await register(system, [
        inbound("ImageRegistered", "artist", {"image_id": f"w{i}", "model_version": "7",
                "embedding": world.embeddings[i].tolist()}, key=f"w{i}")
        for i in range(60)
    ])  # fmt: skip
    rng = np.random.default_rng(11)
    taste = world.sample_tastes(rng, 1)[0]
    for _ in range(8):
        grid = await system.grid("sim", strategy="active")
        assert grid.ok, grid.error
        shown = np.stack([world.embeddings[int(i[1:])] for i in grid.image_ids])
        for index in world.choose(rng, taste, shown, 3):
            await system.publish(
                inbound(
                    "ImagePicked",
                    "sim",
                    {"grid_id": grid.grid_id, "image_id": grid.image_ids[index]},
                )
            )
        await eventually(
            lambda g=grid.grid_id: system.profiles("sim"), lambda found: bool(found.profiles)
        )
    listing = await eventually(
        lambda: system.profiles("sim"), lambda found: found.profiles[0].picks == 24
    )

    offline = TasteLearner(TastePrior.uninformed(settings.embed_dim))
    for event in await log_events(system.redis, settings.partitions):
        if event.type == "ImagePicked" and event.member_id == "sim":
            candidates = event.payload["candidates"]
            raw = [await system.redis.hget(image_key(i), "emb") for i in candidates]
            shown = np.stack([np.frombuffer(r, dtype="<f4").astype(np.float64) for r in raw])
            offline.observe_grid(shown, [candidates.index(event.payload["image_id"])])

    profile_id = listing.profiles[0].profile_id
    generation = await active_generation(system.redis)
    key = partition_for("sim", settings.partitions).read_model(generation).profile(profile_id)
    live = ProfileModel.from_bytes(await system.redis.get(key))
    assert base64.b64decode(live.state) == offline.state()
    assert offline.evidence == 24
