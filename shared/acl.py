"""Least privilege: each service connects as its own ACL user, allowed only its keys.

``%R~`` grants reading, ``%W~`` writing, ``~`` both; scripts run with the caller's rights,
so an append script run by the resolver fails just like a plain XADD would. A key a script
declares needs both rights, so a stream a service only appends to through its script (the
log, for ingest and the minter) is granted with ``~``. The rules are
applied by ``make run`` (ACL SETUSER on the embedded server) and by docker-compose.yml
(``--user`` arguments), both generated from :data:`RULES`.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

P = "pz:{p*}"
COMMANDS = ["+@all", "-@admin", "-@dangerous", "+info", "+client|setname", "+client|id"]
SHARED = ["~pz:alive:{service}:*", f"~{P}:lease:{{service}}", "%R~pz:config", "%R~pz:rm:active"]

RULES: dict[str, list[str]] = {
    "selection-ingest": [
        f"~{P}:inbox", f"~{P}:log", f"~{P}:dead", f"~{P}:stats", f"~{P}:agg:*",
        f"~{P}:idem:*", f"~{P}:receipt:*", f"~{P}:gone:*", "~pz:img:*", "%W~pz:config", "~pz:catalog:*",
        f"%R~{P}:rm:*", "~pz:rpc:grid", "%W~pz:reply:*",
    ],
    "profile-projector": [
        f"%R~{P}:log", f"~{P}:rm:*", f"~{P}:changes", "%R~pz:img:*", f"~{P}:dead",
        "~pz:rm:active", f"~{P}:skipped:{{service}}",
    ],
    "code-minter": [f"~{P}:changes", f"~{P}:log", f"~{P}:mint:*", f"~{P}:dead"],
    "prompt-resolver": [f"%R~{P}:rm:*", "~pz:rpc:*", "%W~pz:reply:*"],
}  # fmt: skip
CHANNELS = {"prompt-resolver": "&*", "selection-ingest": "&*"}  # FastStream RPC replies


def user_name(service: str) -> str:
    return service.replace("-", "_")


def acl_rules(service: str, password: str) -> list[str]:
    """The ACL SETUSER arguments for one service."""
    keys = [rule.replace("{service}", service) for rule in SHARED + RULES[service]]
    channels = CHANNELS.get(service, "resetchannels")
    return ["reset", "on", f">{password}", channels, *COMMANDS, *keys]


def acl_line(service: str, password: str) -> str:
    """The same rules as one ``user`` line (redis.conf, an ACL file, or ``--user``)."""
    return " ".join([user_name(service), *acl_rules(service, password)])


def url_for(url: str, service: str, password: str) -> str:
    """``url`` with this service's user and password in it."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user_name(service))}:{quote(password)}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
