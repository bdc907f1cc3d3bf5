"""Hypothesis-generated bad input against the running services (separate processes): wrong
types, huge or negative numbers, invalid UTF-8, unknown types, missing fields, oversized and
deeply nested payloads. Nothing crashes a service or blocks a stream: every inbound entry is
consumed and ends up in the log or in a dead letter with a reason; every prompt gets a reply."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.client import Client, inbound
from shared.deadletter import DeadLetter
from shared.domain.events import INBOUND_TYPES
from shared.keys import partition_for
from tools.supervisor import Stack

pytestmark = pytest.mark.e2e
MEMBER = "fuzz"
ENV = {"PZ_PARTITIONS": "2", "PZ_EMBED_DIM": "4", "PZ_CLAIM_IDLE_MS": "1500"}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False), st.text(max_size=30),
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(sorted(INBOUND_TYPES)) | st.text(max_size=20),
        "schema_version": st.integers(-5, 10**20) | st.text(max_size=5),
        "idempotency_key": st.text(max_size=300),
        "member_id": st.just(MEMBER) | st.text(max_size=80),
        "occurred_at": st.text(max_size=30) | st.just("2026-01-01T00:00:00Z"),
        "payload": json_values,
    },
)
raw_bodies = st.one_of(
    messages.map(lambda m: json.dumps({**m, "member_id": MEMBER}).encode()),
    st.binary(max_size=200),
    st.integers(1, 20_000).map(lambda depth: ("[" * depth + "]" * depth).encode()),
    st.integers(300_000, 400_000).map(
        lambda size: json.dumps({"type": "ImageLiked", "pad": "x" * size}).encode()
    ),
)
prompts = st.text(max_size=300) | st.lists(
    st.sampled_from(["a cat", "--p", "—p", "–s", "--s", "1000", "-1", "99999999999999999999", "--v",
                     "5.2", "::", "abcdefg::0", "::-1", "--ar", "16:9", "x" * 70, "\x00", "é"]),
    max_size=12,
).map(" ".join)  # fmt: skip


@pytest.fixture(scope="module")
def stack(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REDIS_URL", server_url)
        for name, value in ENV.items():
            patch.setenv(name, value)
        redis.Redis.from_url(server_url).flushdb()
        running = Stack(Path(tmp_path_factory.mktemp("fuzz")), quiet=True, acl=True)
        running.start(timeout=60)
        try:
            yield running
        finally:
            running.stop()


def stream_id(entry_id: bytes | str) -> tuple[int, int]:
    millis, sequence = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")
    return int(millis), int(sequence)


def consumed(client: redis.Redis, inbox: str, entry_id: bytes) -> bool:
    groups: Any = client.xinfo_groups(inbox)
    pending: Any = client.xpending(inbox, "ingest")
    delivered = bool(groups) and stream_id(groups[0]["last-delivered-id"]) >= stream_id(entry_id)
    return delivered and pending["pending"] == 0


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=raw_bodies)
def test_bad_inbound_messages_are_consumed_and_dead_lettered(stack: Stack, body: bytes) -> None:
    client = redis.Redis.from_url(stack.url)
    inbox = partition_for(MEMBER, 2).inbox
    dead = partition_for(MEMBER, 2).dead_letters
    letters_before = client.xlen(dead)
    log_before = client.xlen(partition_for(MEMBER, 2).log)
    entry_id = client.xadd(inbox, {"data": body})
    for _ in range(200):
        if consumed(client, inbox, entry_id):
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"entry {entry_id!r} was not consumed: the stream is blocked")
    grew = (
        client.xlen(dead) - letters_before,
        client.xlen(partition_for(MEMBER, 2).log) - log_before,
    )
    assert grew != (0, 0) or b'"idempotency_key"' in body, (
        "an entry leaves a trace (or was ignored)"
    )
    if grew[0]:
        _, fields = client.xrevrange(dead, count=1)[0]
        letter = DeadLetter.model_validate(json.loads(fields[b"dead"]))
        assert letter.reason and letter.code
    assert all(p.poll() is None for p in stack.processes.values()), "no service crashed"
    client.close()


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(prompt=prompts)
def test_every_prompt_gets_a_reply(stack: Stack, prompt: str) -> None:
    async def ask() -> None:
        async with Client(stack.url, 2) as client:
            reply = await client.resolve_plain(MEMBER, prompt, timeout=5)
            assert reply.ok or (
                reply.error is not None and reply.error.code and reply.error.message
            )

    asyncio.run(ask())


async def test_after_the_fuzzing_a_valid_message_is_still_appended(stack: Stack) -> None:
    async with Client(stack.url, 2) as client:
        message = inbound("PersonalizationToggled", MEMBER, {"enabled": True})
        await client.publish(message)
        for _ in range(200):
            if (await client.profiles(MEMBER)).personalization:
                break
            await asyncio.sleep(0.05)
        assert (await client.profiles(MEMBER)).personalization
