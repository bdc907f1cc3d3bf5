"""Durability: with ``appendfsync always`` no append acknowledged to a publisher is lost when
the server is killed with SIGKILL, and ingest finishes the work after the restart.

With ``everysec`` (the default of ``make run``) a SIGKILL or power cut can lose up to about
one second of acknowledged writes: the README says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.selection_ingest.app import build
from shared.adapters.server import EmbeddedServer
from shared.client import inbound
from shared.keys import partition_for
from shared.settings import Settings
from tests.helpers import eventually, log_events


async def test_no_acknowledged_append_is_lost_on_kill_9(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "valkey", appendfsync="always").start()
    settings = Settings(redis_url=server.url, partitions=2, claim_idle_ms=800, replica="d-0")
    client = aioredis.Redis.from_url(server.url)
    acknowledged: list[str] = []

    async def publish() -> None:
        for n in range(100_000):
            message = inbound(
                "PersonalizationToggled", f"m{n % 7}", {"enabled": n % 2 == 0}, key=f"k{n}"
            )
            try:
                await client.xadd(
                    partition_for(message["member_id"], 2).inbox, {"data": json.dumps(message)}
                )
            except (RedisError, OSError):
                return
            acknowledged.append(message["idempotency_key"])

    publisher = asyncio.create_task(publish())
    await eventually(lambda: asyncio.sleep(0, len(acknowledged)), lambda n: n > 300)
    server.kill()
    await publisher
    server.start()
    with contextlib.suppress(RedisError):
        await client.ping()
    async with build(settings):
        events = await eventually(
            lambda: log_events(client, 2), lambda found: len(found) >= len(acknowledged), timeout=30
        )
    await client.aclose()
    server.stop()
    logged = {e.event_id for e in events}
    assert set(acknowledged) <= logged, f"lost: {sorted(set(acknowledged) - logged)[:5]}"
