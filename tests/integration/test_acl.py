"""Least privilege: each user may run only its own commands on its own keys (shared/acl.py).

Every denial named in issue 8 is checked here against a real server: the log is
append-only for every service, ingest cannot rewrite ``pz:config`` nor delete images, the
projector cannot switch generations, no service may list keys or flush scripts, and the
publisher may only publish, call the RPCs and read its replies and receipts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.exceptions import NoPermissionError, ResponseError

from shared.acl import ADMIN, PUBLISHER, RULES, acl_rules, url_for, user_name

LOG = "pz:{p0}:log"
Command = tuple[str, ...]

ALLOWED: dict[str, list[Command]] = {
    "selection-ingest": [
        ("XADD", LOG, "*", "event", "{}"),
        ("SET", "pz:{p0}:agg:m", "1"),
        ("HSETNX", "pz:config", "partitions", "4"),
        ("HGET", "pz:config", "partitions"),
        ("XGROUP", "CREATE", "pz:{p0}:inbox", "ingest", "0", "MKSTREAM"),
        ("XTRIM", "pz:{p0}:inbox", "MINID", "0-1"),
        ("RPUSH", "pz:{p0}:receipt:k", "{}"),
        ("SADD", "pz:{p0}:gone:m", "p1"),
        ("HSET", "pz:{p0}:idem:m:k", "n", "1"),
        ("XADD", "pz:{p0}:dead", "MAXLEN", "~", "100", "*", "dead", "{}"),
    ],
    "selection-grid": [
        ("GET", "pz:{p0}:agg:m"),
        ("GET", "pz:{p0}:rm:1:member:m"),
        ("SRANDMEMBER", "pz:catalog:v7", "3"),
        ("XADD", "pz:{p0}:inbox", "*", "data", "{}"),
        ("RPUSH", "pz:reply:abcdefgh", "{}"),
        ("XADD", "pz:rpc:dead", "*", "dead", "{}"),
    ],
    "profile-projector": [
        ("XRANGE", LOG, "-", "+"),
        ("SET", "pz:{p0}:rm:1:member:m", "{}"),
        ("GET", "pz:rm:active"),
        ("XADD", "pz:{p0}:changes", "*", "change", "{}"),
        ("HSET", "pz:{p0}:skipped:profile-projector", "1-0", "why"),
    ],
    "code-minter": [
        ("XADD", LOG, "*", "event", "{}"),
        ("XRANGE", "pz:{p0}:changes", "-", "+"),
        ("XTRIM", "pz:{p0}:changes", "MINID", "0-1"),
        ("SET", "pz:{p0}:mint:pos", "0-1"),
    ],
    "prompt-resolver": [
        ("GET", "pz:{p0}:rm:1:member:m"),
        ("RPUSH", "pz:reply:abcdefgh", "{}"),
        ("LPOP", "pz:rpc:resolve"),
        ("XADD", "pz:rpc:dead", "*", "dead", "{}"),
    ],
    PUBLISHER: [
        ("XADD", "pz:{p0}:inbox", "*", "data", "{}"),
        ("HGET", "pz:config", "partitions"),
        ("RPUSH", "pz:rpc:resolve", "{}"),
        ("RPUSH", "pz:rpc:grid", "{}"),
        ("LPOP", "pz:reply:abcdefgh"),
        ("LRANGE", "pz:{p0}:receipt:k", "0", "-1"),
        ("BLPOP", "pz:{p0}:receipt:k", "0.01"),
    ],
}
LOG_DESTRUCTION: list[Command] = [
    ("DEL", LOG), ("UNLINK", LOG), ("EXPIRE", LOG, "60"), ("PEXPIRE", LOG, "60000"),
    ("XTRIM", LOG, "MAXLEN", "0"), ("XDEL", LOG, "0-1"), ("SET", LOG, "x"),
    ("RENAME", LOG, "pz:{p0}:agg:x"), ("RPUSH", LOG, "x"), ("COPY", "pz:{p0}:agg:m", LOG, "REPLACE"),
    ("RESTORE", LOG, "0", "x", "REPLACE"), ("XGROUP", "DESTROY", LOG, "g"),
]  # fmt: skip
EVERYONE_DENIED: list[Command] = [
    ("SCAN", "0"), ("KEYS", "*"), ("SCRIPT", "FLUSH"), ("FLUSHALL",), ("FLUSHDB",),
    ("CONFIG", "SET", "appendonly", "no"), ("CONFIG", "GET", "*"), ("ACL", "SETUSER", "x", "on"),
    ("ACL", "LIST"), ("DEBUG", "SLEEP", "0"), ("MONITOR",), ("SHUTDOWN",), ("DEL", "pz:rm:active"),
    ("SET", "pz:rm:active", "2"), ("CLIENT", "KILL", "TYPE", "normal"), ("SWAPDB", "0", "1"),
]  # fmt: skip
DENIED: dict[str, list[Command]] = {
    "selection-ingest": [
        *LOG_DESTRUCTION,
        ("HSET", "pz:config", "partitions", "1"), ("DEL", "pz:config"),
        ("DEL", "pz:img:x"), ("UNLINK", "pz:img:x"),
        ("EXPIRE", "pz:img:x", "1"), ("SET", "pz:img:x", "1"),
        ("SET", "pz:{p0}:rm:1:member:m", "{}"), ("XADD", "pz:{p0}:changes", "*", "c", "1"),
        ("DEL", "pz:{p0}:agg:m"), ("XADD", "pz:{p0}:inbox", "*", "data", "{}"),
    ],
    "selection-grid": [
        *LOG_DESTRUCTION, ("XADD", LOG, "*", "event", "{}"), ("SET", "pz:{p0}:agg:m", "1"),
        ("LPOP", "pz:rpc:resolve"), ("RPUSH", "pz:{p0}:agg:m", "x"), ("DEL", "pz:{p0}:inbox"),
        ("XTRIM", "pz:{p0}:inbox", "MAXLEN", "0"), ("HSET", "pz:img:x", "emb", "0"),
    ],
    "profile-projector": [
        *LOG_DESTRUCTION, ("XADD", LOG, "*", "event", "{}"),
        ("XADD", "pz:{p0}:inbox", "*", "data", "{}"), ("HSET", "pz:img:x", "emb", "0"),
        ("DEL", "pz:{p0}:changes"), ("XTRIM", "pz:{p0}:changes", "MAXLEN", "0"),
    ],
    "code-minter": [
        *LOG_DESTRUCTION,
        ("SET", "pz:{p0}:rm:1:code:abc", "{}"), ("SET", "pz:{p0}:agg:m", "1"),
        ("DEL", "pz:{p0}:changes"),
    ],
    "prompt-resolver": [
        *LOG_DESTRUCTION, ("XADD", LOG, "*", "event", "{}"),
        ("SET", "pz:{p0}:rm:1:member:m", "{}"), ("LPOP", "pz:rpc:grid"),
        ("RPUSH", "pz:{p0}:agg:m", "x"), ("EXPIRE", "pz:{p0}:rm:1:member:m", "1"),
    ],
    PUBLISHER: [
        *LOG_DESTRUCTION, ("XADD", LOG, "*", "event", "{}"),
        ("XRANGE", "pz:{p0}:inbox", "-", "+"), ("DEL", "pz:{p0}:inbox"),
        ("XTRIM", "pz:{p0}:inbox", "MAXLEN", "0"), ("GET", "pz:{p0}:rm:1:member:m"),
        ("GET", "pz:{p0}:agg:m"), ("HSET", "pz:config", "partitions", "1"),
        ("LPOP", "pz:rpc:resolve"), ("RPUSH", "pz:reply:abcdefgh", "forged"),
        ("RPUSH", "pz:{p0}:receipt:k", "forged"), ("EVAL", "return 1", "0"),
        ("PUBLISH", "channel", "x"), ("PSUBSCRIBE", "*"),
    ],
}  # fmt: skip


@pytest.fixture
def users(redis_url: str) -> Iterator[dict[str, redis.Redis]]:
    admin = redis.Redis.from_url(redis_url)
    clients = {}
    for user in [*RULES, ADMIN]:
        admin.execute_command("ACL", "SETUSER", user_name(user), *acl_rules(user, "pw-" + user))
        clients[user] = redis.Redis.from_url(url_for(redis_url, user, "pw-" + user))
    admin.xadd(LOG, {"event": "{}"})
    admin.hset("pz:img:x", mapping={"emb": "v"})
    admin.set("pz:{p0}:agg:m", "1")
    yield clients
    for user, client in clients.items():
        client.close()
        admin.execute_command("ACL", "DELUSER", user_name(user))
    admin.close()


def permitted(admin: redis.Redis, user: str, command: Command) -> bool:
    """ACL DRYRUN: whether ``user`` may run ``command``, without running it."""
    reply = admin.execute_command("ACL", "DRYRUN", user_name(user), *command)
    return bool(reply == b"OK")


def refused(client: redis.Redis, command: Command) -> bool:
    try:
        client.execute_command(*command)
    except NoPermissionError:
        return True
    return False


@pytest.mark.parametrize("user", sorted(RULES))
def test_each_user_runs_its_own_commands_on_its_own_keys(
    user: str, users: dict[str, redis.Redis]
) -> None:
    for command in ALLOWED[user]:
        assert permitted(users[ADMIN], user, command), command
        users[user].execute_command(*command)


@pytest.mark.parametrize("user", sorted(RULES))
def test_each_user_is_denied_everything_else_it_could_destroy(
    user: str, users: dict[str, redis.Redis]
) -> None:
    admin = users[ADMIN]
    allowed = [c for c in DENIED[user] + EVERYONE_DENIED if permitted(admin, user, c)]
    assert not allowed, f"{user} may run {allowed}"
    executed = [c for c in DENIED[user] if not refused(users[user], c)]
    assert not executed, f"{user} ran {executed}"
    assert admin.xlen(LOG) >= 1 and admin.ttl(LOG) == -1, "the log survived intact"
    assert admin.hget("pz:img:x", "emb") == b"v" and admin.ttl("pz:img:x") == -1


@pytest.mark.parametrize("user", ["selection-ingest", "code-minter"])
def test_the_log_is_append_only_even_inside_the_appenders_own_scripts(
    user: str, users: dict[str, redis.Redis]
) -> None:
    client = users[user]
    for call in ("'EXPIRE', KEYS[1], 60", "'DEL', KEYS[1]", "'XTRIM', KEYS[1], 'MAXLEN', 0",
                 "'SET', KEYS[1], 'x'"):  # fmt: skip
        with pytest.raises(ResponseError, match="ACL failure in script"):
            client.eval(f"return redis.call({call})", 1, LOG)
    assert client.eval("return redis.call('XADD', KEYS[1], '*', 'event', '{}')", 1, LOG)
    assert users[ADMIN].ttl(LOG) == -1 and users[ADMIN].xlen(LOG) >= 2


def test_the_resolver_cannot_append_to_the_log_even_through_a_script(
    users: dict[str, redis.Redis],
) -> None:
    script = "return redis.call('XADD', KEYS[1], '*', 'event', '{}')"
    with pytest.raises(ResponseError, match=r"ACL failure in script|permission"):
        users["prompt-resolver"].eval(script, 1, LOG)


def test_the_admin_may_do_anything(users: dict[str, redis.Redis]) -> None:
    admin = users[ADMIN]
    assert admin.execute_command("SCAN", "0") is not None
    admin.set("pz:rm:active", 1)
    admin.delete("pz:rm:active")


def test_the_rules_allow_only_what_they_grant_and_no_admin_category() -> None:
    for user in RULES:
        rules = acl_rules(user, "pw")
        assert rules[:2] == ["reset", "on"] and "-@all" in rules
        assert not [r for r in rules if r.startswith("+@") or r == "~*" or r.startswith("%")]
        root = rules[rules.index("-@all") + 1 :]
        root = [r for r in root if not r.startswith("(")]
        assert not [r for r in root if r.startswith("~")], "root may touch no key"
