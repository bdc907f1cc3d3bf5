"""Replay: rebuild into a fresh generation while the live one serves, verify, switch; export
and import the log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from services.prompt_resolver.resolver import GENERATION_TTL_S
from services.replay import drop, export_log, import_log, rebuild, switch, verify
from shared.adapters.generation import active_generation
from shared.client import Client, inbound
from shared.keys import all_partitions
from shared.settings import Settings
from tests.helpers import catalog, eventually, grid_and_picks, register


async def mixed_scenario(client: Client, settings: Settings, members: int = 4) -> None:
    await register(client, catalog(30, settings.embed_dim))
    await register(client, catalog(10, settings.embed_dim, seed=2, version="6.1", prefix="old"))
    rng = np.random.default_rng(5)
    messages = []
    for m in range(members):
        member = f"m{m}"
        for grid in range(4):
            shown = [f"img{i}" for i in rng.choice(30, 9, replace=False)]
            messages += grid_and_picks(member, f"{member}-{grid}", shown, 3)
        messages.append(inbound("ImageLiked", member, {"image_id": f"old{m}"}))
        messages.append(
            inbound("PairRanked", member, {"winner_image_id": "img1", "loser_image_id": "img2"})
        )
        messages.append(inbound("PersonalizationToggled", member, {"enabled": m % 2 == 0}))
    await client.publish_many(messages)
    for m in range(members):
        await eventually(
            lambda m=m: client.profiles(f"m{m}"),
            lambda found: (
                len(found.codes) >= 1 and len(found.profiles) == 2 and found.profiles[0].picks == 13
            ),
        )


async def test_rebuilt_read_models_are_byte_identical_and_switching_keeps_serving(
    system: Client, settings: Settings
) -> None:
    await mixed_scenario(system, settings)
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


async def test_export_then_import_into_an_empty_server_rebuilds_everything(
    system: Client, settings: Settings, tmp_path: Path
) -> None:
    await mixed_scenario(system, settings, members=2)
    live = await active_generation(system.redis)
    original = {
        p.index: await _snapshot(system, p.read_model(live).base)
        for p in all_partitions(settings.partitions)
    }
    exported = await export_log(system.redis, settings, tmp_path / "log.jsonl", quiet=True)
    states = {
        p.index: await _snapshot(system, f"{p.tag}:agg")
        for p in all_partitions(settings.partitions)
    }
    await system.redis.flushdb()
    assert await import_log(system.redis, settings, tmp_path / "log.jsonl", quiet=True) == exported
    generation = await rebuild(system.redis, settings, quiet=True)
    for partition in all_partitions(settings.partitions):
        assert (
            await _snapshot(system, partition.read_model(generation).base)
            == original[partition.index]
        )
        assert await _snapshot(system, f"{partition.tag}:agg") == states[partition.index]


async def _snapshot(client: Client, base: str) -> dict[str, bytes]:
    keys = sorted([k.decode() async for k in client.redis.scan_iter(match=f"{base}:*")])
    values = await client.redis.mget(keys) if keys else []
    return {k[len(base) :]: v for k, v in zip(keys, values, strict=True) if not k.endswith(":pos")}
