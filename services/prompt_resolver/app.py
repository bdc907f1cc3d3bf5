"""prompt-resolver: RPC on the lists ``pz:rpc:resolve`` and ``pz:rpc:profiles``.

Run: ``faststream run services.prompt_resolver.app:app``. Two ways to call it (README,
"Resolving prompts"): FastStream's ``broker.request(ResolveRequest(...), list=...)``, or from
any language, ``RPUSH pz:rpc:resolve '{"member_id": ..., "prompt": ..., "reply_to": KEY}'``
then ``BLPOP KEY``: the reply is pushed to the list the request names, which must be a
``pz:reply:<token>`` key (shared/domain/rpc.py); a request that cannot be answered is
dead-lettered in ``pz:rpc:dead``.
"""

from __future__ import annotations

from typing import Any

from faststream import Context, FastStream
from faststream.redis import ListSub
from faststream.redis.message import RedisMessage

from shared.adapters.readmodels import RedisReadModels
from shared.adapters.service import service
from shared.domain.listing import Listing
from shared.domain.resolution import ResolveResponse
from shared.keys import PROFILES_RPC, RESOLVE_RPC
from shared.settings import Settings

from .resolver import Resolver

SERVICE = "prompt-resolver"


def build(settings: Settings) -> FastStream:
    svc = service(SERVICE, "Resolves --p in prompts into conditioning.", settings)
    resolver = Resolver(RedisReadModels(svc.client, settings), settings)
    replies = svc.replies()

    @svc.broker.subscriber(
        list=ListSub(RESOLVE_RPC),
        title=RESOLVE_RPC,
        description="Resolve a prompt: send a ResolveRequest, get a ResolveResponse back.",
    )
    async def on_resolve(body: Any, message: RedisMessage = Context("message")) -> ResolveResponse:
        return await replies.answer(body, message, await resolver.handle(body))

    @svc.broker.subscriber(
        list=ListSub(PROFILES_RPC),
        title=PROFILES_RPC,
        description="List a member's profiles and codes: send a ListRequest, get a Listing.",
    )
    async def on_list(
        body: Any, message: RedisMessage = Context("message")
    ) -> Listing | ResolveResponse:
        return await replies.answer(body, message, await resolver.list_profiles(body))

    return svc.app


app = build(Settings.from_env())
