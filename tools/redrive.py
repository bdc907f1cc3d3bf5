"""Dead letters: list them, and redrive them after a fix.

    python -m tools.redrive list [--code CODE]
    python -m tools.redrive redrive [--code CODE] [--id ENTRY_ID ...]
    python -m tools.redrive export FILE      # every dead letter, one JSON object a line

Redriving puts a letter's original message back where it came from: an inbox message is
published to its inbox again (same idempotency key, so it is appended at most once), a
profile change back to the change stream. A log entry the projector could not fold is
already in the log, and the live projector recorded that it skipped it
(``pz:{pN}:skipped:profile-projector``), so that every replay skips it too.
A redriven letter is removed from the dead-letter stream in the same step.

Each partition keeps about ``PZ_DEAD_LETTERS_KEPT`` letters (older ones are trimmed as new
ones arrive): ``export`` them to keep them all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from shared.adapters.store import connect, text
from shared.deadletter import DeadLetter
from shared.domain.rpc import RPC_DEAD_LETTERS
from shared.keys import all_partitions
from shared.settings import Settings
from tools.replay import CHUNK, Progress

REDRIVE = """
-- KEYS: dead letters, source stream; ARGV: dead-letter id, field, original
redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
return redis.call('XDEL', KEYS[1], ARGV[1])
"""
FIELDS = {"selection-ingest": "data", "code-minter": "change"}


async def letters(client: aioredis.Redis, settings: Settings) -> list[tuple[str, str, DeadLetter]]:
    """Every dead letter: each partition's, then the RPC requests no one could answer."""
    found = []
    streams = [p.dead_letters for p in all_partitions(settings.partitions)] + [RPC_DEAD_LETTERS]
    for stream in streams:
        entries: Any = await client.xrange(stream)
        for entry_id, fields in entries:
            letter = DeadLetter.model_validate(json.loads(fields[b"dead"]))
            found.append((stream, text(entry_id), letter))
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
        why_not = _not_redrivable(stream, letter)
        if why_not:
            left.append(f"{entry_id}: {why_not}")
            continue
        field = FIELDS[letter.service]
        await script(keys=[stream, letter.source], args=[entry_id, field, letter.original_bytes()])
        done += 1
    return done, left


def _not_redrivable(stream: str, letter: DeadLetter) -> str:
    """Why a letter cannot go back where it came from ('' if it can)."""
    if stream == RPC_DEAD_LETTERS:
        return f"an RPC request on {letter.source} ({letter.code}): its caller stopped waiting"
    if letter.truncated:
        return (f"only the first {len(letter.original_bytes())} of its {letter.original_size} "
                "bytes were kept (TOO_LARGE): the publisher must send it again, smaller")  # fmt: skip
    if letter.service not in FIELDS:
        return (f"log entry {letter.entry_id} ({letter.reason}); the live projector skipped it "
                "and replays skip it too")  # fmt: skip
    return ""


async def export(
    client: aioredis.Redis, settings: Settings, path: Path, quiet: bool = False
) -> int:
    """Write every partition's dead letters to ``path``, one JSON object a line (partition,
    dead-letter entry ID, the letter); returns how many."""
    partitions = all_partitions(settings.partitions)
    total = sum([await client.xlen(p.dead_letters) for p in partitions])
    progress = Progress(f"export to {path}", total, quiet, unit="dead letters")
    with path.open("w") as out:
        for partition in partitions:
            start = "-"
            while entries := await _page(client, partition.dead_letters, start):
                for entry_id, fields in entries:
                    line = {"partition": partition.index, "id": text(entry_id),
                            "dead": json.loads(fields[b"dead"])}  # fmt: skip
                    out.write(json.dumps(line, sort_keys=True) + "\n")
                start = f"({text(entries[-1][0])}"
                progress.add(len(entries))
    progress.close()
    return progress.done


async def _page(client: aioredis.Redis, stream: str, start: str) -> Any:
    return await client.xrange(stream, min=start, count=CHUNK)


async def command(argv: Sequence[str], settings: Settings) -> int:
    """Run one command line (see the module docstring); returns the exit status."""
    args = parser().parse_args(argv)
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
        if args.command == "export":
            count = await export(client, settings, Path(args.file))
            print(f"exported {count:,} dead letters to {args.file}")
            return 0
        done, left = await redrive(client, settings, args.code, set(args.id or []) or None)
        print(f"redriven: {done}")
        for line in left:
            print(f"left: {line}")
        return 0
    finally:
        await client.aclose()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="List, export and redrive dead letters.")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every dead letter with its reason")
    listing.add_argument("--code", help="only letters with this code")
    again = commands.add_parser("redrive", help="put letters back where they came from")
    again.add_argument("--code", help="only letters with this code")
    again.add_argument("--id", action="append", help="only these dead-letter entry IDs")
    keep = commands.add_parser("export", help="write every dead letter to a file (JSON lines)")
    keep.add_argument("file")
    return parser


def main() -> None:
    sys.exit(asyncio.run(command(sys.argv[1:], Settings.from_env())))


if __name__ == "__main__":
    main()
