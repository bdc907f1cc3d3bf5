"""profile-projector: the event log in, read models out. Run: ``faststream run services.profile_projector.app:app``."""

from __future__ import annotations

from faststream import FastStream
from faststream.redis import RedisBroker
from faststream.specification import AsyncAPI

from shared.adapters.follower import FollowerConfig, PartitionFollower
from shared.adapters.generation import active_generation
from shared.adapters.lifecycle import Tasks, heartbeat, persistently, until_reachable
from shared.adapters.store import connect
from shared.keys import Partition, all_partitions
from shared.settings import Settings
from shared.taste.prior import TastePrior

from .projector import Projector

SERVICE = "profile-projector"


def build(settings: Settings) -> FastStream:
    broker = RedisBroker(settings.redis_url)
    client = connect(settings.redis_url)
    tasks = Tasks()
    app = FastStream(
        broker,
        specification=AsyncAPI(
            title=SERVICE,
            version="1",
            description="Folds the event log into read models; emits profile changes.",
        ),
    )

    @app.on_startup
    async def wait_for_server() -> None:
        await until_reachable(client, SERVICE)

    @app.after_startup
    async def start() -> None:
        generation = await persistently(lambda: active_generation(client), SERVICE)
        prior = TastePrior.uninformed(settings.embed_dim)
        projector = Projector(client, settings, prior, generation, follow_active=True)

        def stream(partition: Partition) -> str:
            return partition.log

        config = FollowerConfig(
            role=SERVICE,
            replica=settings.replica,
            stream=stream,
            position=projector.position_key,
            batch_size=settings.batch_size,
            lease_ms=settings.claim_idle_ms,
            max_attempts=settings.max_deliveries,
        )
        follower = PartitionFollower(
            client, config, all_partitions(settings.partitions), projector.apply
        )
        tasks.start(follower.run(), "follow-log")
        tasks.start(heartbeat(client, SERVICE, settings.replica), "heartbeat")

    @app.on_shutdown
    async def stop() -> None:
        await tasks.stop()

    return app


app = build(Settings.from_env())
