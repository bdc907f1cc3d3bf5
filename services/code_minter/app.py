"""code-minter: profile changes in, ``CodeMinted`` on the log. Run: ``faststream run services.code_minter.app:app``."""

from __future__ import annotations

from faststream import FastStream
from faststream.redis import RedisBroker
from faststream.specification import AsyncAPI

from shared.adapters.follower import FollowerConfig, PartitionFollower
from shared.adapters.lifecycle import Tasks, heartbeat, until_reachable
from shared.adapters.store import connect
from shared.keys import Partition, all_partitions
from shared.settings import Settings

from .minter import Minter

SERVICE = "code-minter"


def build(settings: Settings) -> FastStream:
    broker = RedisBroker(settings.redis_url)
    client = connect(settings.redis_url)
    minter = Minter(client, settings)
    tasks = Tasks()
    app = FastStream(
        broker,
        specification=AsyncAPI(
            title=SERVICE, version="1", description="Mints immutable codes for profile states."
        ),
    )

    def stream(partition: Partition) -> str:
        return partition.changes

    @app.on_startup
    async def wait_for_server() -> None:
        await until_reachable(client, SERVICE)

    @app.after_startup
    async def start() -> None:
        config = FollowerConfig(
            role=SERVICE,
            replica=settings.replica,
            stream=stream,
            position=minter.position_key,
            batch_size=settings.batch_size,
            lease_ms=settings.claim_idle_ms,
            max_attempts=settings.max_deliveries,
        )
        follower = PartitionFollower(
            client, config, all_partitions(settings.partitions), minter.apply
        )
        tasks.start(follower.run(), "follow-changes")
        tasks.start(heartbeat(client, SERVICE, settings.replica), "heartbeat")

    @app.on_shutdown
    async def stop() -> None:
        await tasks.stop()

    return app


app = build(Settings.from_env())
