"""profile-projector and code-minter against a real server."""

from __future__ import annotations

import numpy as np
import pytest
from redis.asyncio import ConnectionPool, Redis

from services.code_minter.minter import Minter
from services.profile_projector.projector import Projector
from services.prompt_resolver.resolver import Resolver
from shared.adapters.generation import active_generation
from shared.adapters.metering import Counting
from shared.adapters.readmodels import RedisReadModels
from shared.client import Client, inbound
from shared.domain.resolution import ResolveRequest
from shared.keys import all_partitions, partition_for
from shared.settings import Settings
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
    generation = await active_generation(system.redis)
    projector = Projector(RedisReadModels(system.redis, settings, generation), settings)
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
        RedisReadModels(system.redis, settings, live + 1), settings, emit_changes=False
    )
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


async def _cycles(client: Client, member: str, first: int, count: int) -> None:
    """``count`` profiles created and deleted, at most 90 at a time (the profile limit)."""
    for start in range(first, first + count, 90):
        await _create_and_delete(client, member, range(start, min(first + count, start + 90)))


async def _create_and_delete(client: Client, member: str, numbers: range) -> None:
    names = {f"Try {n}" for n in numbers}
    await client.publish_many(inbound("ProfileCreated", member, {"name": n}) for n in names)
    found = await eventually(
        lambda: client.profiles(member), lambda f: {p.name for p in f.profiles} >= names
    )
    ids = [p.profile_id for p in found.profiles if p.name in names]
    await client.publish_many(inbound("ProfileDeleted", member, {"profile_id": i}) for i in ids)
    await eventually(
        lambda: client.profiles(member), lambda f: not {p.name for p in f.profiles} & names
    )


async def test_what_a_pick_and_a_resolve_read_does_not_grow_with_deleted_profiles(
    system: Client, settings: Settings
) -> None:
    await register(system, catalog(30, settings.embed_dim))
    await unlock(system, "ann", settings.unlock_v7)
    await unlock(system, "bob", 1)
    code = (await eventually(lambda: system.profiles("ann"), lambda f: f.codes)).codes[0].code
    pool = ConnectionPool.from_url(settings.redis_url, connection_class=Counting)
    resolver = Resolver(RedisReadModels(Redis(connection_pool=pool), settings), settings)
    generation = await active_generation(system.redis)
    view_key = partition_for("ann", settings.partitions).read_model(generation).member("ann")

    async def cost() -> tuple[int, int, int]:
        sizes = []
        for member in ("bob", "ann"):
            Counting.received = 0
            reply = await resolver.resolve(ResolveRequest(member_id=member, prompt=f"--p {code}"))
            assert reply.ok and reply.entries[0].code == code, reply.error
            sizes.append(Counting.received)
        return await system.redis.strlen(view_key), sizes[0], sizes[1]

    await _cycles(system, "ann", 0, 1)
    after_one = await cost()
    await _cycles(system, "ann", 1, 300)
    after_many = await cost()
    assert all(abs(a - b) <= 16 for a, b in zip(after_one, after_many, strict=True)), (
        "(member view, bytes read resolving her code for bob, for her) after 1 and 301 cycles:"
        f" {after_one}, {after_many}"
    )
    everything = await system.profiles("ann", include_deleted=True)
    gone = [p for p in everything.profiles if p.deleted]
    assert sorted(p.name for p in gone) == sorted(f"Try {n}" for n in range(301))
    assert [c.code for c in everything.codes] == [code]
    await pool.disconnect()
