"""Estimate the population prior from the profiles the system has, and publish it.

    python -m tools.taste_model publish [--rank 16] [--min-evidence 40]
    python -m tools.taste_model publish --from-catalog [--rank 16]

The prior is data: it is appended as ``TasteModelPublished`` to every partition's log, so a
replay reproduces exactly which prior each profile learned with. ``--from-catalog`` (for a
system without learned profiles yet) tracks the catalog's main directions of variation and
knows nothing about tastes; otherwise the prior is fitted to the learned profiles' posterior
means and covariances (``shared.taste.prior.estimate_prior``). New profiles start from the
latest prior; existing ones keep theirs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from shared.adapters.generation import active_generation
from shared.adapters.store import connect
from shared.domain import events as ev
from shared.domain.views import PriorView, ProfileModel
from shared.keys import all_partitions, image_key
from shared.settings import Settings
from shared.taste.learner import TasteLearner
from shared.taste.prior import TastePrior, estimate_prior

SYSTEM = ""
CATALOG_SAMPLE = 20_000


async def catalog_embeddings(client: aioredis.Redis, limit: int = CATALOG_SAMPLE) -> np.ndarray:
    keys = []
    async for key in client.scan_iter(match=image_key("*"), count=1000):
        keys.append(key)
        if len(keys) >= limit:
            break
    rows = []
    for start in range(0, len(keys), 500):
        async with client.pipeline(transaction=False) as pipe:
            for key in sorted(keys)[start : start + 500]:
                pipe.hget(key, "emb")
            rows += [np.frombuffer(raw, dtype="<f4") for raw in await pipe.execute() if raw]
    if not rows:
        raise ValueError("the catalog is empty: register images first")
    return np.stack(rows).astype(np.float64)


async def learned_profiles(
    client: aioredis.Redis, settings: Settings, min_evidence: int
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means (n, d) and the average posterior covariance (d, d) of every profile
    of the active generation with at least ``min_evidence`` signals."""
    generation = await active_generation(client)
    priors: dict[str, TastePrior] = {"": TastePrior.uninformed(settings.embed_dim)}
    means, covariance, count = [], np.zeros((settings.embed_dim,) * 2), 0
    for partition in all_partitions(settings.partitions):
        keys = partition.read_model(generation)
        async for key in client.scan_iter(match=keys.profile("*"), count=1000):
            raw = await client.get(key)
            model = ProfileModel.from_bytes(raw) if raw else None
            if model is None or not model.state:
                continue
            if model.prior not in priors:
                stored = await client.get(keys.prior(model.prior))
                priors[model.prior] = TastePrior.from_payload(json.loads(stored or b"{}"))
            learner = TasteLearner.from_state(priors[model.prior], base64.b64decode(model.state))
            if learner.evidence >= min_evidence:
                means.append(learner.mean())
                covariance += learner.covariance()
                count += 1
    if count < 2:
        raise ValueError(f"only {count} profiles have {min_evidence}+ signals; need at least 2")
    return np.array(means), covariance / count


async def publish(
    client: aioredis.Redis, settings: Settings, prior: TastePrior, profiles: int
) -> str:
    """Append the prior to every partition's log (once: a partition already on it is skipped)."""
    model_id = prior.fingerprint().hex()[:16]
    payload = ev.TasteModelPublished(model_id=model_id, prior=prior.to_payload(), profiles=profiles)
    now = ev.utcnow()
    event = ev.record(
        payload, event_id=f"taste-model:{model_id}", member_id=SYSTEM, occurred_at=now, now=now
    )
    generation = await active_generation(client)
    for partition in all_partitions(settings.partitions):
        current = await client.get(partition.read_model(generation).current_prior)
        if current and PriorView.from_bytes(current).model_id == model_id:
            continue
        await client.xadd(partition.log, {"event": event.to_bytes()})
    return model_id


async def main_async(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    client = connect(settings.redis_url)
    try:
        if args.from_catalog:
            embeddings = await catalog_embeddings(client)
            prior = TastePrior.from_catalog(embeddings, args.rank)
            source: dict[str, Any] = {"catalog_images": len(embeddings), "profiles": 0}
        else:
            means, covariance = await learned_profiles(client, settings, args.min_evidence)
            prior = estimate_prior(means, args.rank, posterior_covariance=covariance)
            source = {"profiles": len(means)}
        if prior.dim != settings.embed_dim:
            raise ValueError(
                f"prior has dimension {prior.dim}; the system uses {settings.embed_dim}"
            )
        model_id = await publish(client, settings, prior, int(source["profiles"]))
        print(json.dumps({"model_id": model_id, "rank": prior.rank,
                          "residual_variance": prior.residual_variance, **source}))  # fmt: skip
        return 0
    except ValueError as error:
        print(f"taste_model: {error}", file=sys.stderr)
        return 2
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="Estimate and publish the population prior.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("publish", help="estimate a prior and append it to the log")
    command.add_argument("--rank", type=int, default=16, help="most population directions")
    command.add_argument("--min-evidence", type=int, default=40, help="signals a profile needs")
    command.add_argument("--from-catalog", action="store_true", help="bootstrap from the catalog")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
