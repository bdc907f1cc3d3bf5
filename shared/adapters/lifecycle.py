"""What every service does beside its work: say it is alive, and stop its loops cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.keys import PREFIX

HEARTBEAT_S = 2.0
STOP_RETRY_S = 0.5
T = TypeVar("T")
log = logging.getLogger("personalize")


def alive_key(service: str, replica: str) -> str:
    return f"{PREFIX}:alive:{service}:{replica}"


async def heartbeat(client: aioredis.Redis, service: str, replica: str) -> None:
    """Keep ``pz:alive:<service>:<replica>`` set while the service runs (health checks read it)."""
    while True:
        with contextlib.suppress(Exception):
            await client.set(alive_key(service, replica), "1", ex=int(HEARTBEAT_S * 4))
        await asyncio.sleep(HEARTBEAT_S)


def stopping(error: BaseException) -> None:
    """Raise ``CancelledError`` if this task is being cancelled: redis-py can turn a
    cancellation that lands in a blocking read into a connection error, and a loop that
    retries connection errors would then never stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError() from error


async def persistently(call: Callable[[], Awaitable[T]], service: str) -> T:
    """Run ``call`` until the server answers: a service may start before the server, or
    while it restarts, and must wait for it rather than exit."""
    delay = 0.1
    while True:
        try:
            return await call()
        except (RedisError, OSError) as error:
            stopping(error)
            log.warning("%s: server not reachable (%s: %s); waiting", service,
                        type(error).__name__, error)  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def until_reachable(client: aioredis.Redis, service: str) -> None:
    await persistently(client.ping, service)


class Tasks:
    """Background loops of a service, cancelled together at shutdown."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def start(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        task.add_done_callback(_report)
        self.tasks.append(task)

    async def stop(self) -> None:
        """Cancel every loop and wait until each has ended. A loop may swallow a cancellation
        (Python 3.11's ``asyncio.wait_for``, which redis-py wraps around every write, loses
        one that arrives as the write completes) and go on: cancel it again until it ends."""
        pending = set(self.tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=STOP_RETRY_S)
        self.tasks.clear()


def _report(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("loop %s died", task.get_name(), exc_info=task.exception())
