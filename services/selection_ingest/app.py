"""selection-ingest: inbox streams in, event log out; and the grid service.

Run: ``faststream run services.selection_ingest.app:app``. Each partition's inbox is read in
the consumer group ``ingest`` by whichever replica holds the partition's lease, so a member's
messages are decided in the order they were published, also with several replicas.
"""

from __future__ import annotations

from typing import Any

from faststream import Context, FastStream
from faststream.redis import ListSub
from faststream.redis.message import RedisMessage

from shared.adapters.follower import Entry, GroupFollower
from shared.adapters.lifecycle import persistently
from shared.adapters.rpc import answer
from shared.adapters.service import service
from shared.domain.grids import GridReply
from shared.keys import CONFIG, GRID_RPC, Partition, all_partitions
from shared.settings import Settings

from .grids import GridService
from .ingest import GROUP, InboxEntry, Ingest

SERVICE = "selection-ingest"


def inbox(partition: Partition) -> str:
    return partition.inbox


def build(settings: Settings) -> FastStream:
    svc = service(SERVICE, "Validates inbound messages and appends them to the log.", settings)
    client = svc.client
    partitions = all_partitions(settings.partitions)
    ingests = {p.index: Ingest(client, settings, p) for p in partitions}
    grids = GridService(client, settings)

    @svc.broker.subscriber(
        list=ListSub(GRID_RPC),
        title=GRID_RPC,
        description="The next grid for a profile: send a GridRequest, get a GridReply.",
    )
    async def on_grid(body: Any, message: RedisMessage = Context("message")) -> GridReply:
        return await answer(client, body, message, await grids.handle(body))

    async def process(partition: Partition, entries: list[Entry], deliveries: int) -> None:
        batch = [InboxEntry(entry_id, fields) for entry_id, fields in entries]
        await ingests[partition.index].process(batch, deliveries)

    @svc.app.after_startup
    async def start() -> None:
        await persistently(lambda: client.hset(CONFIG, "partitions", settings.partitions), SERVICE)
        config = svc.follower_config(inbox, inbox)
        follower = GroupFollower(
            client, config, partitions, GROUP, process, settings.max_message_bytes
        )
        svc.tasks.start(follower.run(), "consume-inboxes")

    return svc.app


app = build(Settings.from_env())
