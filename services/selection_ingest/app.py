"""selection-ingest: inbox streams in, event log out. Run: ``faststream run services.selection_ingest.app:app``."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import Context, FastStream
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.message import RedisBatchStreamMessage, RedisStreamMessage
from faststream.specification import AsyncAPI

from shared.adapters.lifecycle import Tasks, heartbeat
from shared.adapters.store import connect, ensure_group, text
from shared.deadletter import DeadLetter
from shared.domain.events import utcnow
from shared.keys import Partition, all_partitions
from shared.settings import Settings

from .ingest import InboxEntry, Ingest

GROUP = "ingest"


async def inbox_parser(message: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """Carry every entry's raw fields through FastStream untouched (invalid UTF-8 included)."""
    data = message["data"]
    wrapped = [_wrap(f) for f in data] if isinstance(data, list) else _wrap(data)
    return await original({**message, "data": wrapped})


def _wrap(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
    encoded = [[k.decode("latin-1"), base64.b64encode(v).decode()] for k, v in fields.items()]
    return {b"__data__": json.dumps(encoded).encode()}


def _unwrap(body: list[list[str]]) -> dict[bytes, bytes]:
    return {k.encode("latin-1"): base64.b64decode(v) for k, v in body}


def build(settings: Settings) -> FastStream:
    broker = RedisBroker(settings.redis_url)
    client = connect(settings.redis_url)
    ingests = {p.index: Ingest(client, settings, p) for p in all_partitions(settings.partitions)}
    tasks = Tasks()

    for partition in all_partitions(settings.partitions):
        _subscribe(broker, settings, partition, ingests[partition.index])

    app = FastStream(
        broker,
        specification=AsyncAPI(
            title="selection-ingest",
            version="1",
            description="Validates inbound messages and appends them to the event log.",
        ),
    )

    @app.on_startup
    async def create_groups() -> None:
        for partition in all_partitions(settings.partitions):
            await ensure_group(client, partition.inbox, GROUP)
        await client.hset("pz:config", mapping={"partitions": settings.partitions})

    @app.after_startup
    async def start_heartbeat() -> None:
        tasks.start(heartbeat(client, "selection-ingest", settings.replica), "heartbeat")

    @app.on_shutdown
    async def stop() -> None:
        await tasks.stop()

    return app


def _subscribe(
    broker: RedisBroker, settings: Settings, partition: Partition, ingest: Ingest
) -> None:
    @broker.subscriber(
        stream=StreamSub(
            partition.inbox,
            group=GROUP,
            consumer=settings.replica,
            batch=True,
            max_records=settings.batch_size,
        ),
        parser=inbox_parser,
        title=f"{partition.inbox}:read",
        description="Inbound messages (README, 'Contract'): JSON in the entry's 'data' field.",
    )
    async def on_inbox(
        body: list[list[list[str]]], message: RedisBatchStreamMessage = Context("message")
    ) -> None:
        ids = message.raw_message["message_ids"]
        entries = [InboxEntry(text(i), _unwrap(b)) for i, b in zip(ids, body, strict=True)]
        await ingest.process(entries)

    @broker.subscriber(
        stream=StreamSub(
            partition.inbox,
            group=GROUP,
            consumer=settings.replica,
            min_idle_time=settings.claim_idle_ms,
        ),
        parser=inbox_parser,
        title=f"{partition.inbox}:reclaim",
        description="Takes over entries a crashed replica left unacknowledged.",
    )
    async def on_stale(
        body: list[list[str]], message: RedisStreamMessage = Context("message")
    ) -> None:
        entry = InboxEntry(text(message.raw_message["message_ids"][0]), _unwrap(body))
        deliveries = await message.get_delivery_count()
        if deliveries <= settings.max_deliveries:
            await ingest.process([entry], deliveries)
            return
        letter = DeadLetter.of(
            entry.raw,
            service="selection-ingest",
            source=partition.inbox,
            entry_id=entry.entry_id,
            code="KEEPS_FAILING",
            reason=f"processing failed {deliveries - 1} times",
            deliveries=deliveries,
            at=utcnow(),
        )
        await ingest.client.xadd(partition.dead_letters, {"dead": letter.to_bytes()})


app = build(Settings.from_env())
