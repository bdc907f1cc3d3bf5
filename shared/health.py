"""Health check of one service: is its heartbeat key ``pz:alive:<service>:<replica>`` set?

Usage: ``python -m shared.health <service> [--replica NAME]`` (server from ``REDIS_URL``,
else the running system's ``data/run.json``). Exits 0 when the key of that replica exists
(one EXISTS, which each service's own user may run: compose health checks call it so), or,
without ``--replica``, when any replica's does (a SCAN: the admin user only); else 1 with a
one-line reason.
"""

from __future__ import annotations

import argparse
import re
import sys

import redis

from shared.acl import redacted
from shared.adapters.lifecycle import alive_key
from shared.settings import Settings

TIMEOUT_S = 2.0


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def check(url: str, service: str, replica: str | None = None, timeout: float = TIMEOUT_S) -> str:
    """The alive key found; ``LookupError`` if there is none, ``redis.RedisError`` if down."""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        if replica is not None:
            key = alive_key(service, replica)
            if client.exists(key):
                return key
            raise LookupError(f"{service} replica {replica} is not alive (no key {key})")
        pattern = alive_key(_glob_escape(service), "*")
        for found in client.scan_iter(match=pattern, count=1000):
            return found.decode() if isinstance(found, bytes) else str(found)
        raise LookupError(f"{service} is not alive (no key matches {pattern})")
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.health", description=__doc__)
    parser.add_argument("service", help="service name, e.g. prompt-resolver")
    parser.add_argument("--replica", help="replica name (PZ_REPLICA); default: any replica")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="socket timeout (s)")
    args = parser.parse_args(argv)
    url = Settings.from_env().redis_url
    try:
        key = check(url, args.service, args.replica, args.timeout)
    except LookupError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    except (redis.RedisError, OSError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        print(f"unhealthy: {args.service}: cannot reach {redacted(url)}: {reason}", file=sys.stderr)
        return 1
    print(f"healthy: {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
