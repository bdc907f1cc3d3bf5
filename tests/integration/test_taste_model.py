"""The population prior is data: published to the log, used by new profiles, replayed exactly."""

from __future__ import annotations

import numpy as np

from shared.adapters.generation import active_generation
from shared.client import Client
from shared.domain.views import ProfileModel
from shared.keys import partition_for
from shared.settings import Settings
from shared.taste.prior import TastePrior, estimate_prior
from tests.helpers import catalog, eventually, grid_and_picks, register
from tools.replay import rebuild, verify
from tools.taste_model import catalog_embeddings, learned_profiles, publish


async def model_of(client: Client, settings: Settings, member: str) -> ProfileModel:
    listing = await eventually(lambda: client.profiles(member), lambda found: found.profiles)
    generation = await active_generation(client.redis)
    profile_id = listing.profiles[0].profile_id
    key = partition_for(member, settings.partitions).read_model(generation).profile(profile_id)
    raw = await eventually(lambda: client.redis.get(key), lambda value: value is not None)
    return ProfileModel.from_bytes(raw)


async def picks(client: Client, member: str, grids: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    messages = []
    for grid in range(grids):
        shown = [f"img{i}" for i in rng.choice(30, 9, replace=False)]
        messages += grid_and_picks(member, f"{member}-{seed}-{grid}", shown, 3)
    await client.publish_many(messages)


async def test_new_profiles_learn_with_the_latest_prior_and_a_replay_reproduces_it(
    system: Client, settings: Settings
) -> None:
    await register(system, catalog(30, settings.embed_dim))
    await picks(system, "early", 3, seed=1)
    assert (await model_of(system, settings, "early")).prior == ""

    bootstrap = TastePrior.from_catalog(await catalog_embeddings(system.redis), rank=4)
    first = await publish(system.redis, settings, bootstrap, profiles=0)
    for member, seed in (("m1", 2), ("m2", 3), ("m3", 4)):
        await picks(system, member, 4, seed)
    for member in ("m1", "m2", "m3"):
        model = await eventually(
            lambda m=member: model_of(system, settings, m), lambda found: bool(found.state)
        )
        assert model.prior == first

    means, covariance = await learned_profiles(system.redis, settings, min_evidence=6)
    assert means.shape == (4, settings.embed_dim)
    second = await publish(
        system.redis, settings, estimate_prior(means, 3, posterior_covariance=covariance), 4
    )
    assert second != first
    await picks(system, "late", 2, seed=5)
    late = await eventually(lambda: model_of(system, settings, "late"), lambda m: bool(m.state))
    assert late.prior == second
    await picks(system, "m1", 1, seed=9)
    assert (await model_of(system, settings, "m1")).prior == first, "profiles keep their prior"

    live = await active_generation(system.redis)
    result = await verify(
        system.redis, settings, live, await rebuild(system.redis, settings, quiet=True)
    )
    assert result.ok and result.compared > 0, result.differences
