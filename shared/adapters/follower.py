"""Follow a partitioned stream from a stored position, one owner per partition at a time.

Each replica of a service runs one :class:`PartitionFollower`. For every partition it tries
to hold a lease; the holder reads entries after the stored position with XREAD and hands
them to ``apply``, which must commit the new state *and* the new position in one atomic
step (and only if the position is still the one it read from). A crash loses nothing (the
next owner resumes at the stored position) and doubles nothing (the position check). An
entry that keeps failing is dead-lettered with its reason, and the position moves past it;
for a log, that decision is also recorded (``Partition.skipped``) so a replay repeats it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.deadletter import DeadLetter
from shared.domain.events import utcnow
from shared.keys import Partition

from .lifecycle import exit_if_refused
from .store import (
    ADOPT_PENDING,
    DEAD_LETTER_AND_ACK,
    DEAD_LETTER_AT_POSITION,
    READ_BOUNDED,
    RENEW_LEASE,
    ensure_group,
    text,
)

Entry = tuple[str, dict[bytes, bytes]]
Apply = Callable[[Partition, str, list[Entry]], Awaitable[bool]]
log = logging.getLogger("personalize.follower")
PREFIX_KEPT = 4096


def bounded(fields: dict[bytes, bytes], limit: int) -> dict[bytes, bytes]:
    """``fields``, or, when they add up to more than ``limit`` bytes, what
    :data:`READ_BOUNDED` returns for such an entry: its size, hash and prefix."""
    size = sum(len(name) + len(value) for name, value in fields.items())
    if size <= limit:
        return fields
    name, value = max(fields.items(), key=lambda pair: len(pair[1]))
    digest = hashlib.sha1(value).hexdigest()
    return {
        b"__oversize__": f"{size} {len(value)} {digest}".encode(),
        b"__field__": name,
        b"__prefix__": value[:PREFIX_KEPT],
    }


def _pairs(flat: list[bytes] | None) -> dict[bytes, bytes]:
    values = flat or []
    return dict(zip(values[::2], values[1::2], strict=True))


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
    dead_letters_kept: int = 100_000


class LeasedPartitions(ABC):
    """Serve every partition whose lease this replica holds; try the others now and then."""

    def __init__(
        self, client: aioredis.Redis, config: FollowerConfig, partitions: list[Partition]
    ) -> None:
        self.client = client
        self.config = config
        self.partitions = partitions
        self.renew_script = client.register_script(RENEW_LEASE)

    async def run(self) -> None:
        await asyncio.gather(*(self._serve(p) for p in self.partitions))

    async def _serve(self, partition: Partition) -> None:
        """Hold the lease and follow; survive the server going away (retry until it is back),
        but not a refused identity (wrong password, missing user, denied command): exit."""
        lease = partition.lease(self.config.role)
        while True:
            try:
                acquired = await self.client.set(
                    lease, self.config.replica, nx=True, px=self.config.lease_ms
                )
                if acquired or text(await self.client.get(lease)) == self.config.replica:
                    await self._follow(partition, lease)
            except (RedisError, OSError) as error:
                exit_if_refused(error, self.config.role)
                log.warning("%s %s: %s: %s; retrying", self.config.role, partition.tag,
                            type(error).__name__, error)  # fmt: skip
            await asyncio.sleep(self.config.lease_ms / 3000)

    async def holding(self, lease: str) -> bool:
        """Extend the lease if this replica still holds it."""
        return bool(
            await self.renew_script(keys=[lease], args=[self.config.replica, self.config.lease_ms])
        )

    @abstractmethod
    async def _follow(self, partition: Partition, lease: str) -> None:
        """Work on the partition while :meth:`holding` its lease."""


class PartitionFollower(LeasedPartitions):
    def __init__(
        self,
        client: aioredis.Redis,
        config: FollowerConfig,
        partitions: list[Partition],
        apply: Apply,
    ) -> None:
        super().__init__(client, config, partitions)
        self.apply = apply
        self.dead_letter = client.register_script(DEAD_LETTER_AT_POSITION)
        self.failures: dict[tuple[int, str], int] = {}

    async def _follow(self, partition: Partition, lease: str) -> None:
        stream = self.config.stream(partition)
        while await self.holding(lease):
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
        except (RedisError, OSError):
            raise  # the server, not the entry: retried without counting against the entry
        except Exception as error:
            failures = self.failures.get(key, 0) + 1
            self.failures[key] = failures
            log.warning("%s %s: batch after %s failed (%d): %s: %s", self.config.role,
                        partition.tag, position, failures, type(error).__name__, error)  # fmt: skip
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
        if self.config.stream(partition) == partition.log:
            keys.append(partition.skipped(self.config.role))  # the decision a replay repeats
        record = json.dumps(
            {"code": letter.code, "reason": letter.reason, "at": letter.at.isoformat()}
        )
        kept = self.config.dead_letters_kept
        await self.dead_letter(
            keys=keys, args=[position, entry_id, letter.to_bytes(), kept, record]
        )
        self.failures.pop((partition.index, position), None)


Process = Callable[[Partition, list[Entry], int], Awaitable[object]]


class GroupFollower(LeasedPartitions):
    """Consume each leased partition's stream in a consumer group, oldest unfinished first.

    Whoever holds a partition's lease is its only reader, so a member's messages are handled
    in the order they were published. On taking a lease the replica adopts every entry the
    group still has pending (a crashed replica's unfinished work) and finishes those before
    reading new ones. ``process`` must acknowledge what it handled (ideally in the same atomic
    step as its effects); an entry that keeps failing is dead-lettered and acknowledged.

    Entries are read by a script that never hands over an entry above ``max_entry_bytes``
    (publishers write these streams, so their size is not ours to trust): only its size,
    hash and prefix (:func:`bounded`). An idle stream is waited on with one blocking read of
    a single entry.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        config: FollowerConfig,
        partitions: list[Partition],
        group: str,
        process: Process,
        max_entry_bytes: int = 256 * 1024,
    ) -> None:
        super().__init__(client, config, partitions)
        self.group = group
        self.process = process
        self.dead_letter = client.register_script(DEAD_LETTER_AND_ACK)
        self.read_script = client.register_script(READ_BOUNDED)
        self.adopt_script = client.register_script(ADOPT_PENDING)
        self.max_entry_bytes = max_entry_bytes
        self.failures: dict[str, int] = {}
        self.last_error = "processing kept failing"

    async def _follow(self, partition: Partition, lease: str) -> None:
        stream = self.config.stream(partition)
        await ensure_group(self.client, stream, self.group)
        await self._adopt(stream)
        pending = True
        while await self.holding(lease):
            failing = any(key.startswith(stream) for key in self.failures)
            count = 1 if failing else self.config.batch_size
            entries = await self._read(stream, "0", count) if pending or failing else []
            pending = bool(entries)
            entries = entries or await self._read(stream, ">", count) or await self._wait(stream)
            if entries:
                await self._handle(partition, stream, entries)
                pending = pending or any(k.startswith(stream) for k in self.failures)

    async def _adopt(self, stream: str) -> None:
        """Take over every entry the group has pending (IDs only: no payload is copied)."""
        start = "0-0"
        while True:
            args: list[Any] = [self.group, self.config.replica, start, self.config.batch_size]
            reply: Any = await self.adopt_script(keys=[stream], args=args)
            start = text(reply[0])
            if start == "0-0":
                return

    async def _wait(self, stream: str) -> list[Entry]:
        """Block until one new entry arrives (a script cannot block). This one read returns
        an entry whole; it is bounded like the script's reads, and by the server's own
        ``proto-max-bulk-len`` where that is set (``make run``, compose)."""
        reply: Any = await self.client.xreadgroup(
            self.group, self.config.replica, {stream: ">"}, count=1, block=self.config.block_ms
        )
        if not reply:
            return []
        return [(text(i), bounded(fields or {}, self.max_entry_bytes)) for i, fields in reply[0][1]]

    async def _read(self, stream: str, start: str, count: int) -> list[Entry]:
        """Entries of this consumer (``0``: its pending ones, ``>``: new ones); an oversized
        entry comes back as its size, hash and prefix only (:data:`READ_BOUNDED`)."""
        args: list[Any] = [
            self.group,
            self.config.replica,
            start,
            count,
            self.max_entry_bytes,
            PREFIX_KEPT,
        ]
        reply: Any = await self.read_script(keys=[stream], args=args)
        entries = [(text(entry_id), _pairs(fields)) for entry_id, fields in reply]
        gone = [entry_id for entry_id, fields in entries if not fields]
        if gone:
            await self.client.xack(stream, self.group, *gone)
        return [(entry_id, fields) for entry_id, fields in entries if fields]

    async def _handle(self, partition: Partition, stream: str, entries: list[Entry]) -> None:
        key = f"{stream}/{entries[0][0]}"
        failures = self.failures.get(key, 0)
        if len(entries) == 1 and failures >= self.config.max_attempts:
            await self._give_up(partition, stream, entries[0], failures)
            return
        try:
            await self.process(partition, entries, failures + 1)
            await self.client.xack(stream, self.group, *(entry_id for entry_id, _ in entries))
        except (RedisError, OSError):
            raise  # the server, not the entry: retried without counting against the entry
        except Exception as error:
            self.failures[key] = failures + 1
            log.warning("%s %s: entries from %s failed (%d): %s: %s", self.config.role, stream,
                        entries[0][0], failures + 1, type(error).__name__, error)  # fmt: skip
            self.last_error = f"{type(error).__name__}: {error}"[:1000]
            await asyncio.sleep(min(0.05 * 2 ** (failures + 1), 2.0))
        else:
            self.failures.pop(key, None)

    async def _give_up(
        self, partition: Partition, stream: str, entry: Entry, attempts: int
    ) -> None:
        entry_id, fields = entry
        letter = DeadLetter.of(
            next(iter(fields.values()), b""),
            service=self.config.role,
            source=stream,
            entry_id=entry_id,
            code="KEEPS_FAILING",
            reason=self.last_error,
            deliveries=attempts,
            at=utcnow(),
        )
        await self.dead_letter(
            keys=[partition.dead_letters, stream],
            args=[self.group, entry_id, letter.to_bytes(), self.config.dead_letters_kept],
        )
        self.failures.pop(f"{stream}/{entry_id}", None)
