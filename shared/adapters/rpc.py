"""RPC over Redis lists, two ways: FastStream's ``broker.request`` (reply over pub/sub) and a
plain-JSON protocol any language can speak (the request names a ``reply_to`` list)."""

from __future__ import annotations

from typing import Any, TypeVar

import redis.asyncio as aioredis
from faststream.redis.message import RedisMessage
from pydantic import BaseModel

REPLY_TTL_S = 60
Reply = TypeVar("Reply", bound=BaseModel)


async def answer(client: aioredis.Redis, body: Any, message: RedisMessage, reply: Reply) -> Reply:
    """Return ``reply`` for FastStream, and also push it to the list a plain-JSON request
    names in ``reply_to`` (where FastStream's own reply address is absent)."""
    reply_to = body.get("reply_to") if isinstance(body, dict) else None
    if isinstance(reply_to, str) and reply_to and not message.reply_to:
        async with client.pipeline(transaction=False) as pipe:
            pipe.rpush(reply_to, reply.model_dump_json())
            pipe.expire(reply_to, REPLY_TTL_S)
            await pipe.execute()
    return reply
