"""prompt-resolver: RPC on the lists ``pz:rpc:resolve`` and ``pz:rpc:profiles``.

Run: ``faststream run services.prompt_resolver.app:app``. Two ways to call it (README,
"Resolving prompts"): FastStream's ``broker.request(ResolveRequest(...), list=...)``, or from
any language, ``RPUSH pz:rpc:resolve '{"member_id": ..., "prompt": ..., "reply_to": KEY}'``
then ``BLPOP KEY``: the reply is pushed to the list the request names.
"""

from __future__ import annotations

from typing import Any

from faststream import Context, FastStream
from faststream.redis import ListSub, RedisBroker
from faststream.redis.message import RedisMessage
from faststream.specification import AsyncAPI

from shared.adapters.lifecycle import Tasks, heartbeat, until_reachable
from shared.adapters.rpc import answer
from shared.adapters.store import connect
from shared.domain.listing import Listing
from shared.domain.resolution import ResolveResponse
from shared.keys import PROFILES_RPC, RESOLVE_RPC
from shared.settings import Settings

from .resolver import Resolver

SERVICE = "prompt-resolver"


def build(settings: Settings) -> FastStream:
    broker = RedisBroker(settings.redis_url)
    client = connect(settings.redis_url)
    resolver = Resolver(client, settings)
    tasks = Tasks()

    @broker.subscriber(
        list=ListSub(RESOLVE_RPC),
        title=RESOLVE_RPC,
        description="Resolve a prompt: send a ResolveRequest, get a ResolveResponse back.",
    )
    async def on_resolve(body: Any, message: RedisMessage = Context("message")) -> ResolveResponse:
        return await answer(client, body, message, await resolver.handle(body))

    @broker.subscriber(
        list=ListSub(PROFILES_RPC),
        title=PROFILES_RPC,
        description="List a member's profiles and codes: send a ListRequest, get a Listing.",
    )
    async def on_list(
        body: Any, message: RedisMessage = Context("message")
    ) -> Listing | ResolveResponse:
        return await answer(client, body, message, await resolver.list_profiles(body))

    app = FastStream(
        broker,
        specification=AsyncAPI(
            title=SERVICE, version="1", description="Resolves --p in prompts into conditioning."
        ),
    )

    @app.on_startup
    async def wait_for_server() -> None:
        await until_reachable(client, SERVICE)

    @app.after_startup
    async def start() -> None:
        tasks.start(heartbeat(client, SERVICE, settings.replica), "heartbeat")

    @app.on_shutdown
    async def stop() -> None:
        await tasks.stop()

    return app


app = build(Settings.from_env())
