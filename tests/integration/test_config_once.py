"""``pz:config`` is written once: ingest creates it if absent and never rewrites it (its ACL
user may only HSETNX it), and a service configured with another partition count stops."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from services.selection_ingest.app import build as build_ingest
from shared.adapters import lifecycle
from shared.keys import CONFIG
from shared.settings import Settings


class Exited(Exception):
    pass


def exit_as_exception(code: int) -> None:
    raise Exited(code)


async def test_ingest_creates_the_config_once_and_never_rewrites_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "terminate", exit_as_exception)
    client = aioredis.Redis.from_url(settings.redis_url)
    async with build_ingest(settings):
        assert await client.hget(CONFIG, "partitions") == b"2"
    misconfigured = build_ingest(settings.model_copy(update={"partitions": 3}))
    try:
        with pytest.raises(Exited) as exited:
            await misconfigured.start()
    finally:
        await misconfigured.stop()  # what the process exit would have ended
    assert exited.value.args == (lifecycle.EXIT_FATAL,)
    assert await client.hget(CONFIG, "partitions") == b"2", "the layout stays the server's"
    await client.aclose()
