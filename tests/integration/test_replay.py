"""Replay: rebuild into a fresh generation while the live one serves, verify, switch; export
and import the log; skip what the live projector dead-lettered; drop old generations."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import numpy as np
import pytest

from services.prompt_resolver.resolver import GENERATION_TTL_S
from shared.adapters.generation import active_generation, read_generation
from shared.adapters.server import EmbeddedServer
from shared.client import Client
from shared.keys import all_partitions
from shared.settings import Settings
from tests.helpers import catalog, dead_letters, eventually, grid_and_picks, register
from tests.integration.replay_helpers import (
    append_poison,
    log_ids,
    mixed_scenario,
    running,
    settled,
    snapshot,
)
from tools.replay import (
    LIVE_PROJECTOR,
    command,
    drop,
    export_log,
    generations,
    rebuild,
    rebuild_generation,
    switch,
    verify,
)

PROMPTS = ["a cat --p --s 300", "a harbour --p --v 6.1", "a fox --p --v 5.2", "a dog"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"generation_grace_s": 1.2, "max_deliveries": 3})


async def test_rebuilt_read_models_are_byte_identical_and_switching_keeps_serving(
    system: Client, settings: Settings
) -> None:
    await mixed_scenario(system, settings)
    await settled(system.redis, settings)
    live = await active_generation(system.redis)
    rebuilt = await rebuild(system.redis, settings, quiet=True)
    result = await verify(system.redis, settings, live, rebuilt)
    assert result.ok, result.differences
    assert result.compared >= 12 and result.skipped == 0
    before = await system.resolve("m0", "a cat --p --s 300")
    assert await switch(system.redis, rebuilt) == live
    await asyncio.sleep(GENERATION_TTL_S + 0.5)
    assert await drop(system.redis, settings, live) > 0
    await system.publish_many(
        grid_and_picks("m0", "after-switch", [f"img{i}" for i in range(9)], 3)
    )
    listing = await eventually(
        lambda: system.profiles("m0"), lambda found: found.profiles[0].picks == 16
    )
    after = await system.resolve("m0", "a cat --p --s 300")
    assert after.ok and before.ok
    assert listing.codes, "the live projector moved to the new generation and keeps projecting"


async def _models(client: Client) -> dict[str, bytes]:
    """The active generation's read models, by key with the generation left out."""
    generation = await read_generation(client.redis)
    found = await snapshot(client.redis, f"pz:{{p*}}:rm:{generation}:*")
    marker = f":rm:{generation}:"
    return {k.replace(marker, ":rm:G:"): v for k, v in found.items() if not k.endswith(":pos")}


async def _write_side(client: Client) -> dict[str, object]:
    """What ingest decides with: member states, the sets beside them, and the catalog."""
    found: dict[str, object] = dict(await snapshot(client.redis, "pz:{p*}:agg:*"))
    for pattern in ("pz:{p*}:gone:*", "pz:{p*}:liked:*", "pz:catalog:*"):
        async for key in client.redis.scan_iter(match=pattern):
            found[key.decode()] = sorted(await client.redis.smembers(key))
    async for key in client.redis.scan_iter(match="pz:img:*"):
        found[key.decode()] = await client.redis.hgetall(key)
    return found


async def _minter_memory(client: Client) -> dict[str, bytes]:
    """The code-minter's last code per profile and the claim of every code."""
    profiles = await snapshot(client.redis, "pz:{p*}:mint:profile:*")
    return profiles | await snapshot(client.redis, "pz:{p*}:mint:code:*")


async def _observed(client: Client, members: list[str]) -> dict[str, object]:
    """What members see: their listings and the resolution of a few prompts, one of them
    with another member's code."""
    seen: dict[str, object] = {}
    shared = (await client.profiles(members[-1])).codes[-1].code
    for member in members:
        seen[f"{member} listing"] = (await client.profiles(member)).model_dump()
        for prompt in [*PROMPTS, f"a tree --p {shared}::0.5 --s 50"]:
            seen[f"{member} {prompt}"] = (await client.resolve(member, prompt)).model_dump()
    return seen


async def test_a_restored_server_gives_the_same_codes_and_resolutions_and_mints_nothing_twice(
    system: Client, settings: Settings, tmp_path: Path
) -> None:
    members = ["m0", "m1", "m2"]
    await mixed_scenario(system, settings, members=len(members))
    await settled(system.redis, settings)
    exported = tmp_path / "log.jsonl"
    await export_log(system.redis, settings, exported, quiet=True)
    original = await _observed(system, members)
    events = await log_ids(system.redis, settings)
    memory = await _minter_memory(system)
    states = await _write_side(system)
    models = await _models(system)

    with EmbeddedServer(tmp_path / "restored") as server:
        restored = settings.model_copy(update={"redis_url": server.url})
        assert await command(["import", str(exported)], restored) == 0
        async with running(restored) as client:
            await asyncio.sleep(3)  # the services run; nobody sends anything
            assert await log_ids(client.redis, restored) == events, "not one new event"
            assert await _observed(client, members) == original
            assert await _minter_memory(client) == memory
            assert await _write_side(client) == states
            assert await _models(client) == models

            codes = {c.code for c in (await client.profiles("m0")).codes}
            await client.publish_many(
                grid_and_picks("m0", "later-1", [f"img{i}" for i in range(9)], 1)
            )
            await eventually(lambda: client.profiles("m0"), lambda f: f.profiles[0].picks == 14)
            await settled(client.redis, restored)
            assert len(await log_ids(client.redis, restored)) == len(events) + 2, (
                "one more pick is no reason for a code: the minter remembers the last one"
            )
            more = [f"img{i}" for i in range(10, 19)]
            await client.publish_many(grid_and_picks("m0", "later-2", more, 5))
            listing = await eventually(
                lambda: client.profiles("m0"), lambda f: len(f.codes) > len(codes)
            )
            await settled(client.redis, restored)
            assert {c.code for c in listing.codes} > codes
            after = await log_ids(client.redis, restored)
            assert len({entry for entry, _, _ in after}) == len(after)
            assert len({event for _, _, event in after}) == len(after), "an event ID repeated"
            minted = [event for _, kind, event in after if kind == "CodeMinted"]
            assert len(set(minted)) == len(minted)


async def test_an_import_command_restores_a_log_with_its_skips(
    system: Client, settings: Settings, tmp_path: Path
) -> None:
    await mixed_scenario(system, settings, members=2)
    partition, poison = await append_poison(system, settings, "m0")
    await eventually(
        lambda: system.redis.hget(partition.skipped(LIVE_PROJECTOR), poison), bool, timeout=30
    )
    await settled(system.redis, settings)
    exported = tmp_path / "log.jsonl"
    await export_log(system.redis, settings, exported, quiet=True)
    models = await _models(system)
    with EmbeddedServer(tmp_path / "restored") as server:
        restored = settings.model_copy(update={"redis_url": server.url})
        assert await command(["import", str(exported)], restored) == 0
        async with Client(server.url, settings.partitions) as client:
            assert await client.redis.hget(partition.skipped(LIVE_PROJECTOR), poison)
            assert await _models(client) == models


async def test_replay_skips_exactly_what_the_live_projector_dead_lettered(
    system: Client, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    await mixed_scenario(system, settings, members=2)
    partition, poison = await append_poison(system, settings, "m0")
    await system.publish_many(grid_and_picks("m0", "after", [f"img{i}" for i in range(9)], 2))
    letters = await eventually(
        lambda: dead_letters(system.redis, settings.partitions),
        lambda found: any(letter.entry_id == poison for letter in found),
        timeout=30,
    )
    assert [(x.code, x.service) for x in letters] == [("KEEPS_FAILING", LIVE_PROJECTOR)]
    await eventually(lambda: system.profiles("m0"), lambda f: f.profiles[0].picks == 15)
    await settled(system.redis, settings)
    record = await system.redis.hget(partition.skipped(LIVE_PROJECTOR), poison)
    assert record and b"not in the catalog" in record

    capsys.readouterr()
    assert await command(["rebuild", "--verify", "--switch"], settings) == 0
    out = capsys.readouterr().out
    assert f"skipped 1 entries the live projector dead-lettered: {partition.log} {poison}" in out
    assert ", 0 different" in out and "switched: generation" in out


async def test_an_entry_that_fails_in_a_rebuild_but_not_live_stops_it_and_its_leftovers_go(
    system: Client, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    await mixed_scenario(system, settings, members=2)
    partition, poison = await append_poison(system, settings, "m0")
    skipped = partition.skipped(LIVE_PROJECTOR)
    await eventually(lambda: system.redis.hget(skipped, poison), bool, timeout=30)
    await settled(system.redis, settings)
    live = await read_generation(system.redis)
    record = await system.redis.hget(skipped, poison)
    await system.redis.hdel(skipped, poison)  # as if the live projector had folded it

    capsys.readouterr()
    assert await command(["rebuild", "--verify", "--switch"], settings) == 1
    out = capsys.readouterr().out
    assert f"rebuild stopped: {partition.log} entry {poison} cannot be folded (LookupError:" in out
    assert "the live projector did not skip it" in out
    partial = await generations(system.redis)
    assert len(partial) == 2 and live in partial, "a partial generation is left"
    assert await read_generation(system.redis) == live, "and never switched to"

    await system.redis.hset(skipped, poison, record)
    rebuilt = await rebuild_generation(system.redis, settings, quiet=True)
    assert rebuilt.dropped.keys() == partial - {live}
    assert all(count > 0 for count in rebuilt.dropped.values())
    assert await generations(system.redis) == {live, rebuilt.generation}
    assert [(s.partition, s.entry_id) for s in rebuilt.skipped] == [(partition, poison)]

    capsys.readouterr()
    assert await command(["rebuild", "--verify", "--switch"], settings) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert f"dropping generation {rebuilt.generation}, left by an earlier rebuild" in captured.err
    active = await read_generation(system.redis)
    assert f"switched: generation {active} is active (was {live})" in out
    assert f"dropped generation {live}:" in out
    assert await generations(system.redis) == {active}, "after the grace, one generation"
    names = [k.decode() async for k in system.redis.scan_iter(match="pz:{p*}:rm:*")]
    assert names and all(f":rm:{active}:" in name for name in names)


async def test_drop_command_removes_an_inactive_generation_and_reports_it(
    system: Client, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    await mixed_scenario(system, settings, members=1)
    await settled(system.redis, settings)
    spare = await rebuild(system.redis, settings, quiet=True)
    count = len([k async for k in system.redis.scan_iter(match=f"pz:{{p*}}:rm:{spare}:*")])
    capsys.readouterr()
    assert await command(["drop", str(spare)], settings) == 0
    assert f"dropped generation {spare}: {count:,} keys removed" in capsys.readouterr().out
    assert await generations(system.redis) == {await read_generation(system.redis)}
    with pytest.raises(ValueError, match="is active"):
        await command(["drop", str(await read_generation(system.redis))], settings)


async def _write_continuously(client: Client, stop: asyncio.Event) -> int:
    """New members arriving: each gets two grids, picks three of each, and unlocks."""
    rng = np.random.default_rng(9)
    sent = 0
    for n in itertools.count():
        if stop.is_set():
            return sent
        shown = [f"img{i}" for i in rng.choice(30, 9, replace=False)]
        sent += await client.publish_many(grid_and_picks(f"new{n // 2}", f"g{n}", shown, 3))
        await asyncio.sleep(0.02)
    return sent


async def _moved_on(client: Client, settings: Settings, live: int, rebuilt: int) -> bool:
    """Whether the live projector has written a member the rebuilt generation lacks."""
    for partition in all_partitions(settings.partitions):
        live_keys, rebuilt_keys = partition.read_model(live), partition.read_model(rebuilt)
        async for key in client.redis.scan_iter(match=f"{live_keys.base}:member:*"):
            member = key.decode().rsplit(":member:", 1)[1]
            if not await client.redis.exists(rebuilt_keys.member(member)):
                return True
    return False


async def test_a_replay_under_live_traffic_verifies_and_switches(
    system: Client, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    await register(system, catalog(30, settings.embed_dim))
    stop = asyncio.Event()
    writer = asyncio.create_task(_write_continuously(system, stop))
    try:
        await asyncio.sleep(2)
        live = await read_generation(system.redis)
        rebuilt = await asyncio.wait_for(rebuild_generation(system.redis, settings), 60)
        await eventually(lambda: _moved_on(system, settings, live, rebuilt.generation), bool)
        result = await verify(system.redis, settings, live, rebuilt.generation)
        assert result.ok, result.differences[:10]
        assert result.compared > 20 and result.skipped > 0, "new members have moved on"
        assert await switch(system.redis, rebuilt.generation) == live
        await asyncio.sleep(1.5)  # the live projector goes on, in the new generation

        capsys.readouterr()  # and once more through the command line, still under traffic
        status = await asyncio.wait_for(command(["rebuild", "--verify", "--switch"], settings), 60)
        out = capsys.readouterr().out
        assert status == 0, out
        assert ", 0 different" in out and "switched: generation" in out, out
        assert await read_generation(system.redis) not in (live, rebuilt.generation)
        await asyncio.sleep(1)
    finally:
        stop.set()
        sent = await writer
    assert sent > 100
    await settled(system.redis, settings)
    active = await read_generation(system.redis)
    for partition in all_partitions(settings.partitions):
        head = (await system.redis.xrevrange(partition.log, count=1))[0][0]
        assert await system.redis.get(partition.read_model(active).position) == head
    events = await log_ids(system.redis, settings)
    assert len({event for _, _, event in events}) == len(events), "nothing doubled"
    fresh = await rebuild(system.redis, settings, quiet=True)
    result = await verify(system.redis, settings, active, fresh)
    assert result.ok and result.skipped == 0, result.differences
    assert result.compared > 50
