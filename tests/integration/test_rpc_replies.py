"""Plain-JSON RPC replies go only to ``pz:reply:<token>`` lists; a request that names any
other key (issue 8, finding 1) changes nothing and leaves a dead letter with the reason.

These run the services in-process as the default user (no ACL users at all), where only the
services' own validation stands between a request and every key of the server.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.client import Client
from shared.deadletter import DeadLetter
from shared.domain.rpc import RPC_DEAD_LETTERS, RpcRequest
from shared.keys import GRID_RPC, PROFILES_RPC, RESOLVE_RPC, partition_for
from shared.settings import Settings
from tests.helpers import catalog, eventually, register

LOG = partition_for("artist", 2).log  # where the catalog's registrations are appended
RPCS = [GRID_RPC, RESOLVE_RPC, PROFILES_RPC]


async def rpc_dead_letters(client: aioredis.Redis) -> list[DeadLetter]:
    entries: Any = await client.xrange(RPC_DEAD_LETTERS)
    return [DeadLetter.model_validate_json(fields[b"dead"]) for _, fields in entries]


def request(member: str, reply_to: object, **extra: object) -> str:
    return json.dumps({"member_id": member, "prompt": "a cat --p", "reply_to": reply_to, **extra})


async def a_log_with_entries(system: Client, settings: Settings) -> int:
    await register(system, catalog(12, settings.embed_dim))
    return int(await eventually(lambda: system.redis.xlen(LOG), lambda n: n == 12))


@pytest.mark.parametrize("rpc", RPCS)
async def test_a_reply_to_naming_the_event_log_neither_expires_nor_touches_it(
    system: Client, settings: Settings, rpc: str
) -> None:
    length = await a_log_with_entries(system, settings)
    await system.redis.rpush(rpc, request("alice", LOG))
    letters = await eventually(lambda: rpc_dead_letters(system.redis), lambda found: found)
    [letter] = letters
    assert (letter.code, letter.field, letter.source) == ("INVALID_REPLY_TO", "reply_to", rpc)
    assert "pz:reply:<token>" in letter.reason and LOG in letter.reason
    assert json.loads(letter.original or "")["reply_to"] == LOG
    assert await system.redis.ttl(LOG) == -1, "no TTL on the log"
    assert await system.redis.type(LOG) == b"stream" and await system.redis.xlen(LOG) == length


@pytest.mark.parametrize(
    "reply_to", ["reply:42", "pz:reply:short", "pz:reply:../../x", "pz:{p0}:agg:alice", 42, ""]
)
async def test_a_reply_to_outside_the_reply_key_space_is_dead_lettered(
    system: Client, reply_to: object
) -> None:
    await system.redis.rpush(RESOLVE_RPC, request("alice", reply_to))
    [letter] = await eventually(lambda: rpc_dead_letters(system.redis), lambda found: found)
    assert letter.code == "INVALID_REPLY_TO" and letter.service == "prompt-resolver"
    if isinstance(reply_to, str) and reply_to:
        assert not await system.redis.exists(reply_to), "nothing was written there"


async def test_the_readme_example_is_answered_on_its_reply_list(system: Client) -> None:
    await system.redis.rpush(RESOLVE_RPC, request("alice", "pz:reply:7f3a9c2e41b8"))
    reply: Any = await system.redis.blpop(["pz:reply:7f3a9c2e41b8"], timeout=5)
    assert reply is not None and json.loads(reply[1])["error"]["code"] == "PROFILE_LOCKED"
    assert await rpc_dead_letters(system.redis) == []


async def test_a_valid_reply_to_gets_its_error_reply_and_its_ttl(system: Client) -> None:
    await system.redis.rpush(PROFILES_RPC, json.dumps({"reply_to": "pz:reply:abcdefgh12"}))
    reply: Any = await system.redis.blpop(["pz:reply:abcdefgh12"], timeout=5)
    assert json.loads(reply[1])["error"]["code"] == "INVALID_REQUEST"
    await system.redis.rpush(RESOLVE_RPC, request("bob", "pz:reply:abcdefgh13"))
    await eventually(lambda: system.redis.exists("pz:reply:abcdefgh13"), lambda n: n == 1)
    assert 0 < await system.redis.ttl("pz:reply:abcdefgh13") <= 60


async def test_a_reply_list_that_is_not_a_list_is_left_alone(system: Client) -> None:
    await system.redis.set("pz:reply:notalist1", "mine")
    await system.redis.rpush(RESOLVE_RPC, request("alice", "pz:reply:notalist1"))
    [letter] = await eventually(lambda: rpc_dead_letters(system.redis), lambda found: found)
    assert letter.code == "REPLY_FAILED" and "WRONGTYPE" in letter.reason
    assert await system.redis.get("pz:reply:notalist1") == b"mine"
    assert await system.redis.ttl("pz:reply:notalist1") == -1, "EXPIRE never ran"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\xff not json", "MALFORMED"),
        (b"[1, 2]", "MALFORMED"),
        (b'{"member_id": "a"}', "NO_REPLY_TO"),
    ],
)
async def test_a_request_nobody_can_be_answered_for_is_dead_lettered(
    system: Client, raw: bytes, code: str
) -> None:
    await system.redis.rpush(GRID_RPC, raw)
    [letter] = await eventually(lambda: rpc_dead_letters(system.redis), lambda found: found)
    assert letter.code == code and letter.service == "selection-grid"
    assert letter.original_bytes() == raw


async def test_rpc_dead_letters_are_capped(settings: Settings, system: Client) -> None:
    assert settings.dead_letters_kept >= 100
    await system.redis.rpush(RESOLVE_RPC, *[request("a", "x") for _ in range(3)])
    await eventually(lambda: system.redis.xlen(RPC_DEAD_LETTERS), lambda n: n == 3)
    info: Any = await system.redis.xinfo_stream(RPC_DEAD_LETTERS)
    assert info["length"] == 3


def test_the_request_model_checks_reply_to_itself() -> None:
    assert RpcRequest(member_id="a", reply_to="pz:reply:" + "x" * 8).reply_to
    for bad in ("pz:{p0}:log", "reply:42", "pz:reply:" + "x" * 7, "pz:reply:" + "x" * 101):
        with pytest.raises(ValueError, match="reply_to"):
            RpcRequest(member_id="a", reply_to=bad)


async def test_ops_see_rpc_dead_letters_and_are_told_why_they_cannot_be_redriven(
    settings: Settings, system: Client
) -> None:
    from tools.redrive import letters, redrive

    await system.redis.rpush(RESOLVE_RPC, request("alice", "pz:{p0}:log"))
    await eventually(lambda: rpc_dead_letters(system.redis), lambda found: found)
    [(stream, _, letter)] = await letters(system.redis, settings)
    assert stream == "pz:rpc:dead" and letter.code == "INVALID_REPLY_TO"
    done, left = await redrive(system.redis, settings)
    assert done == 0 and "its caller stopped waiting" in left[0]
