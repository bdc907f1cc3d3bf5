"""The shell every service shares: a FastStream app with its broker and Redis client, that
waits for the server at startup, keeps a heartbeat, stops its loops at shutdown, and exits
when the server refuses its user (shared/adapters/lifecycle.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from faststream import FastStream
from faststream.redis import RedisBroker
from faststream.specification import AsyncAPI

from shared.keys import Partition
from shared.settings import Settings

from .follower import FollowerConfig
from .lifecycle import Tasks, heartbeat, until_reachable
from .rpc import Replies
from .store import connect


@dataclass
class Service:
    name: str
    settings: Settings
    broker: RedisBroker
    client: aioredis.Redis
    app: FastStream
    tasks: Tasks

    def follower_config(
        self, stream: Callable[[Partition], str], position: Callable[[Partition], str]
    ) -> FollowerConfig:
        """How this service's replicas share partitions (leases of ``PZ_CLAIM_IDLE_MS``)."""
        return FollowerConfig(
            role=self.name,
            replica=self.settings.replica,
            stream=stream,
            position=position,
            batch_size=self.settings.batch_size,
            lease_ms=self.settings.claim_idle_ms,
            max_attempts=self.settings.max_deliveries,
            dead_letters_kept=self.settings.dead_letters_kept,
        )

    def replies(self) -> Replies:
        """How this service answers RPC requests (and dead-letters unanswerable ones)."""
        return Replies(self.client, self.name, self.settings.dead_letters_kept)


def service(name: str, description: str, settings: Settings) -> Service:
    broker = RedisBroker(settings.redis_url)
    client = connect(settings.redis_url)
    tasks = Tasks(name)
    app = FastStream(
        broker, specification=AsyncAPI(title=name, version="1", description=description)
    )

    @app.on_startup
    async def wait_for_server() -> None:
        await until_reachable(client, name)

    @app.after_startup
    async def beat() -> None:
        tasks.start(heartbeat(client, name, settings.replica), "heartbeat")

    @app.on_shutdown
    async def stop() -> None:
        await tasks.stop()

    return Service(name, settings, broker, client, app, tasks)
