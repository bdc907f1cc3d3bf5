"""Redis access shared by the services: connections, consumer groups and the atomic scripts.

Each script touches the keys of one partition only (one hash tag), so it runs unchanged on
a Redis Cluster. Positions are log entry IDs; a script applies a batch only if the stored
position is the one the batch was read from, which makes a redelivered batch a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

APPEND_BATCH = """
-- KEYS: log, dead letters, stats, member states (m of them), idempotency keys (k of them)
-- A member state is stored as '<version> <json>'.
-- ARGV: ttl, m, k, n events, d dead letters, s stat pairs, then m expected versions,
--       m new versions, m states, k idempotency values, n events, d dead letters,
--       s (field, increment) pairs
local ttl, m, k, n, d, s = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local a = 6
for i = 1, m do
  local stored = redis.call('GET', KEYS[3 + i])
  local current = stored and string.match(stored, '^(%d+)') or '0'
  if current ~= ARGV[a + i] then return {'conflict', KEYS[3 + i]} end
end
for i = 1, k do
  if redis.call('EXISTS', KEYS[3 + m + i]) == 1 then return {'duplicate', KEYS[3 + m + i]} end
end
local ids = {'ok'}
local e = a + 3 * m + k
for i = 1, n do ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'event', ARGV[e + i]) end
for i = 1, d do redis.call('XADD', KEYS[2], '*', 'dead', ARGV[e + n + i]) end
for i = 1, m do
  redis.call('SET', KEYS[3 + i], ARGV[a + m + i] .. ' ' .. ARGV[a + 2 * m + i])
end
for i = 1, k do redis.call('SET', KEYS[3 + m + i], ARGV[a + 3 * m + i], 'EX', ttl) end
for i = 1, s do
  redis.call('HINCRBY', KEYS[3], ARGV[e + n + d + 2 * i - 1], ARGV[e + n + d + 2 * i])
end
return ids
"""

APPLY_AT_POSITION = """
-- KEYS: position, changes stream ('' to emit none), view keys (v of them)
-- ARGV: expected position, new position, c changes, v values, c changes
local current = redis.call('GET', KEYS[1]) or '0-0'
if current ~= ARGV[1] then return 0 end
local v = #KEYS - 2
local c = tonumber(ARGV[3])
for i = 1, v do redis.call('SET', KEYS[2 + i], ARGV[3 + i]) end
for i = 1, c do redis.call('XADD', KEYS[2], '*', 'change', ARGV[3 + v + i]) end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

MINT_AT_POSITION = """
-- KEYS: position, log, changes stream, then per mint: profile state key, code key
-- ARGV: expected position, new position, n, then per mint: code claim, state, event
local current = redis.call('GET', KEYS[1]) or '0-0'
if current ~= ARGV[1] then return {'moved'} end
local n = tonumber(ARGV[3])
for i = 1, n do
  if redis.call('EXISTS', KEYS[3 + 2 * i]) == 1 then return {'taken', KEYS[3 + 2 * i]} end
end
local ids = {'ok'}
for i = 1, n do
  local base = 3 + 3 * (i - 1)
  ids[#ids + 1] = redis.call('XADD', KEYS[2], '*', 'event', ARGV[base + 3])
  redis.call('SET', KEYS[2 + 2 * i], ARGV[base + 2])
  redis.call('SET', KEYS[3 + 2 * i], ARGV[base + 1])
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[2])
return ids
"""

DEAD_LETTER_AT_POSITION = """
-- KEYS: position, dead letters; ARGV: expected position, new position, dead letter
local current = redis.call('GET', KEYS[1]) or '0-0'
if current ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], '*', 'dead', ARGV[3])
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def connect(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


async def ensure_group(client: aioredis.Redis, stream: str, group: str) -> None:
    """Create a consumer group at the stream's start (FastStream's own would start at ``$``)."""
    with contextlib.suppress(ResponseError):
        await client.xgroup_create(stream, group, id="0", mkstream=True)


def text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def texts(values: Sequence[bytes | str]) -> list[str]:
    return [text(v) for v in values]
