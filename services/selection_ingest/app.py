"""selection-ingest: inbox streams in, event log out.

Run: ``faststream run services.selection_ingest.app:app``. Each partition's inbox is read in
the consumer group ``ingest`` by whichever replica holds the partition's lease, so a member's
messages are decided in the order they were published, also with several replicas. The grid
RPC runs in a process of its own (``grid_app.py``) so that it never slows ingestion.
"""

from __future__ import annotations

import asyncio

from faststream import FastStream

from shared.adapters.follower import Entry, InGroup
from shared.adapters.lifecycle import die, persistently
from shared.adapters.service import service
from shared.adapters.store import text
from shared.keys import CONFIG, Partition, all_partitions
from shared.settings import Settings

from .ingest import GROUP, InboxEntry, Ingest

SERVICE = "selection-ingest"
REPUBLISH_EVERY_S = 2.0


def inbox(partition: Partition) -> str:
    return partition.inbox


def build(settings: Settings) -> FastStream:
    svc = service(SERVICE, "Validates inbound messages and appends them to the log.", settings)
    client = svc.client
    partitions = all_partitions(settings.partitions)
    ingests = {p.index: Ingest(client, settings, p) for p in partitions}

    async def process(partition: Partition, entries: list[Entry], deliveries: int) -> None:
        batch = [InboxEntry(entry_id, fields) for entry_id, fields in entries]
        await ingests[partition.index].process(batch, deliveries)

    async def publish_partitions() -> None:
        """Tell publishers the partition count (``HGET pz:config partitions``). It fixes the
        key layout, so it is only ever set once; a service configured otherwise stops."""
        await client.hsetnx(CONFIG, "partitions", settings.partitions)
        stored = text(await client.hget(CONFIG, "partitions"))
        if stored != str(settings.partitions):
            die(SERVICE, f"the server's {CONFIG} says partitions={stored} but PZ_PARTITIONS="
                f"{settings.partitions}: every service must use the server's partition count")  # fmt: skip

    async def republish() -> None:
        """Now and then, publish the images a crash left unpublished (usually none)."""
        while True:
            for ingest in ingests.values():
                await persistently(ingest.republish, SERVICE)
            await asyncio.sleep(REPUBLISH_EVERY_S)

    @svc.app.after_startup
    async def start() -> None:
        await persistently(publish_partitions, SERVICE)
        svc.follow(InGroup(inbox, GROUP, process, settings.max_message_bytes), "consume-inboxes")
        svc.tasks.start(republish(), "republish-images")

    return svc.app


app = build(Settings.from_env())
