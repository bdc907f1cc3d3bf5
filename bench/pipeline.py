"""``make bench``: pipeline throughput and resolver latency, each beside a raw baseline.

Runs the four services as processes against a fresh embedded server (or ``REDIS_URL``):
- throughput: inbound events per second from the inbox streams to projected profiles, beside
  a raw hop measured in the same run (pipelined XADD, then XREADGROUP COUNT 500 + XACK);
- latency: resolver round trips (``--p`` resolved to codes) beside a redis-py GET.
Prints a table and, as the last line, one JSON object.
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

from bench.memory import census
from shared.adapters.catalog import registered
from shared.adapters.store import text
from shared.client import Client, inbound
from shared.keys import all_partitions
from shared.settings import Settings
from tools.supervisor import Stack


def progress(text_: str) -> None:
    print(text_, file=sys.stderr, flush=True)


async def raw_hop(url: str, n: int) -> float:
    """Events per second through one raw stream hop: pipelined XADD, then grouped reads."""
    client = aioredis.Redis.from_url(url)
    stream, body = "bench:raw", json.dumps({"type": "ImagePicked", "pad": "x" * 150})
    await client.delete(stream)
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    started = time.perf_counter()
    for chunk in range(0, n, 1000):
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(min(1000, n - chunk)):
                pipe.xadd(stream, {"data": body})
            await pipe.execute()
    seen = 0
    while seen < n:
        reply: Any = await client.xreadgroup("g", "c", {stream: ">"}, count=500)
        ids = [entry_id for entry_id, _ in reply[0][1]]
        await client.xack(stream, "g", *ids)
        seen += len(ids)
    elapsed = time.perf_counter() - started
    await client.delete(stream)
    await client.aclose()
    return n / elapsed


def workload(members: int, grids: int, images: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    messages = []
    for member in range(members):
        for grid in range(grids):
            shown = [f"b{i}" for i in rng.choice(images, 9, replace=False)]
            grid_id = f"m{member}g{grid}"
            messages.append(
                inbound("GridServed", f"m{member}", {"grid_id": grid_id, "image_ids": shown})
            )
            for image in rng.choice(shown, 3, replace=False):
                messages.append(inbound("ImagePicked", f"m{member}", {"grid_id": grid_id, "image_id": str(image)}))  # fmt: skip
    order = rng.permutation(members)
    by_member: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        by_member.setdefault(message["member_id"], []).append(message)
    interleaved = []
    queues = [by_member[f"m{m}"] for m in order]
    while any(queues):
        for queue in queues:
            if queue:
                interleaved.append(queue.pop(0))
    return interleaved


async def drained(client: aioredis.Redis, settings: Settings) -> bool:
    for partition in all_partitions(settings.partitions):
        last = await client.xrevrange(partition.log, count=1)
        position = text(await client.get(partition.read_model(1).position))
        if last and text(last[0][0]) != position:
            return False
        pending: Any = await client.xpending(partition.inbox, "ingest")
        info: Any = await client.xinfo_groups(partition.inbox)
        if pending["pending"] or any(g["lag"] for g in info):
            return False
    return True


async def throughput(
    client: Client, settings: Settings, members: int, grids: int
) -> tuple[int, float]:
    images = 500
    rng = np.random.default_rng(0)
    catalog = [
        inbound("ImageRegistered", "artist", {"image_id": f"b{i}", "model_version": "7",
                "embedding": rng.normal(size=settings.embed_dim).tolist()})
        for i in range(images)
    ]  # fmt: skip
    await client.publish_many(catalog)
    while not all(await registered(client.redis, [f"b{i}" for i in range(images)])):
        await asyncio.sleep(0.1)
    while not await drained(client.redis, settings):
        await asyncio.sleep(0.1)
    messages = workload(members, grids, images, seed=1)
    progress(f"  publishing {len(messages)} events from {members} members...")
    started = time.perf_counter()
    for chunk in range(0, len(messages), 500):
        await client.publish_many(messages[chunk : chunk + 500])
    while not await drained(client.redis, settings):
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    for member in range(20):
        while not (await client.profiles(f"m{member}")).codes:
            await asyncio.sleep(0.05)
    return len(messages), len(messages) / elapsed


async def latencies(client: Client, calls: int) -> dict[str, list[float]]:
    """Round trips in ms, interleaved so that each path sees the same machine load."""
    members = [f"m{i}" for i in range(20)]
    prompt = "a lighthouse at dusk --p --s 250"
    paths = {
        "faststream": lambda m: client.resolve(m, prompt),
        "plain": lambda m: client.resolve_plain(m, prompt),
        "get": lambda m: client.redis.get("bench:missing"),
    }
    timings: dict[str, list[float]] = {name: [] for name in paths}
    for call in range(calls):
        for name, path in paths.items():
            started = time.perf_counter()
            reply = await path(members[call % len(members)])
            timings[name].append((time.perf_counter() - started) * 1000)
            assert name == "get" or reply.ok, reply
    return timings


async def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("PZ_PARTITIONS", "4")
    os.environ.setdefault("PZ_UNLOCK_V7", "30")
    settings = Settings.from_env()
    stack = Stack(Path(tempfile.mkdtemp(prefix="pz-bench-")), replicas=args.replicas, quiet=True)
    progress("starting the server and the four services...")
    stack.start()
    try:
        progress(f"raw baseline: {args.events} entries through XADD + XREADGROUP...")
        raw = await raw_hop(stack.url, args.events)
        async with Client(stack.url, settings.partitions) as client:
            progress("pipeline throughput...")
            events, e2e = await throughput(client, settings, args.members, args.grids)
            progress(f"resolver round trips: {args.calls} calls...")
            timings = await latencies(client, args.calls)
            progress("memory census of every key...")
            memory = await census(client.redis, settings.partitions)
    finally:
        stack.stop()
    return {
        "events": events,
        "e2e_events_per_s": round(e2e, 1),
        "raw_hop_events_per_s": round(raw, 1),
        "e2e_vs_raw": round(e2e / raw, 3),
        "resolve_calls": args.calls,
        "resolve_p50_ms": _percentile(timings["faststream"], 50),
        "resolve_p99_ms": _percentile(timings["faststream"], 99),
        "resolve_plain_p50_ms": _percentile(timings["plain"], 50),
        "resolve_plain_p99_ms": _percentile(timings["plain"], 99),
        "raw_get_p50_ms": _percentile(timings["get"], 50),
        "raw_get_p99_ms": _percentile(timings["get"], 99),
        "partitions": settings.partitions,
        "embed_dim": settings.embed_dim,
        "memory": memory.figures(),
    }


def _percentile(values: list[float], q: int) -> float:
    return round(float(np.percentile(values, q)), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--grids", type=int, default=10, help="grids per member (3 picks each)")
    parser.add_argument("--events", type=int, default=50_000, help="raw baseline entries")
    parser.add_argument("--calls", type=int, default=2000, help="resolver round trips")
    parser.add_argument("--replicas", type=int, default=1, help="processes per service")
    result = asyncio.run(run(parser.parse_args()))
    print()
    print("| measure | this system | raw baseline (same run) | ratio |")
    print("|---|---|---|---|")
    print(f"| events/s, inbox -> projected profile ({result['events']} events) | "
          f"{result['e2e_events_per_s']:,.0f} | {result['raw_hop_events_per_s']:,.0f} (one XADD+XREADGROUP hop) | "
          f"{result['e2e_vs_raw']:.2f} |")  # fmt: skip
    for path, label in (("resolve", "FastStream request"), ("resolve_plain", "plain RPUSH/BLPOP")):
        for q in (50, 99):
            ours, raw = result[f"{path}_p{q}_ms"], result[f"raw_get_p{q}_ms"]
            print(f"| resolve round trip p{q}, ms, {label} ({result['resolve_calls']} calls) | "
                  f"{ours:.2f} | {raw:.2f} (redis-py GET) | {ours / raw:.1f}x |")  # fmt: skip
    memory = result["memory"]
    print()
    print("| memory | bytes |")
    print("|---|---|")
    print(f"| hot state per member (ingest state + member view; {memory['members']} members) | "
          f"{memory['hot_bytes_per_member']:,.0f} |")  # fmt: skip
    print(f"| per profile read model (learner state) | {memory['bytes_per_profile']:,.0f} |")
    print(
        f"| log, per event ({memory['log_events']:,} events) | {memory['log_bytes_per_event']:,.0f} |"
    )
    print(
        f"| per idempotency key (kept PZ_IDEMPOTENCY_TTL_S) | {memory['bytes_per_idempotency_key']:,.0f} |"
    )
    print(f"| server used_memory | {memory['used_memory']:,} |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
