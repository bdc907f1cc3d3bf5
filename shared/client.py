"""A small client of the public contract: publish inbound messages, resolve prompts.

It uses only what any outside service could: ``XADD`` of JSON to an inbox stream and the
RPCs, so it works as the ``publisher`` ACL user (``publisher_url`` in ``data/run.json``).
The demo, the benchmarks and the end-to-end tests drive the system with it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from faststream.redis import RedisBroker

from shared.adapters.store import text
from shared.domain.events import PAYLOADS
from shared.domain.grids import GridReply, GridRequest
from shared.domain.listing import Listing, ListRequest
from shared.domain.receipt import Receipt
from shared.domain.resolution import ResolveRequest, ResolveResponse
from shared.keys import GRID_RPC, PROFILES_RPC, RESOLVE_RPC, partition_for

POP_WAIT_S = 2.0


def inbound(
    type_: str,
    member_id: str,
    payload: dict[str, Any],
    key: str | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": type_,
        "schema_version": PAYLOADS[type_].VERSION,
        "idempotency_key": key or uuid.uuid4().hex,
        "member_id": member_id,
        "payload": payload,
    }
    if occurred_at is not None:
        message["occurred_at"] = occurred_at.isoformat()
    return message


class Client:
    def __init__(self, redis_url: str, partitions: int) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.partitions = partitions
        self.broker = RedisBroker(redis_url, logger=None)  # type: ignore[arg-type]

    async def __aenter__(self) -> Client:
        await self.broker.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.broker.stop()
        await self.redis.aclose()

    def inbox(self, member_id: str) -> str:
        return partition_for(member_id, self.partitions).inbox

    async def publish(self, message: dict[str, Any]) -> str:
        """XADD one inbound message (a dict as built by :func:`inbound`) to its inbox."""
        entry = await self.redis.xadd(
            self.inbox(message["member_id"]), {"data": json.dumps(message)}
        )
        return text(entry)

    async def publish_many(self, messages: Iterable[dict[str, Any]]) -> int:
        count = 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for message in messages:
                pipe.xadd(self.inbox(message["member_id"]), {"data": json.dumps(message)})
                count += 1
            await pipe.execute()
        return count

    async def pop(self, key: str, timeout: float) -> Any:
        """``BLPOP key`` for up to ``timeout`` seconds, in waits shorter than redis-py's own
        socket timeout (5 s by default), which would otherwise end a longer one with an error."""
        deadline = time.monotonic() + timeout
        while True:
            wait = min(POP_WAIT_S, max(deadline - time.monotonic(), 0.01))
            reply: Any = await self.redis.blpop([key], timeout=wait)
            if reply is not None or time.monotonic() >= deadline:
                return reply

    async def receipt(self, message: dict[str, Any], timeout: float = 5.0) -> Receipt:
        """Wait for ingest's receipt of a published message (one ``BLPOP``)."""
        member, key = message["member_id"], message["idempotency_key"]
        receipt = partition_for(member, self.partitions).receipt(member, key)
        reply = await self.pop(receipt, timeout)
        if reply is None:
            raise TimeoutError(f"no receipt on {receipt} within {timeout}s")
        return Receipt.model_validate_json(reply[1])

    async def publish_and_wait(self, message: dict[str, Any], timeout: float = 5.0) -> Receipt:
        """Publish one message and return its receipt."""
        await self.publish(message)
        return await self.receipt(message, timeout)

    async def resolve(self, member_id: str, prompt: str, timeout: float = 5.0) -> ResolveResponse:
        request = ResolveRequest(member_id=member_id, prompt=prompt)
        reply = await self.broker.request(request, list=RESOLVE_RPC, timeout=timeout)
        return ResolveResponse.model_validate_json(reply.body)

    async def resolve_plain(
        self, member_id: str, prompt: str, timeout: float = 5.0
    ) -> ResolveResponse:
        """The same call as :meth:`resolve` over the plain-JSON protocol (RPUSH, then BLPOP)."""
        reply_to = f"pz:reply:{uuid.uuid4().hex}"
        request = ResolveRequest(member_id=member_id, prompt=prompt, reply_to=reply_to)
        await self.redis.rpush(RESOLVE_RPC, request.model_dump_json())
        reply = await self.pop(reply_to, timeout)
        if reply is None:
            raise TimeoutError(f"no reply on {reply_to} within {timeout}s")
        return ResolveResponse.model_validate_json(reply[1])

    async def grid(
        self,
        member_id: str,
        profile_id: str | None = None,
        strategy: str = "active",
        timeout: float = 5.0,
    ) -> GridReply:
        """Ask selection-ingest for the next grid to show (it records GridServed itself)."""
        request = GridRequest(member_id=member_id, profile_id=profile_id, strategy=strategy)  # type: ignore[arg-type]
        reply = await self.broker.request(request, list=GRID_RPC, timeout=timeout)
        return GridReply.model_validate_json(reply.body)

    async def profiles(
        self, member_id: str, include_deleted: bool = False, timeout: float = 5.0
    ) -> Listing:
        request = ListRequest(member_id=member_id, include_deleted=include_deleted)
        reply = await self.broker.request(request, list=PROFILES_RPC, timeout=timeout)
        return Listing.model_validate_json(reply.body)
