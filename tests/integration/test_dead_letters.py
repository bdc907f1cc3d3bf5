"""Dead letters are capped per partition, exported before the cap drops them, and a log entry
given up on is recorded where a replay finds it (also under the projector's ACL user)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from services.profile_projector.app import SERVICE as PROJECTOR
from shared.acl import acl_rules, url_for, user_name
from shared.adapters.follower import AtPosition, Batch, Follower, FollowerConfig, InGroup, Source
from shared.adapters.store import ensure_group
from shared.client import Client
from shared.keys import Partition
from shared.settings import Settings
from tests.helpers import dead_letters, eventually
from tools.redrive import command
from tools.replay import LIVE_PROJECTOR

KEPT = 100
LETTERS = 400


def follower(client: aioredis.Redis, partition: Partition, source: Source) -> Follower:
    config = FollowerConfig(role=PROJECTOR, replica="r1", dead_letters_kept=KEPT)
    return Follower(client, config, [partition], source)


def log_follower(client: aioredis.Redis, partition: Partition) -> Follower:
    source = AtPosition(
        lambda p: p.log,
        lambda p: p.read_model(1).position,
        apply=None,  # type: ignore[arg-type]
    )
    return follower(client, partition, source)


async def _append(client: aioredis.Redis, stream: str, count: int) -> list[tuple[str, dict]]:
    ids = [await client.xadd(stream, {"event": f"not an event {n}"}) for n in range(count)]
    return [(i.decode(), {b"event": f"not an event {n}".encode()}) for n, i in enumerate(ids)]


async def _give_up_on_each(client: aioredis.Redis, partition: Partition) -> None:
    logs = log_follower(client, partition)
    position = "0-0"
    for entry in await _append(client, partition.log, LETTERS):
        batch = Batch(position, [entry])
        await logs.give_up(partition, batch, ValueError("cannot fold"), 5)
        position = entry[0]


async def test_a_log_entry_given_up_on_is_capped_in_dead_letters_and_recorded_as_skipped(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    partition = Partition(0)
    await _give_up_on_each(client, partition)
    assert KEPT <= await client.xlen(partition.dead_letters) <= 2 * KEPT + 10
    skipped = await client.hgetall(partition.skipped(LIVE_PROJECTOR))
    assert len(skipped) == LETTERS, "every skip is kept: a replay must repeat each"
    last = (await client.xrevrange(partition.log, count=1))[0][0]
    assert json.loads(skipped[last]) == {
        "code": "KEEPS_FAILING",
        "reason": "ValueError: cannot fold",
        "at": json.loads(skipped[last])["at"],
    }
    assert await client.get(partition.read_model(1).position) == last
    await client.aclose()


async def test_an_inbox_entry_given_up_on_is_capped_in_dead_letters(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    partition = Partition(0)
    await ensure_group(client, partition.inbox, "g")
    source = InGroup(lambda p: p.inbox, "g", process=None)  # type: ignore[arg-type]
    inboxes = follower(client, partition, source)
    for entry in await _append(client, partition.inbox, LETTERS):
        batch = Batch(entry[0], [entry])
        await inboxes.give_up(partition, batch, ValueError("bad"), 5)
    assert KEPT <= await client.xlen(partition.dead_letters) <= 2 * KEPT + 10
    await client.aclose()


@pytest.fixture
def projector_user(redis_url: str) -> Iterator[str]:
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", user_name(PROJECTOR), *acl_rules(PROJECTOR, "pw"))
    yield url_for(redis_url, PROJECTOR, "pw")
    admin.execute_command("ACL", "DELUSER", user_name(PROJECTOR))
    admin.close()


async def test_the_projector_may_record_its_skips_under_its_own_acl_user(
    redis_url: str, projector_user: str
) -> None:
    admin = aioredis.Redis.from_url(redis_url)
    partition = Partition(1)
    entry = (await _append(admin, partition.log, 1))[0]
    client = aioredis.Redis.from_url(projector_user)
    logs = log_follower(client, partition)
    await logs.give_up(partition, Batch("0-0", [entry]), LookupError("no image"), 5)
    assert await admin.hexists(partition.skipped(LIVE_PROJECTOR), entry[0])
    await client.aclose()
    await admin.aclose()


async def test_export_writes_every_dead_letter_as_json_lines(
    system: Client, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for n in range(30):
        await system.redis.xadd(system.inbox(f"m{n}"), {"data": f"not json {n}"})
    found = await eventually(
        lambda: dead_letters(system.redis, settings.partitions), lambda letters: len(letters) == 30
    )
    path = tmp_path / "dead.jsonl"
    assert await command(["export", str(path)], settings) == 0
    captured = capsys.readouterr()
    assert "exported 30 dead letters" in captured.out
    assert "30/30 dead letters" in captured.err
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(line["dead"]["original"] for line in lines) == sorted(
        letter.original for letter in found
    )
    for line in lines:
        stream = Partition(line["partition"]).dead_letters
        assert await system.redis.xrange(stream, min=line["id"], max=line["id"])
        assert line["dead"]["code"] == "MALFORMED"
