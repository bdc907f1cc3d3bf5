"""RPC over Redis lists, two ways: FastStream's ``broker.request`` (reply over pub/sub) and a
plain-JSON protocol any language can speak (the request names a ``reply_to`` list).

A plain-JSON reply goes only to a valid ``pz:reply:<token>`` list (checked before anything
is written), pushed and given its expiry by one script: if the push fails (the key is not a
list) the script stops before the expiry, so a request can never put a TTL on anything else.
A request that cannot be answered leaves a dead letter with the reason in ``pz:rpc:dead``.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import redis.asyncio as aioredis
from faststream.redis.message import RedisMessage
from pydantic import BaseModel
from redis.exceptions import RedisError

from shared.deadletter import DeadLetter
from shared.domain.events import utcnow
from shared.domain.rpc import RPC_DEAD_LETTERS, Unanswerable, reply_address

from .lifecycle import exit_if_refused

REPLY_TTL_S = 60
Reply = TypeVar("Reply", bound=BaseModel)
log = logging.getLogger("personalize.rpc")

PUSH_REPLY = """
-- KEYS[1]: a pz:reply:<token> list; ARGV: reply, ttl. A failed RPUSH raises, ending the
-- script before EXPIRE, so only a list that took the reply is ever given a TTL.
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


class Replies:
    """Answers one service's RPC requests, and dead-letters the ones it cannot answer."""

    def __init__(self, client: aioredis.Redis, service: str, dead_letters_kept: int) -> None:
        self.client = client
        self.service = service
        self.kept = dead_letters_kept
        self.push = client.register_script(PUSH_REPLY)

    async def answer(self, body: Any, message: RedisMessage, reply: Reply) -> Reply:
        """Return ``reply`` for FastStream (which sends it to a ``broker.request`` caller),
        and push it to the ``reply_to`` list of a plain-JSON request."""
        if message.reply_to:
            return reply
        try:
            reply_to = reply_address(body)
            await self._push(reply_to, reply)
        except Unanswerable as why:
            await self._dead_letter(message, why)
        return reply

    async def _push(self, reply_to: str, reply: BaseModel) -> None:
        try:
            await self.push(keys=[reply_to], args=[reply.model_dump_json(), REPLY_TTL_S])
        except RedisError as error:
            exit_if_refused(error, self.service)
            reason = " ".join(str(error).split())
            raise Unanswerable(
                "REPLY_FAILED", f"pushing to {reply_to} failed: {reason}", "reply_to"
            ) from None

    async def _dead_letter(self, message: RedisMessage, why: Unanswerable) -> None:
        log.warning("%s: request on %s not answered: %s", self.service, _source(message), why)
        letter = DeadLetter.of(
            _raw(message),
            service=self.service,
            source=_source(message),
            entry_id=message.correlation_id or message.message_id or "",
            code=why.code,
            reason=why.reason,
            field=why.field,
            at=utcnow(),
        )
        try:
            await self.client.xadd(
                RPC_DEAD_LETTERS, {"dead": letter.to_bytes()}, maxlen=self.kept, approximate=True
            )
        except RedisError as error:
            exit_if_refused(error, self.service)
            log.error("%s: could not dead-letter a request: %r", self.service, error)


def _source(message: RedisMessage) -> str:
    raw = message.raw_message
    channel = raw.get("channel") if isinstance(raw, dict) else None
    if isinstance(channel, bytes):
        return channel.decode(errors="replace")
    return str(channel or "rpc")


def _raw(message: RedisMessage) -> bytes:
    body = message.body
    return body if isinstance(body, bytes) else str(body).encode()
