"""What every service does beside its work: say it is alive, wait out a server outage, stop
its loops cleanly, and exit when no retry can help.

A server that is down or restarting is waited for. A refused identity is not: a wrong
password, a user that no longer exists, or a command the user may not run is fixed only
by whoever configures the service, so retrying would only look alive while doing nothing.
The process logs one line saying so and exits with :data:`EXIT_FATAL`, and its supervisor
(``make run`` or compose) restarts it. A background loop that dies ends the process too.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError

from shared.keys import PREFIX

HEARTBEAT_S = 2.0
STOP_RETRY_S = 0.5
EXIT_FATAL = 78  # EX_CONFIG: the configuration (credentials, ACL rules) must change
REFUSALS = ("WRONGPASS", "NOAUTH", "NOPERM")
T = TypeVar("T")
log = logging.getLogger("personalize")
terminate: Callable[[int], NoReturn] = os._exit  # tests running services in-process replace it


def alive_key(service: str, replica: str) -> str:
    return f"{PREFIX}:alive:{service}:{replica}"


def refusal(error: BaseException) -> str | None:
    """Why the server refuses this identity (authentication or permission), or ``None``
    when the error is one a retry may get past (server down, restarting, loading)."""
    message = " ".join(str(error).split())
    if isinstance(error, AuthenticationError | NoPermissionError):
        return message or type(error).__name__
    if isinstance(error, RedisError) and (
        message.startswith(REFUSALS) or message.startswith("ACL failure in script")
    ):
        return message
    return None


def die(service: str, reason: str) -> NoReturn:
    """Log one line and end the process at once. Nothing needs releasing: leases expire and
    the next holder adopts unacknowledged entries, as after a crash."""
    log.critical("%s: exiting (code %d): %s", service, EXIT_FATAL, reason)
    for handler in logging.getLogger().handlers + log.handlers:
        handler.flush()
    terminate(EXIT_FATAL)


def exit_if_refused(error: BaseException, service: str) -> None:
    """For a retry loop that caught ``error``: end the process if it is a refused identity,
    stop the loop if it is being cancelled, and return (to retry) for anything else."""
    stopping(error)
    reason = refusal(error)
    if reason is not None:
        die(service, f"the server refused this service's user: {reason}")


async def heartbeat(client: aioredis.Redis, service: str, replica: str) -> None:
    """Keep ``pz:alive:<service>:<replica>`` set while the service runs (health checks read
    it). It is also what notices, within seconds, that the server stopped accepting this
    service's user (e.g. it restarted without its ACL users), for every kind of service."""
    while True:
        try:
            await client.set(alive_key(service, replica), "1", ex=int(HEARTBEAT_S * 4))
        except (RedisError, OSError) as error:
            exit_if_refused(error, service)
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
    while it restarts, and must wait for it rather than exit (unless it refuses us)."""
    delay = 0.1
    while True:
        try:
            return await call()
        except (RedisError, OSError) as error:
            exit_if_refused(error, service)
            log.warning("%s: server not reachable (%s: %s); waiting", service,
                        type(error).__name__, error)  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def until_reachable(client: aioredis.Redis, service: str) -> None:
    await persistently(client.ping, service)


class Tasks:
    """Background loops of a service, cancelled together at shutdown. A loop that dies (it
    raised) ends the process: nothing would do its work while the service looked alive."""

    def __init__(self, service: str = "service") -> None:
        self.service = service
        self.tasks: list[asyncio.Task[Any]] = []
        self.closing = False

    def start(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        task.add_done_callback(self._report)
        self.tasks.append(task)

    async def stop(self) -> None:
        """Cancel every loop and wait until each has ended. A loop may swallow a cancellation
        (Python 3.11's ``asyncio.wait_for``, which redis-py wraps around every write, loses
        one that arrives as the write completes) and go on: cancel it again until it ends."""
        self.closing = True
        pending = set(self.tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=STOP_RETRY_S)
        self.tasks.clear()

    def _report(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None or self.closing:
            return
        log.error("%s: loop %s died", self.service, task.get_name(), exc_info=error)
        reason = refusal(error) or f"{type(error).__name__}: {error}"
        die(self.service, f"loop {task.get_name()} died: {reason}")
