"""Redis access shared by the services: connections, consumer groups and the atomic scripts.

Each script touches the keys of one partition only (one hash tag), so it runs unchanged on
a Redis Cluster. Positions are log entry IDs; a script applies a batch only if the stored
position is the one the batch was read from, which makes a redelivered batch a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

APPEND_BATCH = """
-- One batch of ingest, all or nothing. KEYS: every key below (one partition, one slot).
-- ARGV[1]: JSON header {members: [[key, expected version]], idempotency: [[key, digest]],
--   ttl, events: n, dead: n, dead_kept, stats: [[field, n]], sets: [[key, 'add'|'remove',
--   member]], log, dead_letters, stats_key, inbox, group, ack: [entry ids]};
-- then the events, the dead letters and the members' states, one argument each.
-- A member state comes in its stored form, '<version> <json>' (MemberState.to_bytes).
local plan = cjson.decode(ARGV[1])
for _, member in ipairs(plan.members) do
  local stored = redis.call('GET', member[1])
  local current = stored and string.match(stored, '^(%d+)') or '0'
  if current ~= member[2] then return {'conflict', member[1]} end
end
for _, pair in ipairs(plan.idempotency) do
  if redis.call('EXISTS', pair[1]) == 1 then return {'duplicate', pair[1]} end
end
local ids = {'ok'}
for i = 1, plan.events do
  ids[#ids + 1] = redis.call('XADD', plan.log, '*', 'event', ARGV[1 + i])
end
for i = 1, plan.dead do
  redis.call('XADD', plan.dead_letters, 'MAXLEN', '~', plan.dead_kept, '*', 'dead',
    ARGV[1 + plan.events + i])
end
for i, member in ipairs(plan.members) do
  redis.call('SET', member[1], ARGV[1 + plan.events + plan.dead + i])
end
for _, pair in ipairs(plan.idempotency) do
  redis.call('SET', pair[1], pair[2], 'EX', plan.ttl)
end
for _, change in ipairs(plan.sets) do
  redis.call(change[2] == 'add' and 'SADD' or 'SREM', change[1], change[3])
end
for _, stat in ipairs(plan.stats) do redis.call('HINCRBY', plan.stats_key, stat[1], stat[2]) end
if #plan.ack > 0 then
  redis.call('XACK', plan.inbox, plan.group, unpack(plan.ack))
  -- Everything below the oldest pending entry is acknowledged: keep the inbox short.
  local pending = redis.call('XPENDING', plan.inbox, plan.group)
  local floor = pending[2]
  if pending[1] == 0 then
    local ms, seq = string.match(plan.ack[#plan.ack], '^(%d+)-(%d+)$')
    floor = ms .. '-' .. (tonumber(seq) + 1)
  end
  redis.call('XTRIM', plan.inbox, 'MINID', '~', floor)
end
return ids
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


def connect(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


async def ensure_group(client: aioredis.Redis, stream: str, group: str) -> None:
    """Create a consumer group at the stream's start (FastStream's own would start at ``$``);
    one that exists already is fine, any other refusal (NOPERM) is not."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as error:
        if not str(error).startswith("BUSYGROUP"):
            raise


def text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def texts(values: Sequence[bytes | str]) -> list[str]:
    return [text(v) for v in values]
