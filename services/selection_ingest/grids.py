"""The grid service: choose the next grid for a profile so that its picks teach the most.

An RPC on ``pz:rpc:grid``: ``{"member_id", "profile_id"?, "size"?, "strategy"?}``. It samples
candidates of the profile's family from the catalog (leaving out images the member saw in
their recent grids), asks :func:`shared.taste.grids.choose_grid` (``active``: information
gain with diversity; ``random`` for comparison), records the grid by publishing
``GridServed`` to the member's inbox like any other publisher (so it is validated and
ordered with the member's picks), and answers with the grid.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from pydantic import ValidationError

from shared.adapters.generation import read_generation
from shared.adapters.store import text
from shared.client import inbound
from shared.domain.families import family_of
from shared.domain.grids import GridReply, GridRequest
from shared.domain.member import MemberState
from shared.domain.rpc import invalid
from shared.domain.views import PriorView, ProfileModel
from shared.keys import family_images, image_key, partition_for
from shared.settings import Settings
from shared.taste.grids import choose_grid
from shared.taste.learner import TasteLearner
from shared.taste.prior import TastePrior

CANDIDATES = 300


class GridService:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.priors: dict[str, TastePrior] = {"": TastePrior.uninformed(settings.embed_dim)}
        self.embeddings: dict[str, np.ndarray] = {}

    async def handle(self, body: object) -> GridReply:
        try:
            request = GridRequest.model_validate(body)
        except ValidationError as error:
            return GridReply(ok=False, error=invalid(error)[1])
        try:
            return await self.serve(request)
        except LookupError as error:
            return GridReply(ok=False, error=str(error))

    async def serve(self, request: GridRequest) -> GridReply:
        partition = partition_for(request.member_id, self.settings.partitions)
        generation = await read_generation(self.client)
        keys = partition.read_model(generation)
        raw: Any = await self.client.get(partition.member_state(request.member_id))
        state = MemberState.from_bytes(raw)
        profile_id, family = self._profile(request, state)
        learner = await self._learner(keys.base, profile_id)
        seen = {image for grid in state.grids.values() for image in grid.images}
        ids, vectors = await self._candidates(family, seen)
        rng = np.random.default_rng(secrets.randbits(64))
        chosen = choose_grid(
            learner, vectors, request.size, rng, request.strategy, picks=request.picks
        )
        image_ids = [ids[i] for i in chosen]
        grid_id = f"g{secrets.token_hex(8)}"
        payload = {"grid_id": grid_id, "image_ids": image_ids}
        if request.profile_id:
            payload["profile_id"] = request.profile_id
        message = inbound("GridServed", request.member_id, payload, key=f"grid:{grid_id}")
        await self.client.xadd(partition.inbox, {"data": json.dumps(message)})
        return GridReply(ok=True, grid_id=grid_id, profile_id=profile_id, image_ids=image_ids)

    def _profile(self, request: GridRequest, state: MemberState) -> tuple[str | None, str]:
        if request.profile_id is None:
            family = family_of(state.default_version) or "v7"
            return state.globals.get(family), family
        profile = state.profiles.get(request.profile_id)
        if profile is None or profile.deleted:
            raise LookupError(f"profile {request.profile_id!r} is not an active profile of yours")
        return profile.profile_id, profile.family

    async def _learner(self, base: str, profile_id: str | None) -> TasteLearner:
        raw = await self.client.get(f"{base}:profile:{profile_id}") if profile_id else None
        model = ProfileModel.from_bytes(raw) if raw else None
        if model is None:
            current = await self.client.get(f"{base}:prior-current")
            prior_id = PriorView.from_bytes(current).model_id if current else ""
            return TasteLearner(await self._prior(base, prior_id))
        prior = await self._prior(base, model.prior)
        if not model.state:
            return TasteLearner(prior)
        return TasteLearner.from_state(prior, base64.b64decode(model.state))

    async def _prior(self, base: str, model_id: str) -> TastePrior:
        if model_id not in self.priors:
            raw = await self.client.get(f"{base}:prior:{model_id}")
            if raw is None:
                raise LookupError(f"prior {model_id} is not projected yet")
            self.priors[model_id] = TastePrior.from_payload(json.loads(raw))
        return self.priors[model_id]

    async def _candidates(self, family: str, seen: set[str]) -> tuple[list[str], np.ndarray]:
        sample: Any = await self.client.srandmember(family_images(family), CANDIDATES)
        ids = sorted({text(i) for i in sample} - seen) or sorted(text(i) for i in sample)
        if len(ids) < 2:
            raise LookupError(f"the catalog has fewer than 2 {family.upper()} images")
        missing = [i for i in ids if i not in self.embeddings]
        if missing:
            async with self.client.pipeline(transaction=False) as pipe:
                for image_id in missing:
                    pipe.hget(image_key(image_id), "emb")
                for image_id, raw in zip(missing, await pipe.execute(), strict=True):
                    self.embeddings[image_id] = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        return ids, np.stack([self.embeddings[i] for i in ids])
