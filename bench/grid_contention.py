"""Does serving grids slow ingestion down? Ingest's drain rate with and without grid clients.

Starts the system (its own embedded server, ACL users on), registers a catalog, then drains
the same kind of inbound workload three times: with no grid requests, while ``--clients``
clients each ask for ``--size``-image active grids in a loop, and quiet again. The drain
rate is inbound entries per second from the first publish until ingest has read and
acknowledged the last one (projection not included). Only the public contract is used, so
the script runs unchanged against an older tree where ingest served the grids itself.

    python -m bench.grid_contention [--clients 3] [--size 30] [--members 150] [--grids 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from bench.pipeline import workload
from shared.adapters.catalog import registered
from shared.adapters.store import text
from shared.client import Client, inbound
from shared.domain.grids import GridReply, GridRequest
from shared.keys import GRID_RPC
from shared.settings import Settings
from tools.supervisor import Stack


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def stream_id(entry_id: str) -> tuple[int, int]:
    millis, sequence = entry_id.split("-")
    return int(millis), int(sequence)


async def consumed(admin: aioredis.Redis, last: dict[str, str]) -> bool:
    """Whether ingest has read and acknowledged every inbox up to ``last``."""
    for inbox, entry_id in last.items():
        groups: Any = await admin.xinfo_groups(inbox)
        pending: Any = await admin.xpending(inbox, "ingest")
        read = text(groups[0]["last-delivered-id"]) if groups else "0-0"
        if stream_id(read) < stream_id(entry_id) or pending["pending"]:
            return False
    return True


async def drain(client: Client, admin: aioredis.Redis, messages: list[dict[str, Any]]) -> float:
    """Inbound entries per second through ingest."""
    last: dict[str, str] = {}
    started = time.perf_counter()
    for chunk in range(0, len(messages), 500):
        batch = messages[chunk : chunk + 500]
        async with client.redis.pipeline(transaction=False) as pipe:
            for message in batch:
                pipe.xadd(client.inbox(message["member_id"]), {"data": json.dumps(message)})
            ids = await pipe.execute()
        for message, entry_id in zip(batch, ids, strict=True):
            last[client.inbox(message["member_id"])] = text(entry_id)
    while not await consumed(admin, last):
        await asyncio.sleep(0.01)
    return len(messages) / (time.perf_counter() - started)


async def ask_for_grids(client: Client, member: str, size: int, stop: asyncio.Event) -> int:
    served = 0
    while not stop.is_set():
        request = GridRequest(member_id=member, size=size)
        reply = await client.broker.request(request, list=GRID_RPC, timeout=30)
        grid = GridReply.model_validate_json(reply.body)
        assert grid.ok, grid.error
        served += 1
    return served


async def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("PZ_PARTITIONS", "4")
    settings = Settings.from_env({k: v for k, v in os.environ.items() if k != "PZ_RUN_FILE"})
    stack = Stack(Path(tempfile.mkdtemp(prefix="pz-grids-")), quiet=True)
    say("starting the system...")
    stack.start()
    publisher = getattr(stack, "publisher_url", stack.url)
    admin = aioredis.Redis.from_url(stack.url)
    try:
        async with Client(publisher, settings.partitions) as client:
            rng = np.random.default_rng(0)
            images = [f"b{i}" for i in range(args.images)]
            await client.publish_many(
                inbound("ImageRegistered", "artist", {"image_id": image, "model_version": "7",
                        "embedding": rng.normal(size=settings.embed_dim).tolist()})
                for image in images
            )  # fmt: skip
            while not all(await registered(admin, images)):
                await asyncio.sleep(0.2)
            rates: dict[str, float] = {}
            grids = 0
            for phase, seed in (("quiet", 1), ("grid clients", 2), ("quiet again", 3)):
                messages = workload(args.members, args.grids, args.images, seed=seed)
                for message in messages:
                    message["member_id"] = f"s{seed}-{message['member_id']}"
                stop = asyncio.Event()
                askers = []
                if phase == "grid clients":
                    askers = [
                        asyncio.create_task(ask_for_grids(client, f"g{i}", args.size, stop))
                        for i in range(args.clients)
                    ]
                    await asyncio.sleep(1.0)  # let the clients get going
                rates[phase] = await drain(client, admin, messages)
                stop.set()
                grids += sum(await asyncio.gather(*askers))
                say(f"  {phase}: {len(messages)} entries at {rates[phase]:,.0f}/s")
    finally:
        await admin.aclose()
        stack.stop()
    quiet = (rates["quiet"] + rates["quiet again"]) / 2
    return {
        "entries_per_phase": len(messages),
        "drain_quiet_per_s": round(quiet, 1),
        "drain_with_grid_clients_per_s": round(rates["grid clients"], 1),
        "ratio": round(rates["grid clients"] / quiet, 3),
        "grid_clients": args.clients,
        "grid_size": args.size,
        "grids_served_meanwhile": grids,
        "grid_process": any(service == "selection-grid" for service, _ in stack.processes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--size", type=int, default=30)
    parser.add_argument("--members", type=int, default=150)
    parser.add_argument("--grids", type=int, default=10, help="grids per member (3 picks each)")
    parser.add_argument("--images", type=int, default=2000)
    result = asyncio.run(run(parser.parse_args()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
