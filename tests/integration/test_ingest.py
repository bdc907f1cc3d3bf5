"""selection-ingest against a real server: append, de-duplicate, dead-letter, recover."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from services.selection_ingest.app import GROUP, build
from shared.client import Client, inbound
from shared.keys import Partition, partition_for
from shared.settings import Settings
from tests.helpers import catalog, dead_letters, eventually, grid_and_picks, log_events, register


async def test_accepted_messages_are_appended_in_order(settings: Settings) -> None:
    async with build(settings), Client(settings.redis_url, settings.partitions) as client:
        await register(client, catalog(10, settings.embed_dim))
        await client.publish_many(
            grid_and_picks("alice", "g1", [f"img{i}" for i in range(9)], picks=3)
        )
        events = await eventually(
            lambda: log_events(client.redis, settings.partitions), lambda e: len(e) == 15
        )
    alice = [e.type for e in events if e.member_id == "alice"]
    assert alice == ["ProfileCreated", "GridServed", "ImagePicked", "ImagePicked", "ImagePicked"]
    picks = [e.payload for e in events if e.type == "ImagePicked"]
    assert [len(p["candidates"]) for p in picks] == [9, 8, 7]


async def test_same_idempotency_key_appends_once_also_across_restarts(settings: Settings) -> None:
    message = catalog(1, settings.embed_dim)[0]
    async with Client(settings.redis_url, settings.partitions) as client:
        async with build(settings):
            await client.publish(message)
            await client.publish(message)
            await eventually(lambda: _stat(client.redis, "duplicates"), lambda n: n == 1)
        async with build(settings.model_copy(update={"replica": "test-1"})):
            await client.publish(message)
            await eventually(lambda: _stat(client.redis, "duplicates"), lambda n: n == 2)
        events = await log_events(client.redis, settings.partitions)
    assert [e.event_id for e in events] == [message["idempotency_key"]]


async def test_bad_input_is_dead_lettered_with_a_reason_and_the_service_keeps_going(
    settings: Settings,
) -> None:
    inbox = partition_for("mallory", settings.partitions).inbox
    other = Partition(1 - partition_for("mallory", settings.partitions).index).inbox
    good = inbound("PersonalizationToggled", "mallory", {"enabled": True})
    bad = {
        "invalid utf-8": {"data": b"\xff\xfe\xfa"},
        "not json": {"data": b"{nope"},
        "no data field": {"body": b"{}"},
        "unknown type": {"data": json.dumps({**good, "type": "ImageExploded"})},
        "missing field": {"data": json.dumps({k: v for k, v in good.items() if k != "member_id"})},
        "wrong type": {"data": json.dumps({**good, "payload": {"enabled": "maybe"}})},
        "deep nesting": {"data": "[" * 5000 + "]" * 5000},
        "huge number": {"data": json.dumps({**good, "schema_version": 10**30})},
        "unknown grid": {
            "data": json.dumps(inbound("ImagePicked", "mallory", {"grid_id": "x", "image_id": "y"}))
        },
    }
    async with build(settings), Client(settings.redis_url, settings.partitions) as client:
        for fields in bad.values():
            await client.redis.xadd(inbox, fields)
        await client.redis.xadd(other, {"data": json.dumps(good)})
        await client.publish(good)
        await eventually(
            lambda: log_events(client.redis, settings.partitions), lambda e: len(e) == 1
        )
        letters = await eventually(
            lambda: dead_letters(client.redis, settings.partitions),
            lambda d: len(d) == len(bad) + 1,
        )
    codes = sorted(letter.code for letter in letters)
    assert codes == sorted(
        ["MALFORMED", "MALFORMED", "MALFORMED", "INVALID_FIELD", "INVALID_FIELD",
         "INVALID_FIELD", "MALFORMED", "INVALID_FIELD", "UNKNOWN_GRID", "WRONG_PARTITION"]
    )  # fmt: skip
    by_code = {letter.code: letter for letter in letters}
    assert "ImageExploded" in next(
        d.reason for d in letters if d.original and "ImageExploded" in d.original
    )
    assert by_code["WRONG_PARTITION"].field == "member_id"
    assert any(d.original_base64 for d in letters), "invalid UTF-8 is kept byte for byte"
    assert all(d.reason and d.entry_id and d.source for d in letters)


async def test_entries_left_pending_by_a_crashed_replica_are_taken_over(settings: Settings) -> None:
    message = inbound("PersonalizationToggled", "carol", {"enabled": True})
    inbox = partition_for("carol", settings.partitions).inbox
    raw = aioredis.Redis.from_url(settings.redis_url)
    await raw.xgroup_create(inbox, GROUP, id="0", mkstream=True)
    await raw.xadd(inbox, {"data": json.dumps(message)})
    await raw.xreadgroup(GROUP, "crashed-replica", {inbox: ">"}, count=10)
    async with build(settings):
        events = await eventually(
            lambda: log_events(raw, settings.partitions), lambda e: len(e) == 1
        )
        pending = await eventually(lambda: raw.xpending(inbox, GROUP), lambda p: p["pending"] == 0)
    await raw.aclose()
    assert events[0].event_id == message["idempotency_key"]
    assert pending["pending"] == 0


async def _stat(client: aioredis.Redis, name: str) -> int:
    total = 0
    for index in range(2):
        value = await client.hget(Partition(index).stats, name)
        total += int(value or 0)
    return total


async def test_a_dead_letter_is_redriven_after_the_fix(settings: Settings) -> None:
    from tools.redrive import letters, redrive

    early = inbound("GridServed", "zoe", {"grid_id": "z1", "image_ids": ["late0", "late1"]})
    async with build(settings), Client(settings.redis_url, settings.partitions) as client:
        await client.publish(early)
        found = await eventually(
            lambda: letters(client.redis, settings), lambda rows: len(rows) == 1
        )
        assert found[0][2].code == "UNKNOWN_IMAGE"
        await register(client, catalog(2, settings.embed_dim, prefix="late"))
        assert await redrive(client.redis, settings, code="UNKNOWN_IMAGE") == (1, [])
        events = await eventually(
            lambda: log_events(client.redis, settings.partitions),
            lambda found: any(e.type == "GridServed" for e in found),
        )
        assert await letters(client.redis, settings) == []
    served = [e for e in events if e.type == "GridServed"]
    assert [e.event_id for e in served] == [early["idempotency_key"]]
