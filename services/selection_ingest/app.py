"""selection-ingest: inbox streams in, event log out.

Run: ``faststream run services.selection_ingest.app:app``. Each partition's inbox is read in
the consumer group ``ingest`` by whichever replica holds the partition's lease, so a member's
messages are decided in the order they were published, also with several replicas.
"""

from __future__ import annotations

from typing import Any

from faststream import Context, FastStream
from faststream.redis import ListSub, RedisBroker
from faststream.redis.message import RedisMessage
from faststream.specification import AsyncAPI

from shared.adapters.follower import Entry, FollowerConfig, GroupFollower
from shared.adapters.lifecycle import Tasks, heartbeat, persistently, until_reachable
from shared.adapters.rpc import answer
from shared.adapters.store import connect
from shared.domain.grids import GridReply
from shared.keys import CONFIG, GRID_RPC, Partition, all_partitions
from shared.settings import Settings

from .grids import GridService
from .ingest import GROUP, InboxEntry, Ingest

SERVICE = "selection-ingest"


def build(settings: Settings) -> FastStream:
    broker = RedisBroker(settings.redis_url)
    client = connect(settings.redis_url)
    ingests = {p.index: Ingest(client, settings, p) for p in all_partitions(settings.partitions)}
    tasks = Tasks()
    grids = GridService(client, settings)
    app = FastStream(
        broker,
        specification=AsyncAPI(
            title=SERVICE,
            version="1",
            description="Validates inbound messages and appends them to the event log.",
        ),
    )

    @broker.subscriber(
        list=ListSub(GRID_RPC),
        title=GRID_RPC,
        description="The next grid for a profile: send a GridRequest, get a GridReply.",
    )
    async def on_grid(body: Any, message: RedisMessage = Context("message")) -> GridReply:
        return await answer(client, body, message, await grids.handle(body))

    async def process(partition: Partition, entries: list[Entry], deliveries: int) -> None:
        inbox = [InboxEntry(entry_id, fields) for entry_id, fields in entries]
        await ingests[partition.index].process(inbox, deliveries)

    def inbox(partition: Partition) -> str:
        return partition.inbox

    @app.on_startup
    async def wait_for_server() -> None:
        await until_reachable(client, SERVICE)

    @app.after_startup
    async def start() -> None:
        await persistently(lambda: client.hset(CONFIG, "partitions", settings.partitions), SERVICE)
        config = FollowerConfig(
            role=SERVICE,
            replica=settings.replica,
            stream=inbox,
            position=inbox,
            batch_size=settings.batch_size,
            lease_ms=settings.claim_idle_ms,
            max_attempts=settings.max_deliveries,
        )
        follower = GroupFollower(
            client, config, all_partitions(settings.partitions), GROUP, process
        )
        tasks.start(follower.run(), "consume-inboxes")
        tasks.start(heartbeat(client, SERVICE, settings.replica), "heartbeat")

    @app.on_shutdown
    async def stop() -> None:
        await tasks.stop()

    return app


app = build(Settings.from_env())
