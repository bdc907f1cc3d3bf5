"""Schema evolution with a real example: PairRanked v1 named its images ``winner`` and
``loser``; v2 names them ``winner_image_id`` and ``loser_image_id``."""

from __future__ import annotations

import json

from shared.client import Client, inbound
from shared.domain import events as ev
from shared.keys import partition_for
from shared.settings import Settings
from tests.helpers import catalog, eventually, log_events, register


def test_a_v1_inbound_pair_rank_is_upcast_to_v2() -> None:
    message = ev.Inbound.model_validate(
        {**inbound("PairRanked", "ann", {}), "schema_version": 1,
         "payload": {"winner": "img1", "loser": "img2"}}
    )  # fmt: skip
    assert message.typed_payload() == ev.PairRanked(winner_image_id="img1", loser_image_id="img2")


async def test_v1_messages_and_v1_log_entries_are_read_as_v2(
    system: Client, settings: Settings
) -> None:
    await register(system, catalog(4, settings.embed_dim))
    v1 = {**inbound("PairRanked", "ann", {}), "schema_version": 1,
          "payload": {"winner": "img1", "loser": "img2"}}  # fmt: skip
    await system.publish(v1)
    listing = await eventually(lambda: system.profiles("ann"), lambda found: found.profiles)
    assert listing.profiles[0].picks == 1
    logged = [
        e for e in await log_events(system.redis, settings.partitions) if e.type == "PairRanked"
    ]
    assert logged[0].schema_version == 2 and "winner_image_id" in logged[0].payload

    old = logged[0].model_copy(
        update={"schema_version": 1, "event_id": "written-before-v2",
                "payload": {"winner": "img3", "loser": "img0", "profile_id": listing.profiles[0].profile_id}}
    )  # fmt: skip
    await system.redis.xadd(
        partition_for("ann", settings.partitions).log, {"event": old.to_bytes()}
    )
    listing = await eventually(
        lambda: system.profiles("ann"), lambda found: found.profiles[0].picks == 2
    )
    assert json.loads(old.to_bytes())["schema_version"] == 1
