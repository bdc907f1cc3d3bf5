"""What every RPC request carries, and how a malformed one is described."""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationError


class RpcRequest(BaseModel):
    """Base of the RPC requests: whose request, and (for plain-JSON callers) where to reply."""

    schema_version: int = 1
    member_id: str = Field(min_length=1, max_length=64)
    reply_to: str | None = Field(
        default=None,
        max_length=200,
        description="plain-JSON callers: the list to push the reply to",
    )


def invalid(error: ValidationError) -> tuple[str, str]:
    """The first problem of a malformed request: (where, 'where: what')."""
    first = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "request"
    return where, f"{where}: {first['msg']}"
