"""A connection that counts what the server sends it: how many bytes a call really reads."""

from __future__ import annotations

from typing import Any

from redis.asyncio.connection import Connection


class Counting(Connection):
    """Adds up the bytes of every value received, over all connections of this class
    (``ConnectionPool.from_url(url, connection_class=Counting)``; reset ``received``)."""

    received = 0

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        response = await super().read_response(*args, **kwargs)
        Counting.received += size_of(response)
        return response


def size_of(value: Any) -> int:
    """Bytes of a reply's strings (8 for anything else: a number, a nil)."""
    if isinstance(value, bytes | str):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(size_of(v) for v in value)
    return 8
