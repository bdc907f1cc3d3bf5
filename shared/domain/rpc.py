"""What every RPC request carries, where a plain-JSON caller may be answered, and how a
malformed request is described.

Plain-JSON callers name a reply list in ``reply_to``. Reply lists live only in their own key
space, ``pz:reply:<token>`` with a token of 8 to 100 characters of ``A-Z a-z 0-9 _ -``
(:data:`REPLY_TO_PATTERN`): a service pushes to nothing else, so a request can never make it
write (or expire) a key of the system. Use an unguessable token (a UUID, 22+ random
characters): anyone allowed to pop replies could pop a guessed one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, ValidationError

REPLY_PREFIX = "pz:reply:"
REPLY_TO_PATTERN = r"^pz:reply:[A-Za-z0-9_-]{8,100}$"
RPC_DEAD_LETTERS = "pz:rpc:dead"
_REPLY_TO = re.compile(REPLY_TO_PATTERN)


class RpcRequest(BaseModel):
    """Base of the RPC requests: whose request, and (for plain-JSON callers) where to reply."""

    schema_version: int = 1
    member_id: str = Field(min_length=1, max_length=64)
    reply_to: str | None = Field(
        default=None,
        pattern=REPLY_TO_PATTERN,
        description="plain-JSON callers: the list to push the reply to, pz:reply:<8-100 of "
        "A-Z a-z 0-9 _ ->",
    )


@dataclass(frozen=True)
class Unanswerable(Exception):
    """A plain-JSON request that cannot be answered: a dead letter's code, reason and field."""

    code: str
    reason: str
    field: str

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


def reply_address(body: Any) -> str:
    """The reply list a plain-JSON request names, checked before anything is written;
    :class:`Unanswerable` says why there is none."""
    if not isinstance(body, dict):
        shown = repr(body)[:80]
        raise Unanswerable("MALFORMED", f"the request is not a JSON object: {shown}", "request")
    reply_to = body.get("reply_to")
    if reply_to is None:
        raise Unanswerable(
            "NO_REPLY_TO",
            "the request names no reply_to list and did not come through FastStream's request",
            "reply_to",
        )
    if not isinstance(reply_to, str) or not _REPLY_TO.fullmatch(reply_to):
        raise Unanswerable(
            "INVALID_REPLY_TO",
            f"reply_to must be {REPLY_PREFIX}<token> (token: 8-100 of A-Z a-z 0-9 _ -), "
            f"got {reply_to!r:.120}",
            "reply_to",
        )
    return reply_to


def invalid(error: ValidationError) -> tuple[str, str]:
    """The first problem of a malformed request: (where, 'where: what')."""
    first = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "request"
    return where, f"{where}: {first['msg']}"
