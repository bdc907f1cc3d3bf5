"""Deleted profiles against the hot read models: what one member's create/delete cycles cost.

    python -m bench.deleted_profiles                       # 2,000 and 20,000 cycles, then 3,000 live
    python -m bench.deleted_profiles --cycles 500 --live 0

For each count of cycles, ann's log (a Global V7 Profile unlocked by 40 picks, one code,
then N times ProfileCreated + ProfileDeleted) is written straight into a fresh server's log
and folded by the real projector (as ``make replay`` does), then it prints: the bytes of her
member view, the time to project one more of her picks (a cold projector, as after a
restart or a takeover, and a warm one), and what resolving her shared code costs bob
(latency, and the bytes the resolver reads). ``--live`` then runs the four services
in-process and sends that many cycles through the inbox, measuring the same end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from services.code_minter.app import build as build_minter
from services.profile_projector.app import build as build_projector
from services.profile_projector.projector import Projector
from services.prompt_resolver.app import build as build_resolver
from services.prompt_resolver.resolver import Resolver
from services.selection_ingest.app import build as build_ingest
from shared.adapters.generation import active_generation
from shared.adapters.metering import Counting
from shared.adapters.server import EmbeddedServer
from shared.adapters.store import text
from shared.client import Client, inbound
from shared.domain import events as ev
from shared.domain.listing import ListRequest
from shared.domain.resolution import ResolveRequest
from shared.keys import image_key, partition_for
from shared.settings import Settings
from shared.taste.prior import TastePrior
from tools.replay import rebuild

DIM = 256
IMAGES = [f"img{i}" for i in range(60)]


def in_partition(prefix: str, width: int, partition: int, partitions: int, start: int = 0) -> str:
    """The first ID ``prefix`` + a number (``width`` characters in all) in ``partition``."""
    number = start
    while True:
        candidate = f"{prefix}{number:0{width - len(prefix)}d}"
        if zlib.crc32(candidate.encode()) % partitions == partition:
            return candidate
        number += 1


def settings_for(url: str) -> Settings:
    return Settings(redis_url=url, partitions=4, embed_dim=DIM, replica="bench-0")


async def register_catalog(client: aioredis.Redis) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    vectors = {}
    async with client.pipeline(transaction=False) as pipe:
        for image in IMAGES:
            vector = rng.normal(size=DIM)
            vectors[image] = vector / np.linalg.norm(vector)
            pipe.hset(
                image_key(image),
                mapping={"creator": "artist", "version": "7", "key": image,
                         "emb": vectors[image].astype("<f4").tobytes()},
            )  # fmt: skip
        await pipe.execute()
    return vectors


class History:
    """ann's and bob's logged events, as ingest would have appended them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.count = 0
        self.ann = partition_for("ann", settings.partitions).index
        self.code = in_partition("annc", 7, self.ann, settings.partitions)
        self.global_id = in_partition("pglob", 12, self.ann, settings.partitions)
        self.rng = np.random.default_rng(5)

    def event(self, payload: ev.Payload, member: str) -> ev.LoggedEvent:
        self.count += 1
        now = ev.utcnow()
        return ev.record(payload, event_id=f"e{self.count}", member_id=member, occurred_at=now,
                         now=now)  # fmt: skip

    def pick(self) -> ev.LoggedEvent:
        shown = [str(i) for i in self.rng.choice(IMAGES, 9, replace=False)]
        payload = ev.ImagePicked(
            grid_id=f"g{self.count}", image_id=shown[0], profile_id=self.global_id,
            candidates=shown,
        )  # fmt: skip
        return self.event(payload, "ann")

    def unlocked(self) -> list[ev.LoggedEvent]:
        created = ev.ProfileCreated(
            name="Global V7 Profile", profile_id=self.global_id, family="v7", version="7",
            is_global=True,
        )  # fmt: skip
        minted = ev.CodeMinted(
            code=self.code, profile_id=self.global_id, profile_name="Global V7 Profile",
            family="v7", version="7", vector=ev.encode_vector(np.eye(DIM)[0]), evidence=40,
            picks=40,
        )  # fmt: skip
        picks = [self.pick() for _ in range(self.settings.unlock_v7)]
        return [self.event(created, "ann"), *picks, self.event(minted, "ann")]

    def cycles(self, n: int) -> list[ev.LoggedEvent]:
        events, start = [], 0
        for i in range(n):
            pid = in_partition("pdel", 12, self.ann, self.settings.partitions, start)
            start = int(pid[4:]) + 1
            created = ev.ProfileCreated(name=f"Try {i}", profile_id=pid, family="v7", version="7")
            events += [self.event(created, "ann"),
                       self.event(ev.ProfileDeleted(profile_id=pid), "ann")]  # fmt: skip
        return events

    def bob(self) -> list[ev.LoggedEvent]:
        bob = partition_for("bob", self.settings.partitions).index
        pid = in_partition("pbob", 12, bob, self.settings.partitions)
        created = ev.ProfileCreated(
            name="Global V7 Profile", profile_id=pid, family="v7", version="7", is_global=True
        )
        return [self.event(created, "bob")]


async def append(
    client: aioredis.Redis, settings: Settings, events: list[ev.LoggedEvent]
) -> list[str]:
    ids = []
    for start in range(0, len(events), 1000):
        async with client.pipeline(transaction=False) as pipe:
            for event in events[start : start + 1000]:
                pipe.xadd(partition_for(event.member_id, settings.partitions).log,
                          {"event": event.to_bytes()})  # fmt: skip
            ids += [text(i) for i in await pipe.execute()]
    return ids


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def timed(call: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def folded(cycles: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data, EmbeddedServer(Path(data)) as server:
        settings = settings_for(server.url)
        client = aioredis.Redis.from_url(server.url)
        await register_catalog(client)
        history = History(settings)
        await append(client, settings, history.bob() + history.unlocked() + history.cycles(cycles))
        generation = await active_generation(client)
        started = time.perf_counter()
        await rebuild(client, settings, generation, quiet=True)
        fold_s = time.perf_counter() - started
        partition = partition_for("ann", settings.partitions)
        keys = partition.read_model(generation)
        view_bytes = await client.strlen(keys.member("ann"))
        prior = TastePrior.uninformed(DIM)

        async def one_pick(projector: Projector) -> None:
            position = text(await client.get(keys.position))
            [entry_id] = await append(client, settings, [history.pick()])
            entries: Any = await client.xrange(partition.log, min=entry_id, max=entry_id)
            assert await projector.apply(partition, position, [(entry_id, entries[0][1])])

        cold = await timed(
            lambda: one_pick(Projector(client, settings, prior, generation, False)), 7
        )
        warm_projector = Projector(client, settings, prior, generation, emit_changes=False)
        await one_pick(warm_projector)
        warm = await timed(lambda: one_pick(warm_projector), 7)
        result = {"cycles": cycles, "fold_s": fold_s, "view_bytes": view_bytes,
                  "pick_cold_ms": median_ms(cold), "pick_warm_ms": median_ms(warm)}  # fmt: skip
        result |= await resolving(server.url, settings, history.code)
        await client.aclose()
        return result


async def resolving(url: str, settings: Settings, code: str) -> dict[str, Any]:
    pool = aioredis.ConnectionPool.from_url(url, connection_class=Counting)
    client = aioredis.Redis(connection_pool=pool)
    resolver = Resolver(client, settings)
    await resolver.generation()
    shared = ResolveRequest(member_id="bob", prompt=f"a cat --p {code}")
    own = ResolveRequest(member_id="ann", prompt=f"a cat --p {code}")
    reply = await resolver.resolve(shared)
    assert reply.ok, reply.error
    Counting.received = 0
    await resolver.resolve(shared)
    shared_bytes = Counting.received
    Counting.received = 0
    await resolver.resolve(own)
    own_bytes = Counting.received
    result = {
        "resolve_shared_ms": median_ms(await timed(lambda: resolver.resolve(shared), 50)),
        "resolve_shared_bytes": shared_bytes,
        "resolve_own_ms": median_ms(await timed(lambda: resolver.resolve(own), 50)),
        "resolve_own_bytes": own_bytes,
        "listing_ms": median_ms(
            await timed(lambda: resolver.list_profiles(ListRequest(member_id="ann")), 5)
        ),
    }
    await client.aclose()
    await pool.disconnect()
    return result


async def live(cycles: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data, EmbeddedServer(Path(data)) as server:
        settings = settings_for(server.url)
        async with AsyncExitStack() as stack:
            for build in (build_ingest, build_projector, build_minter, build_resolver):
                await stack.enter_async_context(build(settings))
            client = await stack.enter_async_context(Client(server.url, settings.partitions))
            await register_catalog(client.redis)
            for image in IMAGES:  # ingest's family index, for its grid RPC (not used here)
                await client.redis.sadd("pz:catalog:v7", image)
            await unlock(client, "ann", settings.unlock_v7)
            await unlock(client, "bob", 1)
            code = (await until(lambda: client.profiles("ann"), lambda f: f.codes)).codes[0].code
            started = time.perf_counter()
            done = 0
            while done < cycles:
                batch = min(90, cycles - done)
                await create_and_delete(client, [f"Try {done + i}" for i in range(batch)])
                done += batch
            cycles_s = time.perf_counter() - started
            generation = await active_generation(client.redis)
            partition = partition_for("ann", settings.partitions)
            keys = partition.read_model(generation)
            picks = [await pick_latency(client, keys.position) for _ in range(7)]
            plain = await timed(lambda: client.resolve_plain("bob", f"a cat --p {code}"), 100)
            return {"cycles": cycles, "cycles_s": cycles_s,
                    "view_bytes": await client.redis.strlen(keys.member("ann")),
                    "pick_end_to_end_ms": median_ms(picks),
                    "resolve_shared_plain_ms": median_ms(plain)}  # fmt: skip


async def create_and_delete(client: Client, names: list[str]) -> None:
    """Create profiles of these names, wait for their IDs, delete them, wait until gone."""
    wanted = set(names)
    await client.publish_many(inbound("ProfileCreated", "ann", {"name": n}) for n in names)
    found = await until(
        lambda: client.profiles("ann"), lambda f: {p.name for p in f.profiles} >= wanted, 120
    )
    ids = [p.profile_id for p in found.profiles if p.name in wanted]
    await client.publish_many(inbound("ProfileDeleted", "ann", {"profile_id": i}) for i in ids)
    await until(
        lambda: client.profiles("ann"), lambda f: not {p.name for p in f.profiles} & wanted, 120
    )


async def unlock(client: Client, member: str, picks: int) -> None:
    rng = np.random.default_rng(len(member))
    messages = []
    for grid in range((picks + 2) // 3):
        shown = [str(i) for i in rng.choice(IMAGES, 9, replace=False)]
        messages.append(inbound("GridServed", member, {"grid_id": f"u{grid}", "image_ids": shown}))
        messages += [inbound("ImagePicked", member, {"grid_id": f"u{grid}", "image_id": image})
                     for image in shown[: min(3, picks - 3 * grid)]]  # fmt: skip
    await client.publish_many(messages)


_grids = iter(range(10**9))


async def pick_latency(client: Client, position_key: str) -> float:
    grid = f"lat{next(_grids)}"
    shown = IMAGES[:9]
    before = await client.redis.get(position_key)
    await client.publish(inbound("GridServed", "ann", {"grid_id": grid, "image_ids": shown}))
    await until(lambda: client.redis.get(position_key), lambda now: now != before)
    before = await client.redis.get(position_key)
    started = time.perf_counter()
    await client.publish(inbound("ImagePicked", "ann", {"grid_id": grid, "image_id": shown[0]}))
    await until(lambda: client.redis.get(position_key), lambda now: now != before, poll=0.0005)
    return time.perf_counter() - started


async def until(
    probe: Callable[[], Awaitable[Any]], accept: Callable[[Any], Any], timeout: float = 60,
    poll: float = 0.02,
) -> Any:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached in {timeout}s")
        await asyncio.sleep(poll)


def show(row: dict[str, Any]) -> None:
    print("  " + ", ".join(f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v:,}"
                           for k, v in row.items()), flush=True)  # fmt: skip


async def main_async(args: argparse.Namespace) -> None:
    print("folded by the projector (log written directly):")
    for cycles in args.cycles:
        show(await folded(cycles))
    if args.live:
        print("through the running system (inbox -> ingest -> projector):")
        show(await live(args.live))


def main() -> None:
    logging.disable(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, nargs="+", default=[1, 2000, 20000])
    parser.add_argument("--live", type=int, default=3000, help="cycles through the inbox (0: none)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
