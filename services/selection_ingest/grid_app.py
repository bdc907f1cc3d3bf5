"""selection-grid: the grid RPC on ``pz:rpc:grid``, in a process of its own.

Run: ``faststream run services.selection_ingest.grid_app:app``. Choosing a grid is CPU work
(information gain over a few hundred candidates) that must not slow ingestion down, so it
runs beside selection-ingest rather than in its event loop, with its own ACL user (it reads
member states, read models and the catalog, and publishes ``GridServed`` to inboxes like
any publisher). Each process answers one request at a time (FastStream's list subscriber
takes the next request when the last is answered); run more replicas for more grids.
"""

from __future__ import annotations

from typing import Any

from faststream import Context, FastStream
from faststream.redis import ListSub
from faststream.redis.message import RedisMessage

from shared.adapters.readmodels import RedisReadModels
from shared.adapters.service import service
from shared.domain.grids import GridReply
from shared.keys import GRID_RPC
from shared.settings import Settings

from .grids import GridService

SERVICE = "selection-grid"


def build(settings: Settings) -> FastStream:
    svc = service(SERVICE, "Chooses the next grid to show a member, and records it.", settings)
    grids = GridService(svc.client, RedisReadModels(svc.client, settings), settings)
    replies = svc.replies()

    @svc.broker.subscriber(
        list=ListSub(GRID_RPC),
        title=GRID_RPC,
        description="The next grid for a profile: send a GridRequest, get a GridReply.",
    )
    async def on_grid(body: Any, message: RedisMessage = Context("message")) -> GridReply:
        return await replies.answer(body, message, await grids.handle(body))

    return svc.app


app = build(Settings.from_env())
