"""Least privilege: each service connects as its own ACL user, allowed only the commands it
runs on the keys it runs them on; outside publishers get a user of their own.

A user's rules are a list of :class:`Grant` (some commands on some keys). Each grant
becomes one ACL selector ``(~keys +commands)``, so a command is allowed only on the keys
it was granted for: ingest may ``XADD`` to the log but not ``SET``, ``DEL``, ``EXPIRE``
or ``XTRIM`` it, though it may ``SET`` member states. The root rule set of every user
allows only key-less commands (connection, script loading, pub/sub). Scripts run with the
caller's rights, call by call, but EVALSHA itself must be allowed by one rule set together
with every key the script declares: that is one more selector, ``+evalsha`` on all the
user's keys, which grants nothing by itself. No service may SCAN, KEYS, FLUSH*, CONFIG,
ACL, DEBUG, MONITOR or SCRIPT FLUSH: nothing outside a grant is allowed (``-@all``).

One limit no ACL can express: ACL rules cannot look at arguments, so whoever may ``XADD``
to a stream may also pass ``MAXLEN``/``MINID`` and trim it. The appenders of the log
(ingest, code-minter) and publishers (inboxes) keep that power; ``XINFO STREAM`` shows it
(``max-deleted-entry-id`` stays ``0-0`` on a log that was never trimmed).

Applied by ``make run`` (ACL SETUSER, then ACL SAVE, on the embedded server) and by
docker-compose.yml (``--user`` arguments), both generated from :data:`RULES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

P = "pz:{p*}"
ADMIN = "admin"
PUBLISHER = "publisher"


@dataclass(frozen=True)
class Grant:
    """Some commands, allowed on some key patterns (and only there)."""

    keys: tuple[str, ...]
    commands: tuple[str, ...]

    def selector(self, service: str) -> str:
        keys = " ".join(f"~{key.replace('{service}', service)}" for key in self.keys)
        return f"({keys} {' '.join(f'+{c}' for c in self.commands)})"


def grant(keys: str | tuple[str, ...], *commands: str) -> Grant:
    return Grant((keys,) if isinstance(keys, str) else keys, commands)


# Key-less commands every service needs: PING (health checks of redis-py), CLIENT SETINFO
# (sent by redis-py on connect), SCRIPT LOAD/EXISTS (redis-py's register_script, pipelines).
CONNECTION = ("ping", "select", "client|setname", "client|setinfo", "client|id")
SCRIPTS = ("script|load", "script|exists")
STREAM_READ = ("xrange", "xrevrange", "xread", "xlen", "xinfo|stream")
LOG_APPEND = ("xadd", *STREAM_READ)  # append-only: no DEL, EXPIRE, XTRIM, XDEL, SET, ...
GROUP_READ = ("xreadgroup", "xack", "xautoclaim", "xclaim", "xpending", "xgroup|create",
              "xgroup|createconsumer", "xinfo|groups", "xinfo|consumers")  # fmt: skip

ALIVE = grant("pz:alive:{service}:*", "set", "get", "exists")
LEASE = grant(f"{P}:lease:{{service}}", "set", "get", "pexpire")
ACTIVE = grant("pz:rm:active", "get")
READ_MODELS = grant(f"{P}:rm:*", "get", "mget", "exists")
DEAD = grant(f"{P}:dead", "xadd", "xlen")
SKIPPED = grant(f"{P}:skipped:*", "hset", "hget", "hgetall", "hexists")
REPLIES = grant("pz:reply:*", "rpush", "expire")
RPC_DEAD = grant("pz:rpc:dead", "xadd")

RULES: dict[str, list[Grant]] = {
    "selection-ingest": [
        ALIVE, LEASE,
        grant(f"{P}:inbox", *GROUP_READ, "xtrim", *STREAM_READ),
        grant(f"{P}:log", *LOG_APPEND),
        DEAD,
        grant(f"{P}:stats", "hincrby", "hget", "hgetall"),
        grant(f"{P}:agg:*", "get", "mget", "set", "exists"),
        grant(f"{P}:idem:*", "get", "mget", "set", "exists", "hset", "hget", "hmget", "hgetall",
              "hexists", "expire", "pexpire"),
        grant(f"{P}:receipt:*", "rpush", "expire", "exists"),
        grant((f"{P}:gone:*", f"{P}:liked:*", f"{P}:unpublished"), "sadd", "srem",
              "smismember", "sismember", "smembers", "srandmember", "scard"),
        grant("pz:img:*", "exists", "hget", "hmget", "hgetall", "hset", "hsetnx", "hdel"),
        grant("pz:catalog:*", "sadd", "sismember", "smismember", "scard", "srandmember"),
        grant("pz:config", "hsetnx", "hget", "hgetall"),
    ],
    "selection-grid": [
        ALIVE, ACTIVE, READ_MODELS, REPLIES, RPC_DEAD,
        grant("pz:rpc:grid", "blpop", "lpop", "llen"),
        grant(f"{P}:agg:*", "get", "mget"),
        grant("pz:catalog:*", "srandmember", "scard"),
        grant("pz:img:*", "hget", "hmget"),
        grant(f"{P}:inbox", "xadd"),
    ],
    "profile-projector": [
        ALIVE, LEASE, ACTIVE, DEAD, SKIPPED,
        grant(f"{P}:log", *STREAM_READ),
        grant(f"{P}:rm:*", "get", "mget", "set", "exists", "del", "unlink"),  # disposable
        grant(f"{P}:changes", "xadd", "xlen"),
        grant("pz:img:*", "hget", "hmget", "exists"),
    ],
    "code-minter": [
        ALIVE, LEASE, DEAD, SKIPPED,
        grant(f"{P}:changes", *STREAM_READ, "xtrim"),
        grant(f"{P}:log", *LOG_APPEND),
        grant(f"{P}:mint:*", "get", "mget", "set", "exists"),
    ],
    "prompt-resolver": [
        ALIVE, ACTIVE, READ_MODELS, REPLIES, RPC_DEAD,
        grant(("pz:rpc:resolve", "pz:rpc:profiles"), "blpop", "lpop", "llen"),
    ],
    PUBLISHER: [
        grant(f"{P}:inbox", "xadd"),
        grant("pz:config", "hget", "hgetall"),
        grant(("pz:rpc:resolve", "pz:rpc:profiles", "pz:rpc:grid"), "rpush"),
        grant("pz:reply:*", "blpop", "lpop"),
        grant(f"{P}:receipt:*", "blpop", "lpop", "lrange"),
    ],
}  # fmt: skip
# Pub/sub, for FastStream's request/reply: responders PUBLISH the reply to the caller's
# channel (a random name per request, hence every channel); callers SUBSCRIBE to it.
PUBSUB = {
    "selection-grid": ("publish",),
    "prompt-resolver": ("publish",),
    PUBLISHER: ("subscribe", "unsubscribe"),
}
USERS = [*RULES, ADMIN]


def user_name(service: str) -> str:
    return service.replace("-", "_")


def acl_rules(service: str, password: str) -> list[str]:
    """The ACL SETUSER arguments for one user (a service, the publisher, or the admin)."""
    if service == ADMIN:
        return ["reset", "on", f">{password}", "~*", "&*", "+@all"]
    pubsub = PUBSUB.get(service, ())
    grants = RULES[service]
    root = [*CONNECTION, *(SCRIPTS if service != PUBLISHER else ()), *pubsub]
    selectors = [g.selector(service) for g in grants]
    if service != PUBLISHER:  # the publisher runs no script
        every_key = tuple(dict.fromkeys(key for g in grants for key in g.keys))
        selectors.append(Grant(every_key, ("evalsha", "eval")).selector(service))
    channels = "&*" if pubsub else "resetchannels"
    return ["reset", "on", f">{password}", channels, "-@all", *(f"+{c}" for c in root),
            *selectors]  # fmt: skip


def acl_line(service: str, password: str) -> str:
    """The same rules as one ``user`` line (redis.conf, an ACL file, or ``--user``)."""
    return " ".join([user_name(service), *acl_rules(service, password)])


def url_for(url: str, service: str, password: str) -> str:
    """``url`` with this user and password in it."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user_name(service), safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def password_variable(user: str) -> str:
    """The environment variable docker-compose.yml takes this user's password from."""
    return f"PZ_PASSWORD_{user_name(user).upper()}"


def compose_users() -> list[str]:
    """The ``redis-server`` arguments of docker-compose.yml: no default user, then every user
    (passwords from :func:`password_variable`, with a development default). Print them with
    ``python -m shared.acl``."""
    args = ["--user", "default", "reset"]
    for user in USERS:
        password = f"${{{password_variable(user)}:-{user}-dev-only}}"
        args += ["--user", user_name(user), *acl_rules(user, password)]
    return args


def redacted(url: str) -> str:
    """``url`` with its password (if any) hidden, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


if __name__ == "__main__":
    for argument in compose_users():
        print(f"      - {argument}" if argument.startswith("--") else f"      - '{argument}'")
