"""profile-projector and code-minter against a real server."""

from __future__ import annotations

import numpy as np
import pytest

from services.code_minter.minter import Minter
from services.profile_projector.projector import Projector
from shared.adapters.generation import active_generation
from shared.client import Client, inbound
from shared.keys import all_partitions, partition_for
from shared.settings import Settings
from shared.taste.prior import TastePrior
from tests.helpers import catalog, eventually, grid_and_picks, log_events, register


async def unlock(client: Client, member: str, picks: int, prefix: str = "g") -> None:
    rng = np.random.default_rng(abs(hash(member)) % 1000)
    messages = []
    for grid in range((picks + 2) // 3):
        shown = [f"img{i}" for i in rng.choice(30, 9, replace=False)]
        messages += grid_and_picks(member, f"{prefix}{grid}", shown, min(3, picks - 3 * grid))
    await client.publish_many(messages)


async def test_picks_unlock_the_global_profile_and_mint_a_code(
    system: Client, settings: Settings
) -> None:
    await register(system, catalog(30, settings.embed_dim))
    await unlock(system, "alice", settings.unlock_v7 - 1)
    listing = await eventually(
        lambda: system.profiles("alice"),
        lambda found: found.profiles and found.profiles[0].picks == 5,
    )
    assert not listing.profiles[0].unlocked and listing.codes == []
    assert listing.profiles[0].progress == 5 / 6
    await unlock(system, "alice", 1, prefix="h")
    listing = await eventually(
        lambda: system.profiles("alice"), lambda found: len(found.codes) == 1
    )
    assert listing.profiles[0].unlocked
    assert listing.profiles[0].latest_code == listing.codes[0].code


async def test_codes_are_minted_again_after_enough_new_signals_never_twice_for_one_state(
    system: Client, settings: Settings
) -> None:
    await register(system, catalog(30, settings.embed_dim))
    await unlock(system, "bob", settings.unlock_v7 + 3 * settings.mint_every)
    listing = await eventually(
        lambda: system.profiles("bob"),
        lambda found: found.profiles and found.profiles[0].picks == 18,
    )
    await eventually(lambda: system.profiles("bob"), lambda found: len(found.codes) >= 2)
    events = await log_events(system.redis, settings.partitions)
    minted = [e.payload for e in events if e.type == "CodeMinted"]
    states = [(m["profile_id"], m["evidence"]) for m in minted]
    assert len(states) == len(set(states)), "one code per profile state"
    assert len({m["code"] for m in minted}) == len(minted)
    assert listing.profiles[0].picks == 18


async def test_a_redelivered_batch_changes_nothing(system: Client, settings: Settings) -> None:
    await register(system, catalog(30, settings.embed_dim))
    await unlock(system, "carol", settings.unlock_v7)
    await eventually(lambda: system.profiles("carol"), lambda found: len(found.codes) == 1)
    partition = partition_for("carol", settings.partitions)
    projector = Projector(
        system.redis, settings, TastePrior.uninformed(settings.embed_dim),
        await active_generation(system.redis),
    )  # fmt: skip
    entries = [(i.decode(), f) for i, f in await system.redis.xrange(partition.log)]
    assert await projector.apply(partition, "0-0", entries) is False
    minter = Minter(system.redis, settings)
    changes = [(i.decode(), f) for i, f in await system.redis.xrange(partition.changes)]
    if changes:
        assert await minter.apply(partition, "0-0", changes) is False
    events = await log_events(system.redis, settings.partitions)
    assert sum(e.type == "CodeMinted" for e in events) == 1


async def test_replay_into_a_fresh_generation_gives_byte_identical_read_models(
    system: Client, settings: Settings
) -> None:
    await register(system, catalog(30, settings.embed_dim))
    for member in ("dan", "erin", "fay"):
        await unlock(system, member, settings.unlock_v7 + 2)
    await system.publish(inbound("PersonalizationToggled", "dan", {"enabled": True}))
    for member in ("dan", "erin", "fay"):
        await eventually(lambda m=member: system.profiles(m), lambda found: len(found.codes) >= 1)
    await eventually(lambda: system.profiles("dan"), lambda found: found.personalization)
    live = await active_generation(system.redis)
    replay = Projector(
        system.redis, settings, TastePrior.uninformed(settings.embed_dim), live + 1,
        emit_changes=False,
    )  # fmt: skip
    for partition in all_partitions(settings.partitions):
        entries = [(i.decode(), f) for i, f in await system.redis.xrange(partition.log)]
        if entries:
            assert await replay.apply(partition, "0-0", entries)
    for partition in all_partitions(settings.partitions):
        assert await _models(system, partition.read_model(live).base) == await _models(
            system, partition.read_model(live + 1).base
        )


async def _models(client: Client, base: str) -> dict[str, bytes]:
    keys = sorted([k.decode() async for k in client.redis.scan_iter(match=f"{base}:*")])
    values = await client.redis.mget(keys) if keys else []
    return {k[len(base) :]: v for k, v in zip(keys, values, strict=True)}


async def test_extreme_weights_give_a_unit_vector_or_a_clear_error(
    system: Client, settings: Settings
) -> None:
    await register(system, catalog(30, settings.embed_dim))
    for member in ("wren", "otto"):
        await unlock(system, member, settings.unlock_v7)
    found = {}
    for member in ("wren", "otto"):
        listing = await eventually(lambda m=member: system.profiles(m), lambda f: f.codes)
        found[member] = listing.codes[0].code
    mine, theirs = found["wren"], found["otto"]
    reply = await system.resolve("wren", f"a cat --p {mine}::1000 {theirs}::0.001")
    assert reply.ok and reply.vector is not None
    assert np.linalg.norm(reply.vector) == pytest.approx(1.0)
    for weight in ("1" + "0" * 200, "0." + "0" * 320 + "1", "1000.01", "0.0009"):
        reply = await system.resolve("wren", f"a cat --p {theirs}::{weight}")
        assert not reply.ok and reply.error is not None and reply.vector is None, weight
        assert reply.error.code == "INVALID_PARAMETER"
        assert "from 0.001 to 1000" in reply.error.message
        assert (reply.error.token, reply.error.position) == (f"{theirs}::{weight}", 10)
