"""``make demo``: a realistic scenario, driven only through the public contract.

A synthetic catalog is registered by a few artists; simulated members (each with a hidden
taste) pick 3 of every grid of 9 until their Global V7 Profiles unlock; codes are minted;
prompts are resolved, and every rewritten prompt is printed. Uses the system that
``make run`` started (``data/run.json``: as its ``publisher`` user, and as ``admin`` only
for the operator's step) or ``REDIS_URL``; otherwise starts its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from shared.client import Client, inbound
from shared.settings import Settings, running_system
from shared.taste.simulation import World, WorldConfig, make_world

from .supervisor import RUN_FILE, Stack

MEMBERS = ["alice", "bob", "carol", "dave"]
ARTISTS = ["artist-ana", "artist-ben", "artist-cy"]


def say(text: str = "") -> None:
    print(text, flush=True)


async def publish_prior(url: str) -> str:
    """What an operator runs (an ops command, not part of the public contract): as admin."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.taste_model", "publish", "--from-catalog",
        env={**os.environ, "REDIS_URL": url}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    if process.returncode:
        raise RuntimeError("publishing the prior failed")
    return out.decode().strip()


async def scenario(client: Client, settings: Settings, url: str, seed: int, images: int) -> None:
    rng = np.random.default_rng(seed)
    world = make_world(WorldConfig(dim=settings.embed_dim, n_images=images), seed=seed)
    tastes = dict(zip(MEMBERS, world.sample_tastes(rng, len(MEMBERS)), strict=True))
    run = f"demo{int(time.time())}"
    ids = {member: f"{member}-{run}" for member in MEMBERS}

    say(f"1. Registering a catalog of {images} images ({settings.embed_dim}-d embeddings)")
    image_ids = [f"{run}-img{i}" for i in range(images)]
    versions = ["7" if i % 5 else "6.1" for i in range(images)]
    registrations = [
        inbound(
            "ImageRegistered",
            ARTISTS[i % len(ARTISTS)],
            {"image_id": image_ids[i], "model_version": versions[i],
             "embedding": world.embeddings[i].tolist()},
            key=f"{run}-reg{i}",
        )
        for i in range(images)
    ]  # fmt: skip
    await client.publish_many(registrations)
    receipts = [await client.receipt(message, timeout=60) for message in registrations]
    accepted = sum(receipt.status == "accepted" for receipt in receipts)
    say(f"   {accepted} registrations accepted (each publisher waits for its receipt)")
    say("   an operator publishes a prior that tracks the catalog's main directions:")
    say(f"   $ python -m tools.taste_model publish --from-catalog  ->  {await publish_prior(url)}")

    needed = settings.unlock_v7
    say(
        f"2. Members ask for grids (active learning) and pick 3 of 9 until unlocked ({needed} picks)"
    )
    index_of = {image_id: i for i, image_id in enumerate(image_ids)}
    for member in MEMBERS:
        picks = needed if member != "dave" else needed // 3
        grids = 0
        while picks > 0:
            grid = await client.grid(ids[member])
            if not grid.ok:
                raise RuntimeError(f"no grid for {member}: {grid.error}")
            chosen = pick(world, rng, tastes[member], grid.image_ids, index_of, min(3, picks))
            chosen_picks = [
                inbound("ImagePicked", ids[member], {"grid_id": grid.grid_id, "image_id": image})
                for image in chosen
            ]
            await client.publish_many(chosen_picks)
            picks -= len(chosen)
            grids += 1
        await client.receipt(chosen_picks[-1], timeout=30)
        say(
            f"   {member:6s} {grids:3d} grids served, {needed if member != 'dave' else needed // 3:3d} picks"
        )

    say("3. Waiting for profiles to be projected and codes to be minted")
    await wait_for_codes(client, [ids[m] for m in MEMBERS if m != "dave"])
    say()
    say(
        f"   {'member':8s} {'profile':18s} {'progress':>9s} {'codes':>5s} {'latest':>8s} {'cos(hidden taste)':>18s}"
    )
    for member in MEMBERS:
        listing = await client.profiles(ids[member])
        for profile in listing.profiles:
            cosine = ""
            if profile.latest_code:
                code = next(c for c in listing.codes if c.code == profile.latest_code)
                resolved = await client.resolve(ids[member], f"x --p {code.code}")
                vector = np.asarray(resolved.vector)
                hidden = tastes[member] / np.linalg.norm(tastes[member])
                cosine = f"{float(vector @ hidden):.2f}"
            say(f"   {member:8s} {profile.name:18s} {profile.picks:4d}/{profile.needed:<4d} "
                f"{len(listing.codes):5d} {profile.latest_code or '-':>8s} {cosine:>18s}")  # fmt: skip

    say()
    say("4. Resolving prompts (prompt -> rewritten prompt, or the error)")
    alice_code = (await client.profiles(ids["alice"])).codes[0].code
    bob_code = (await client.profiles(ids["bob"])).codes[0].code
    prompts = [
        ("alice", "a lighthouse at dusk --p --s 250 --v 7"),
        ("bob", "a red fox in the snow --ar 16:9 --p"),
        ("bob", f"a quiet harbour —p {alice_code} {bob_code}::0.5 --stylize 600"),
        ("carol", "portrait of an old sailor --p --s 0"),
        ("carol", "a castle --v 8.1 --p"),
        ("dave", "a lighthouse at dusk --p"),
        ("alice", "a lighthouse --p --v 5.2"),
        ("alice", "a lighthouse --p --s 1200"),
        ("alice", "a lighthouse --p zzzzzzz"),
        ("alice", "a lighthouse without personalization --ar 2:3"),
    ]
    for member, prompt in prompts:
        reply = await client.resolve(ids[member], prompt)
        say(f"   [{member}] {prompt}")
        if reply.ok:
            codes = ", ".join(f"{e.code} (weight {e.weight:g})" for e in reply.entries) or "none"
            say(f"      -> {reply.prompt}")
            say(f"         codes {codes}; strength {reply.strength:.3f}; family {reply.family}")
            for warning in reply.warnings:
                say(f"         warning: {warning}")
        else:
            assert reply.error is not None
            say(f"      -> error {reply.error.code}: {reply.error.message} "
                f"(token {reply.error.token!r} at {reply.error.position})")  # fmt: skip


def pick(
    world: World,
    rng: np.random.Generator,
    taste: np.ndarray,
    shown: list[str],
    index_of: dict[str, int],
    count: int,
) -> list[str]:
    """What a member with a hidden ``taste`` picks from a grid: it judges the images of this
    demo's catalog; images an earlier run registered (grids draw from the whole catalog)
    come after them, in the grid's order."""
    known = [image for image in shown if image in index_of]
    order = world.choose(rng, taste, world.embeddings[[index_of[i] for i in known]], count)
    chosen = [known[i] for i in order]
    return chosen + [image for image in shown if image not in index_of][: count - len(chosen)]


async def wait_for_codes(client: Client, members: list[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    pending = set(members)
    while pending:
        for member in sorted(pending):
            listing = await client.profiles(member)
            if listing.codes and all(p.unlocked and p.latest_code for p in listing.profiles):
                pending.discard(member)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no code for {sorted(pending)} after {timeout}s")
        await asyncio.sleep(0.3)


async def main_async(args: argparse.Namespace) -> None:
    settings = Settings.from_env()
    url = os.environ.get("REDIS_URL")
    publisher_url = url
    running = None if url else running_system()
    stack = None
    if running is not None:
        url = str(running["redis_url"])
        publisher_url = str(running.get("publisher_url") or url)
        say(f"using the system `make run` started ({RUN_FILE}), as its publisher user")
    if not url:
        say("no running system found: starting one for this demo (`make run` keeps one up)")
        stack = Stack(Path(tempfile.mkdtemp(prefix="pz-demo-")), quiet=True)
        stack.start()
        url, publisher_url = stack.url, stack.publisher_url
    assert publisher_url is not None
    try:
        async with Client(publisher_url, settings.partitions) as client:
            await scenario(client, settings, url, args.seed, args.images)
    finally:
        if stack is not None:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--images", type=int, default=600)
    asyncio.run(main_async(parser.parse_args()))
    sys.exit(0)


if __name__ == "__main__":
    main()
