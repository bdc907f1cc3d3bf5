"""Dead letters: list them, and redrive them after a fix.

    python -m services.redrive list [--code CODE]
    python -m services.redrive redrive [--code CODE] [--id ENTRY_ID ...]

Redriving puts a letter's original message back where it came from: an inbox message is
published to its inbox again (same idempotency key, so it is appended at most once), a
profile change back to the change stream. A log entry the projector could not fold is
already in the log: after the fix, ``make replay`` rebuilds the read models with it.
A redriven letter is removed from the dead-letter stream in the same step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import redis.asyncio as aioredis

from shared.adapters.store import connect, text
from shared.deadletter import DeadLetter
from shared.keys import all_partitions
from shared.settings import Settings

REDRIVE = """
-- KEYS: dead letters, source stream; ARGV: dead-letter id, field, original
redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
return redis.call('XDEL', KEYS[1], ARGV[1])
"""
FIELDS = {"selection-ingest": "data", "code-minter": "change"}


async def letters(client: aioredis.Redis, settings: Settings) -> list[tuple[str, str, DeadLetter]]:
    found = []
    for partition in all_partitions(settings.partitions):
        entries: Any = await client.xrange(partition.dead_letters)
        for entry_id, fields in entries:
            letter = DeadLetter.model_validate(json.loads(fields[b"dead"]))
            found.append((partition.dead_letters, text(entry_id), letter))
    return found


async def redrive(
    client: aioredis.Redis, settings: Settings, code: str | None = None, ids: set[str] | None = None
) -> tuple[int, list[str]]:
    """Redrive the matching letters; returns how many, and why others were left."""
    script = client.register_script(REDRIVE)
    done, left = 0, []
    for stream, entry_id, letter in await letters(client, settings):
        if (code and letter.code != code) or (ids and entry_id not in ids):
            continue
        field = FIELDS.get(letter.service)
        if field is None:
            left.append(f"{entry_id}: a log entry ({letter.reason}); fix, then `make replay`")
            continue
        await script(keys=[stream, letter.source], args=[entry_id, field, letter.original_bytes()])
        done += 1
    return done, left


async def main_async(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    client = connect(settings.redis_url)
    try:
        if args.command == "list":
            rows = [
                row
                for row in await letters(client, settings)
                if not args.code or row[2].code == args.code
            ]
            print(f"{'dead letter':22s} {'service':18s} {'code':16s} {'tries':>5s}  reason")
            for _, entry_id, letter in rows:
                print(
                    f"{entry_id:22s} {letter.service:18s} {letter.code:16s} {letter.deliveries:5d}  {letter.reason}"
                )
            print(f"{len(rows)} dead letters")
            return 0
        done, left = await redrive(client, settings, args.code, set(args.id or []) or None)
        print(f"redriven: {done}")
        for line in left:
            print(f"left: {line}")
        return 0
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="List and redrive dead letters.")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every dead letter with its reason")
    listing.add_argument("--code", help="only letters with this code")
    again = commands.add_parser("redrive", help="put letters back where they came from")
    again.add_argument("--code", help="only letters with this code")
    again.add_argument("--id", action="append", help="only these dead-letter entry IDs")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
