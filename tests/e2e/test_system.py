"""The four services as separate processes, driven only through streams and RPC."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from shared.client import Client, inbound
from shared.keys import partition_for
from tests.helpers import catalog, dead_letters, eventually, grid_and_picks, register
from tools.supervisor import Stack

pytestmark = pytest.mark.e2e


def picks_for(member: str, grids: int, seed: int) -> list[dict[str, object]]:
    """``grids`` grids of 9 of the 40 catalog images, 3 picks each (grid IDs unique per seed)."""
    rng = np.random.default_rng(seed)
    messages = []
    for grid in range(grids):
        shown = [f"img{i}" for i in rng.choice(40, 9, replace=False)]
        messages += grid_and_picks(member, f"{member}-s{seed}-g{grid}", shown, 3)
    return messages


async def test_picks_become_codes_and_prompts_resolve_end_to_end(stack: Stack) -> None:
    async with Client(stack.url, 2) as client:
        await register(client, catalog(40, 16))
        locked = await client.resolve("alice", "a lighthouse --p")
        assert locked.error is not None and locked.error.code == "PROFILE_LOCKED"
        await client.publish_many(picks_for("alice", 2, seed=1) + picks_for("bob", 1, seed=2))
        listing = await eventually(lambda: client.profiles("alice"), lambda found: found.codes)
        code = listing.codes[0].code
        reply = await client.resolve("alice", "a lighthouse at dusk --p --s 250 --ar 16:9")
        assert reply.ok and reply.prompt == f"a lighthouse at dusk --p {code} --s 250 --ar 16:9"
        assert reply.vector is not None and abs(np.linalg.norm(reply.vector) - 1) < 1e-9
        assert reply.strength is not None and reply.strength > 1.0
        plain = await client.resolve_plain("alice", "a lighthouse at dusk --p --s 250 --ar 16:9")
        assert plain == reply, "the plain-JSON protocol answers exactly like FastStream's RPC"
        shared = await client.resolve("bob", f"a harbour --p {code}")
        assert shared.ok and shared.entries[0].profile_id is None, "codes are shareable handles"
        still_locked = await client.resolve("bob", "a harbour --p")
        assert still_locked.error is not None
        assert "pick 3 more images" in still_locked.error.message


async def test_bad_input_is_dead_lettered_and_every_service_survives_kill_9(stack: Stack) -> None:
    async with Client(stack.url, 2) as client:
        await register(client, catalog(40, 16))
        inbox = partition_for("carol", 2).inbox
        await client.redis.xadd(inbox, {"data": b"\xff not json"})
        await client.redis.xadd(inbox, {"data": json.dumps({"type": "Nope"})})
        await client.publish_many(picks_for("carol", 1, seed=3))
        await eventually(lambda: dead_letters(client.redis, 2), lambda found: len(found) == 2)
        await eventually(lambda: client.profiles("carol"), lambda found: found.profiles)
        for process in stack.processes.values():
            assert process.poll() is None, "a bad message never crashes a service"
            process.send_signal(signal.SIGKILL)
            process.wait()
        for service, replica in list(stack.processes):
            stack.spawn(service, replica)
        stack.wait_alive(timeout=60)
        await client.publish_many(picks_for("carol", 1, seed=4))
        listing = await eventually(lambda: client.profiles("carol"), lambda found: found.codes)
        assert listing.profiles[0].picks == 6
        reply = await client.resolve("carol", "x --p")
        assert reply.ok and reply.entries[0].code == listing.codes[0].code


async def test_toggle_applies_defaults_to_prompts_without_p(stack: Stack) -> None:
    async with Client(stack.url, 2) as client:
        await register(client, catalog(40, 16))
        await client.publish_many(picks_for("dora", 2, seed=5))
        listing = await eventually(lambda: client.profiles("dora"), lambda found: found.codes)
        await client.publish(inbound("PersonalizationToggled", "dora", {"enabled": True}))
        await eventually(lambda: client.profiles("dora"), lambda found: found.personalization)
        reply = await client.resolve("dora", "a quiet street --ar 2:3")
        assert reply.ok and reply.prompt == f"a quiet street --ar 2:3 --p {listing.codes[0].code}"
