"""The grid RPC contract: ask for the next grid to show a member (``pz:rpc:grid``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class GridRequest(BaseModel):
    """RPC request to ``pz:rpc:grid``."""

    schema_version: int = 1
    member_id: str = Field(min_length=1, max_length=64)
    profile_id: str | None = Field(default=None, description="the Global Profile if omitted")
    size: int = Field(default=9, ge=2, le=30)
    picks: int = Field(default=3, ge=1, le=10, description="how many the member will pick")
    strategy: Literal["active", "random"] = "active"
    reply_to: str | None = Field(default=None, max_length=200)


class GridReply(BaseModel):
    schema_version: int = 1
    ok: bool
    grid_id: str | None = None
    profile_id: str | None = None
    image_ids: list[str] = []
    error: str | None = None
