"""The shell every service shares: a FastStream app with its broker and Redis client, that
waits for the server at startup, keeps a heartbeat, stops its loops at shutdown, and exits
when the server refuses its user (shared/adapters/lifecycle.py)."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from faststream import FastStream
from faststream.redis import RedisBroker
from faststream.specification import AsyncAPI

from shared.keys import all_partitions
from shared.settings import Settings

from .follower import Follower, FollowerConfig, Source
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

    def follow(self, source: Source, task: str) -> None:
        """Follow ``source`` in every partition whose lease this replica holds (leases of
        ``PZ_CLAIM_IDLE_MS``; replicas share the partitions), as the background ``task``."""
        config = FollowerConfig(
            role=self.name,
            replica=self.settings.replica,
            batch_size=self.settings.batch_size,
            lease_ms=self.settings.claim_idle_ms,
            max_attempts=self.settings.max_deliveries,
            dead_letters_kept=self.settings.dead_letters_kept,
        )
        partitions = all_partitions(self.settings.partitions)
        self.tasks.start(Follower(self.client, config, partitions, source).run(), task)

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
