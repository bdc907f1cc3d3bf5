"""Least privilege: each service's ACL user reaches only its own keys and no admin command."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.exceptions import NoPermissionError

from shared.acl import RULES, acl_rules, url_for, user_name

ALLOWED = {
    "selection-ingest": [
        ("XADD", "pz:{p0}:log", "*", "event", "{}"),
        ("SET", "pz:{p0}:agg:m", "1"),
    ],
    "profile-projector": [
        ("XRANGE", "pz:{p0}:log", "-", "+"),
        ("SET", "pz:{p0}:rm:1:member:m", "{}"),
    ],
    "code-minter": [
        ("XADD", "pz:{p0}:log", "*", "event", "{}"),
        ("XRANGE", "pz:{p0}:changes", "-", "+"),
    ],
    "prompt-resolver": [("GET", "pz:{p0}:rm:1:member:m"), ("RPUSH", "pz:reply:abc", "{}")],
}
FORBIDDEN = {
    "selection-ingest": [("SET", "pz:{p0}:rm:1:member:m", "{}"), ("XADD", "pz:{p0}:changes", "*", "c", "1")],
    "profile-projector": [("XADD", "pz:{p0}:log", "*", "event", "{}"), ("XADD", "pz:{p0}:inbox", "*", "data", "{}")],
    "code-minter": [("SET", "pz:{p0}:rm:1:code:abc", "{}"), ("SET", "pz:{p0}:agg:m", "1")],
    "prompt-resolver": [("XADD", "pz:{p0}:log", "*", "event", "{}"), ("SET", "pz:{p0}:rm:1:member:m", "{}"),
                        ("SET", "pz:rm:active", "2")],
}  # fmt: skip
ADMIN = [("FLUSHALL",), ("CONFIG", "SET", "appendonly", "no"), ("ACL", "SETUSER", "x", "on")]


@pytest.fixture
def users(redis_url: str) -> Iterator[dict[str, redis.Redis]]:
    admin = redis.Redis.from_url(redis_url)
    clients = {}
    for service in RULES:
        admin.execute_command(
            "ACL", "SETUSER", user_name(service), *acl_rules(service, "pw-" + service)
        )
        clients[service] = redis.Redis.from_url(url_for(redis_url, service, "pw-" + service))
    yield clients
    for service, client in clients.items():
        client.close()
        admin.execute_command("ACL", "DELUSER", user_name(service))
    admin.close()


@pytest.mark.parametrize("service", sorted(RULES))
def test_each_service_reaches_only_its_own_keys(
    service: str, users: dict[str, redis.Redis]
) -> None:
    client = users[service]
    for command in ALLOWED[service]:
        client.execute_command(*command)
    for command in FORBIDDEN[service] + ADMIN:
        with pytest.raises(NoPermissionError):
            client.execute_command(*command)


def test_the_resolver_cannot_append_to_the_log_even_through_a_script(
    users: dict[str, redis.Redis],
) -> None:
    script = "return redis.call('XADD', KEYS[1], '*', 'event', '{}')"
    with pytest.raises(NoPermissionError):
        users["prompt-resolver"].eval(script, 1, "pz:{p0}:log")
