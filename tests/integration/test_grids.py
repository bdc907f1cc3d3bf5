"""The grid service: selection-ingest chooses the next grid and records it as GridServed."""

from __future__ import annotations

import pytest

from shared.client import Client, inbound
from shared.settings import Settings
from tests.helpers import catalog, eventually, log_events, register


@pytest.mark.parametrize("strategy", ["active", "random"])
async def test_a_served_grid_is_recorded_and_its_picks_feed_the_profile(
    system: Client, settings: Settings, strategy: str
) -> None:
    await register(system, catalog(40, settings.embed_dim))
    await register(system, catalog(20, settings.embed_dim, seed=3, version="6.1", prefix="old"))
    first = await system.grid("ann", strategy=strategy)
    assert first.ok and len(first.image_ids) == 9 and len(set(first.image_ids)) == 9
    assert all(image.startswith("img") for image in first.image_ids), "V7 images for a V7 profile"
    events = await eventually(
        lambda: log_events(system.redis, settings.partitions),
        lambda found: any(e.type == "GridServed" for e in found),
    )
    served = next(e for e in events if e.type == "GridServed")
    assert (
        served.payload["grid_id"] == first.grid_id
        and served.payload["image_ids"] == first.image_ids
    )
    await system.publish_many(
        inbound("ImagePicked", "ann", {"grid_id": first.grid_id, "image_id": image})
        for image in first.image_ids[:3]
    )
    listing = await eventually(
        lambda: system.profiles("ann"),
        lambda found: found.profiles and found.profiles[0].picks == 3,
    )
    second = await system.grid("ann", strategy=strategy)
    assert second.ok and not set(second.image_ids) & set(first.image_ids), "fresh images"
    assert second.profile_id == listing.profiles[0].profile_id


async def test_grid_requests_are_checked(system: Client, settings: Settings) -> None:
    await register(system, catalog(10, settings.embed_dim))
    reply = await system.grid("ann", profile_id="pnothere")
    assert (
        not reply.ok and reply.error is not None and "not an active profile of yours" in reply.error
    )
