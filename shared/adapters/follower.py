"""Follow a partitioned stream, one owner per partition at a time.

Each replica of a service runs one :class:`Follower` per stream it follows. For every
partition it tries to hold a lease; the holder reads the partition's stream through its
:class:`Source` and hands each batch to the service's handler. There are two sources:

- :class:`AtPosition` reads the entries after a stored position (XREAD). Its handler commits
  the new state *and* the new position in one atomic step, and only if the position is still
  the one the batch was read from: a crash loses nothing (the next owner resumes at the
  stored position) and doubles nothing (the position check).
- :class:`InGroup` reads a consumer group, oldest unfinished entry first; the follower
  acknowledges what the handler finished.

Both fail the same way (:class:`Attempts`). An error of the server is retried without
counting against the entries. Any other error counts against the place the batch was read
from; while it fails, batches shrink to the one entry there and each retry waits longer;
after ``max_attempts`` that entry is dead-lettered (``KEEPS_FAILING``) and the source moves
past it. For a log the decision is also recorded (``Partition.skipped``) so a replay repeats it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.deadletter import DeadLetter
from shared.domain.events import utcnow
from shared.keys import Partition

from .lifecycle import exit_if_refused
from .store import ensure_group, text

Entry = tuple[str, dict[bytes, bytes]]
Apply = Callable[[Partition, str, list[Entry]], Awaitable[bool]]
Process = Callable[[Partition, list[Entry], int], Awaitable[object]]
log = logging.getLogger("personalize.follower")
PREFIX_KEPT = 4096

RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

DEAD_LETTER_AT_POSITION = """
-- Give up on one entry: dead-letter it and move the position past it, in one step.
-- KEYS: position, dead letters[, skipped entries (a hash: entry id -> why), for a log]
-- ARGV: expected position, new position (the entry given up on), dead letter,
--   dead letters kept (~), skip record
local current = redis.call('GET', KEYS[1]) or '0-0'
if current ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'dead', ARGV[3])
if #KEYS == 3 then redis.call('HSET', KEYS[3], ARGV[2], ARGV[5]) end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

ADOPT_PENDING = """
-- KEYS[1]: stream; ARGV: group, consumer, start, count. XAUTOCLAIM of IDs only (JUSTID):
-- taking over a crashed consumer's entries copies none of their payloads.
return redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'COUNT', ARGV[4], 'JUSTID')
"""

READ_BOUNDED = """
-- XREADGROUP without ever handing an oversized entry to the client: an entry whose fields
-- and values add up to more than ARGV[5] bytes comes back as the fields __oversize__
-- '<entry bytes> <bytes of its largest value> <sha1 of that value>', __field__ <that
-- field's name> and __prefix__ <its first ARGV[6] bytes>. KEYS[1]: stream; ARGV: group, consumer, start
-- ('0' for this consumer's pending entries, '>' for new ones), count, max bytes, prefix.
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[4],
  'STREAMS', KEYS[1], ARGV[3])
if not reply then return {} end
local entries = reply[1][2]
local limit, keep = tonumber(ARGV[5]), tonumber(ARGV[6])
for _, entry in ipairs(entries) do
  local fields = entry[2]
  if fields then
    local size, largest = 0, 2
    for i = 2, #fields, 2 do
      size = size + #fields[i - 1] + #fields[i]
      if #fields[i] > #fields[largest] then largest = i end
    end
    if size > limit then
      local value = fields[largest]
      entry[2] = {'__oversize__', size .. ' ' .. #value .. ' ' .. redis.sha1hex(value),
        '__field__', fields[largest - 1], '__prefix__', string.sub(value, 1, keep)}
    end
  end
end
return entries
"""

DEAD_LETTER_AND_ACK = """
-- KEYS: dead letters, stream; ARGV: group, entry id, dead letter, dead letters kept (~)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'dead', ARGV[3])
return redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
"""


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


def backoff(failures: int) -> float:
    """Seconds to wait before the next attempt: doubling with each failure, at most 2."""
    return min(0.05 * 2**failures, 2.0)


def _pairs(flat: list[bytes] | None) -> dict[bytes, bytes]:
    values = flat or []
    return dict(zip(values[::2], values[1::2], strict=True))


@dataclass
class FollowerConfig:
    role: str
    replica: str
    batch_size: int = 256
    lease_ms: int = 6000
    block_ms: int = 500
    max_attempts: int = 5
    dead_letters_kept: int = 100_000


@dataclass(frozen=True)
class Batch:
    """Entries read together, and where: the position they follow, or the first one's ID."""

    at: str
    entries: list[Entry]


@dataclass
class Attempts:
    """How the batch read at one place of a partition has failed, and what comes next."""

    max_attempts: int
    at: str | None = None
    failures: int = 0

    def batch_size(self, full: int) -> int:
        """One entry at a time while a batch fails, so that the entry that fails is alone."""
        return full if self.at is None else 1

    def attempt(self, batch: Batch) -> int:
        """The number of the attempt about to be made at the batch's place."""
        return self.failures + 1 if batch.at == self.at else 1

    def failed(self, batch: Batch) -> int:
        """Count a failure of ``batch``; how many there have been at its place."""
        self.at, self.failures = batch.at, self.attempt(batch)
        return self.failures

    def exhausted(self, batch: Batch) -> bool:
        """Whether to give up on the batch's entry: it failed alone ``max_attempts`` times."""
        return len(batch.entries) == 1 and self.failures >= self.max_attempts

    def clear(self) -> None:
        """The batch succeeded, or its entry was given up on."""
        self.at, self.failures = None, 0


class Cursor(Protocol):
    """One partition's stream as a :class:`Source` reads it."""

    stream: str

    async def start(self) -> None:
        """Prepare to read, on taking the partition's lease."""

    async def read(self, count: int) -> Batch | None:
        """Up to ``count`` entries, or none after waiting ``block_ms``."""

    async def handle(self, batch: Batch, attempt: int) -> None:
        """Hand ``batch`` to the service and move past it."""

    async def give_up(self, batch: Batch, letter: DeadLetter) -> None:
        """Dead-letter the batch's one entry and move past it."""


class Source(Protocol):
    """Which stream of each partition a service follows, how, and with which handler."""

    def cursor(
        self, client: aioredis.Redis, partition: Partition, config: FollowerConfig
    ) -> Cursor: ...


class Follower:
    """Serve every partition whose lease this replica holds; try the others now and then."""

    def __init__(
        self,
        client: aioredis.Redis,
        config: FollowerConfig,
        partitions: list[Partition],
        source: Source,
    ) -> None:
        self.client = client
        self.config = config
        self.partitions = partitions
        self.cursors = {p.index: source.cursor(client, p, config) for p in partitions}
        self.attempts = {p.index: Attempts(config.max_attempts) for p in partitions}
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

    async def _follow(self, partition: Partition, lease: str) -> None:
        cursor, attempts = self.cursors[partition.index], self.attempts[partition.index]
        await cursor.start()
        while await self.holding(lease):
            batch = await cursor.read(attempts.batch_size(self.config.batch_size))
            if batch:
                await self._handle(partition, batch)

    async def _handle(self, partition: Partition, batch: Batch) -> None:
        cursor, attempts = self.cursors[partition.index], self.attempts[partition.index]
        try:
            await cursor.handle(batch, attempts.attempt(batch))
        except (RedisError, OSError):
            raise  # the server, not the entry: retried without counting against the entry
        except Exception as error:
            failures = attempts.failed(batch)
            log.warning("%s %s: batch at %s failed (%d): %s: %s", self.config.role,
                        cursor.stream, batch.at, failures, type(error).__name__, error)  # fmt: skip
            if attempts.exhausted(batch):
                await self.give_up(partition, batch, error, failures)
                attempts.clear()
            await asyncio.sleep(backoff(failures))
        else:
            attempts.clear()

    async def give_up(
        self, partition: Partition, batch: Batch, error: Exception, attempts: int
    ) -> None:
        """Dead-letter the batch's entry as ``KEEPS_FAILING`` and move past it."""
        cursor = self.cursors[partition.index]
        entry_id, fields = batch.entries[0]
        letter = DeadLetter.of(
            next(iter(fields.values()), b""),
            service=self.config.role,
            source=cursor.stream,
            entry_id=entry_id,
            code="KEEPS_FAILING",
            reason=f"{type(error).__name__}: {error}"[:1000],
            deliveries=attempts,
            at=utcnow(),
        )
        await cursor.give_up(batch, letter)


@dataclass(frozen=True)
class AtPosition:
    """Follow ``stream`` from the position stored at ``position``; ``apply`` commits a
    batch's effects with the position of its last entry, if the stored one is still the
    position the batch was read from."""

    stream: Callable[[Partition], str]
    position: Callable[[Partition], str]
    apply: Apply

    def cursor(
        self, client: aioredis.Redis, partition: Partition, config: FollowerConfig
    ) -> PositionCursor:
        return PositionCursor(self, client, partition, config)


@dataclass
class PositionCursor:
    source: AtPosition
    client: aioredis.Redis
    partition: Partition
    config: FollowerConfig

    def __post_init__(self) -> None:
        self.stream = self.source.stream(self.partition)
        self.dead_letter = self.client.register_script(DEAD_LETTER_AT_POSITION)

    def position(self) -> str:
        """The key of the stored position, asked anew each time: a projector that moves to
        another generation of read models follows that generation's position."""
        return self.source.position(self.partition)

    async def start(self) -> None:
        """Nothing to prepare: reading resumes at the stored position."""

    async def read(self, count: int) -> Batch | None:
        position = text(await self.client.get(self.position())) or "0-0"
        reply: Any = await self.client.xread(
            {self.stream: position}, count=count, block=self.config.block_ms
        )
        return Batch(position, [(text(i), fields) for i, fields in reply[0][1]]) if reply else None

    async def handle(self, batch: Batch, attempt: int) -> None:
        await self.source.apply(self.partition, batch.at, batch.entries)

    async def give_up(self, batch: Batch, letter: DeadLetter) -> None:
        """Dead-letter the entry and move the position past it in one step; for a log, also
        record the skip, which a replay repeats."""
        keys = [self.position(), self.partition.dead_letters]
        if self.stream == self.partition.log:
            keys.append(self.partition.skipped(self.config.role))
        record = json.dumps(
            {"code": letter.code, "reason": letter.reason, "at": letter.at.isoformat()}
        )
        kept = self.config.dead_letters_kept
        await self.dead_letter(
            keys=keys, args=[batch.at, letter.entry_id, letter.to_bytes(), kept, record]
        )


@dataclass(frozen=True)
class InGroup:
    """Consume ``stream`` in the consumer group ``group``, oldest unfinished entry first.

    Whoever holds a partition's lease is its only reader, so a member's messages are handled
    in the order they were published. On taking a lease the replica adopts every entry the
    group still has pending (a crashed replica's unfinished work) and finishes those before
    reading new ones. ``process`` is given the number of the attempt; what it finished is
    acknowledged (ideally it acknowledges in the same atomic step as its effects).

    Entries are read by a script that never hands over an entry above ``max_entry_bytes``
    (publishers write these streams, so their size is not ours to trust): only its size,
    hash and prefix (:func:`bounded`). An idle stream is waited on with one blocking read of
    a single entry.
    """

    stream: Callable[[Partition], str]
    group: str
    process: Process
    max_entry_bytes: int = 256 * 1024

    def cursor(
        self, client: aioredis.Redis, partition: Partition, config: FollowerConfig
    ) -> GroupCursor:
        return GroupCursor(self, client, partition, config)


@dataclass
class GroupCursor:
    source: InGroup
    client: aioredis.Redis
    partition: Partition
    config: FollowerConfig
    pending: bool = True  # whether to read this consumer's pending entries first

    def __post_init__(self) -> None:
        self.stream = self.source.stream(self.partition)
        self.group = self.source.group
        self.read_script = self.client.register_script(READ_BOUNDED)
        self.adopt_script = self.client.register_script(ADOPT_PENDING)
        self.dead_letter = self.client.register_script(DEAD_LETTER_AND_ACK)

    async def start(self) -> None:
        """Take over every entry the group has pending (IDs only: no payload is copied)."""
        await ensure_group(self.client, self.stream, self.group)
        self.pending, start = True, "0-0"
        while True:
            args: list[Any] = [self.group, self.config.replica, start, self.config.batch_size]
            reply: Any = await self.adopt_script(keys=[self.stream], args=args)
            start = text(reply[0])
            if start == "0-0":
                return

    async def read(self, count: int) -> Batch | None:
        entries = await self._read("0", count) if self.pending else []
        self.pending = bool(entries)
        entries = entries or await self._read(">", count) or await self._wait()
        return Batch(entries[0][0], entries) if entries else None

    async def handle(self, batch: Batch, attempt: int) -> None:
        try:
            await self.source.process(self.partition, batch.entries, attempt)
        except Exception:
            self.pending = True  # the batch stays pending: it is read again from there
            raise
        await self.client.xack(self.stream, self.group, *(i for i, _ in batch.entries))

    async def give_up(self, batch: Batch, letter: DeadLetter) -> None:
        """Dead-letter the entry and acknowledge it, in one step."""
        await self.dead_letter(
            keys=[self.partition.dead_letters, self.stream],
            args=[self.group, letter.entry_id, letter.to_bytes(), self.config.dead_letters_kept],
        )

    async def _wait(self) -> list[Entry]:
        """Block until one new entry arrives (a script cannot block). This one read returns
        an entry whole; it is bounded like the script's reads, and by the server's own
        ``proto-max-bulk-len`` where that is set (``make run``, compose)."""
        reply: Any = await self.client.xreadgroup(
            self.group, self.config.replica, {self.stream: ">"}, count=1, block=self.config.block_ms
        )
        if not reply:
            return []
        limit = self.source.max_entry_bytes
        return [(text(i), bounded(fields or {}, limit)) for i, fields in reply[0][1]]

    async def _read(self, start: str, count: int) -> list[Entry]:
        """Entries of this consumer (``0``: its pending ones, ``>``: new ones); an oversized
        entry comes back as its size, hash and prefix only (:data:`READ_BOUNDED`)."""
        args: list[Any] = [
            self.group,
            self.config.replica,
            start,
            count,
            self.source.max_entry_bytes,
            PREFIX_KEPT,
        ]
        reply: Any = await self.read_script(keys=[self.stream], args=args)
        entries = [(text(entry_id), _pairs(fields)) for entry_id, fields in reply]
        gone = [entry_id for entry_id, fields in entries if not fields]
        if gone:
            await self.client.xack(self.stream, self.group, *gone)
        return [(entry_id, fields) for entry_id, fields in entries if fields]
