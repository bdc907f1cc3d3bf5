"""Follow a partitioned stream from a stored position, one owner per partition at a time.

Each replica of a service runs one :class:`PartitionFollower`. For every partition it tries
to hold a lease; the holder reads entries after the stored position with XREAD and hands
them to ``apply``, which must commit the new state *and* the new position in one atomic
step (and only if the position is still the one it read from). A crash loses nothing (the
next owner resumes at the stored position) and doubles nothing (the position check). An
entry that keeps failing is dead-lettered with its reason, and the position moves past it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from shared.deadletter import DeadLetter
from shared.domain.events import utcnow
from shared.keys import Partition

from .store import DEAD_LETTER_AT_POSITION, RENEW_LEASE, text

Entry = tuple[str, dict[bytes, bytes]]
Apply = Callable[[Partition, str, list[Entry]], Awaitable[bool]]
log = logging.getLogger("personalize.follower")


@dataclass
class FollowerConfig:
    role: str
    replica: str
    stream: Callable[[Partition], str]
    position: Callable[[Partition], str]
    batch_size: int = 256
    lease_ms: int = 6000
    block_ms: int = 500
    max_attempts: int = 5


class PartitionFollower:
    def __init__(
        self,
        client: aioredis.Redis,
        config: FollowerConfig,
        partitions: list[Partition],
        apply: Apply,
    ) -> None:
        self.client = client
        self.config = config
        self.partitions = partitions
        self.apply = apply
        self.renew = client.register_script(RENEW_LEASE)
        self.dead_letter = client.register_script(DEAD_LETTER_AT_POSITION)
        self.failures: dict[tuple[int, str], int] = {}

    async def run(self) -> None:
        await asyncio.gather(*(self._serve(p) for p in self.partitions))

    async def _serve(self, partition: Partition) -> None:
        lease = partition.lease(self.config.role)
        while True:
            acquired = await self.client.set(
                lease, self.config.replica, nx=True, px=self.config.lease_ms
            )
            if acquired or text(await self.client.get(lease)) == self.config.replica:
                await self._follow(partition, lease)
            await asyncio.sleep(self.config.lease_ms / 3000)

    async def _follow(self, partition: Partition, lease: str) -> None:
        stream = self.config.stream(partition)
        while await self.renew(keys=[lease], args=[self.config.replica, self.config.lease_ms]):
            position = text(await self.client.get(self.config.position(partition))) or "0-0"
            single = (partition.index, position) in self.failures
            count = 1 if single else self.config.batch_size
            reply: Any = await self.client.xread(
                {stream: position}, count=count, block=self.config.block_ms
            )
            if not reply:
                continue
            entries = [(text(i), fields) for i, fields in reply[0][1]]
            await self._apply(partition, position, entries)

    async def _apply(self, partition: Partition, position: str, entries: list[Entry]) -> None:
        key = (partition.index, position)
        try:
            await self.apply(partition, position, entries)
        except Exception as error:
            failures = self.failures.get(key, 0) + 1
            self.failures[key] = failures
            log.warning("%s %s: batch after %s failed (%d): %r",
                        self.config.role, partition.tag, position, failures, error)  # fmt: skip
            if len(entries) == 1 and failures >= self.config.max_attempts:
                await self._give_up(partition, position, entries[0], error, failures)
            await asyncio.sleep(min(0.05 * 2**failures, 2.0))
        else:
            self.failures.pop(key, None)

    async def _give_up(
        self, partition: Partition, position: str, entry: Entry, error: Exception, attempts: int
    ) -> None:
        entry_id, fields = entry
        original = next(iter(fields.values()), b"")
        letter = DeadLetter.of(
            original,
            service=self.config.role,
            source=self.config.stream(partition),
            entry_id=entry_id,
            code="KEEPS_FAILING",
            reason=f"{type(error).__name__}: {error}"[:1000],
            deliveries=attempts,
            at=utcnow(),
        )
        keys = [self.config.position(partition), partition.dead_letters]
        await self.dead_letter(keys=keys, args=[position, entry_id, letter.to_bytes()])
        self.failures.pop((partition.index, position), None)
