"""The grid RPC contract: ask for the next grid to show a member (``pz:rpc:grid``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .rpc import RpcRequest


class GridRequest(RpcRequest):
    """RPC request to ``pz:rpc:grid``."""

    profile_id: str | None = Field(default=None, description="the Global Profile if omitted")
    size: int = Field(default=9, ge=2, le=30)
    picks: int = Field(default=3, ge=1, le=10, description="how many the member will pick")
    strategy: Literal["active", "random"] = "active"


class GridReply(BaseModel):
    schema_version: int = 1
    ok: bool
    grid_id: str | None = None
    profile_id: str | None = None
    image_ids: list[str] = []
    error: str | None = None
