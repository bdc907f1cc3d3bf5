"""The follower fails the same way whichever way it reads: a poison entry is found by
single-entry batches and dead-lettered as ``KEEPS_FAILING`` after ``max_attempts``, the entries
around it are handled, and an error of the server is retried without counting."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as ServerGone

from shared.adapters.follower import AtPosition, Entry, Follower, FollowerConfig, InGroup, Source
from shared.adapters.lifecycle import Tasks
from shared.adapters.store import text
from shared.keys import Partition
from tests.helpers import dead_letters, eventually

ROLE = "test-follower"
PARTITION = Partition(0)
ENTRIES = [b"a", b"b", b"poison", b"c", b"d"]
# (first entry, entries, attempt) of each call: the batch fails, its first entry alone
# succeeds, and so on until the poison entry fails alone up to its third attempt.
CALLS = [
    (b"a", 5, 1), (b"a", 1, 2), (b"b", 4, 1), (b"b", 1, 2),
    (b"poison", 3, 1), (b"poison", 1, 2), (b"poison", 1, 3), (b"c", 2, 1),
]  # fmt: skip


def config() -> FollowerConfig:
    return FollowerConfig(role=ROLE, replica="r1", lease_ms=300, block_ms=50, max_attempts=3)


@asynccontextmanager
async def following(client: aioredis.Redis, source: Source) -> AsyncIterator[None]:
    tasks = Tasks(ROLE)  # stops a loop that swallows a cancellation, as the services do
    tasks.start(Follower(client, config(), [PARTITION], source).run(), "follow")
    try:
        yield
    finally:
        await tasks.stop()


async def append(client: aioredis.Redis, stream: str, field: bytes) -> list[str]:
    return [text(await client.xadd(stream, {field: value})) for value in ENTRIES]


def first(entries: list[Entry]) -> bytes:
    return next(iter(entries[0][1].values()))


async def until(done: Callable[[], bool]) -> None:
    async def check() -> bool:
        return done()

    await eventually(check, bool)


async def test_a_poison_log_entry_is_dead_lettered_and_skipped_past(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    position = PARTITION.read_model(1).position
    ids = await append(client, PARTITION.log, b"event")
    calls, applied = [], []

    async def apply(partition: Partition, after: str, entries: list[Entry]) -> bool:
        calls.append((first(entries), len(entries), 0))
        if any(fields[b"event"] == b"poison" for _, fields in entries):
            raise ValueError("cannot fold")
        assert (text(await client.get(position)) or "0-0") == after
        await client.set(position, entries[-1][0])
        applied.extend(entry_id for entry_id, _ in entries)
        return True

    source = AtPosition(lambda p: p.log, lambda p: position, apply)
    async with following(client, source):
        await eventually(lambda: client.get(position), lambda stored: stored == ids[-1].encode())
    assert calls == [(entry, size, 0) for entry, size, _ in CALLS]
    assert applied == [ids[0], ids[1], ids[3], ids[4]]
    [letter] = await dead_letters(client, 1)
    assert (letter.code, letter.entry_id, letter.original) == ("KEEPS_FAILING", ids[2], "poison")
    assert (letter.deliveries, letter.reason) == (3, "ValueError: cannot fold")
    assert await client.hexists(PARTITION.skipped(ROLE), ids[2])
    await client.aclose()


async def test_a_poison_inbox_entry_is_dead_lettered_and_acknowledged(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    ids = await append(client, PARTITION.inbox, b"data")
    calls, processed = [], []

    async def process(partition: Partition, entries: list[Entry], attempt: int) -> None:
        calls.append((first(entries), len(entries), attempt))
        if any(fields[b"data"] == b"poison" for _, fields in entries):
            raise ValueError("cannot decide")
        processed.extend(entry_id for entry_id, _ in entries)

    async with following(client, InGroup(lambda p: p.inbox, "g", process)):
        await until(lambda: len(processed) == 4)
    assert calls == CALLS
    assert not (await client.xpending(PARTITION.inbox, "g"))["pending"]
    assert processed == [ids[0], ids[1], ids[3], ids[4]]
    [letter] = await dead_letters(client, 1)
    assert (letter.code, letter.entry_id, letter.original) == ("KEEPS_FAILING", ids[2], "poison")
    assert (letter.deliveries, letter.reason) == (3, "ValueError: cannot decide")
    await client.aclose()


async def test_an_error_of_the_server_is_retried_without_counting(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    await append(client, PARTITION.inbox, b"data")
    attempts: list[int] = []

    async def process(partition: Partition, entries: list[Entry], attempt: int) -> None:
        attempts.append(attempt)
        if len(attempts) <= 2 * config().max_attempts:
            raise ServerGone("the server went away")

    async with following(client, InGroup(lambda p: p.inbox, "g", process)):
        await until(lambda: len(attempts) > 2 * config().max_attempts)
        await eventually(lambda: client.xpending(PARTITION.inbox, "g"), lambda p: not p["pending"])
    assert attempts == [1] * 7, "each retry is a first attempt, with the whole batch"
    assert not await dead_letters(client, 1)
    await client.aclose()
