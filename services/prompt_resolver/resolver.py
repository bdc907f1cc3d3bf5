"""prompt-resolver's adapter: fetch the read models a prompt needs, then resolve purely.

What a resolve reads is bounded: the member's view (active profiles only), the codes and
profile IDs the prompt names, and, to tell whether a code's profile was deleted, its owner's
view or (for the member's own codes of inactive profiles) the small model a deleted profile
leaves behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import ValidationError

from shared.adapters.generation import read_generation
from shared.domain.listing import Listing, ListRequest, listing
from shared.domain.resolution import (
    ResolveError,
    ResolveRequest,
    ResolveResponse,
    deleted_profiles,
    followups,
    lookups,
    resolve,
)
from shared.domain.rpc import invalid
from shared.domain.views import (
    CodeView,
    MemberCode,
    MemberDeletion,
    MemberView,
    ProfileModel,
    ProfileSummary,
)
from shared.keys import ReadModelKeys, partition_for
from shared.prompt.grammar import PromptError, parse_prompt
from shared.settings import Settings

T = TypeVar("T")
CHUNK = 1000
GENERATION_TTL_S = 1.0


class Resolver:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.needed = {"v6": settings.unlock_v6, "v7": settings.unlock_v7}
        self._generation = (0, 0.0)

    async def handle(self, body: Any) -> ResolveResponse:
        try:
            request = ResolveRequest.model_validate(body)
        except ValidationError as error:
            return _invalid(error)
        return await self.resolve(request)

    async def resolve(self, request: ResolveRequest) -> ResolveResponse:
        try:
            parsed = parse_prompt(
                request.prompt,
                max_length=self.settings.max_prompt_length,
                max_p_values=self.settings.max_p_values,
            )
        except PromptError as error:
            return _failure(error.code, error.message, error.token, error.position)
        generation = await self.generation()
        member = await self._member(request.member_id, generation)
        wanted = lookups(parsed, member)
        codes, models = await self._fetch(wanted.codes, wanted.profiles, generation)
        more = followups(request.member_id, member, codes)
        owners, more_models = await self._owners(more.members, more.profiles, generation)
        models |= more_models
        foreign = {profile_id: model.member_id for profile_id, model in models.items()}
        deleted = deleted_profiles(request.member_id, codes, models, owners)
        return resolve(parsed, request.member_id, member, codes, foreign, deleted, self.needed)

    async def list_profiles(self, body: Any) -> Listing | ResolveResponse:
        try:
            request = ListRequest.model_validate(body)
        except ValidationError as error:
            return _invalid(error)
        generation = await self.generation()
        member = await self._member(request.member_id, generation)
        if member is None:
            return listing(request.member_id, None, [], {}, request.include_deleted)
        keys = partition_for(request.member_id, self.settings.partitions).read_model(generation)
        codes = await member_codes(self.client, keys, member)
        deleted = (
            await deleted_summaries(self.client, keys, member) if request.include_deleted else {}
        )
        gone = {view.profile_id for view in codes} - member.profiles.keys() - deleted.keys()
        deleted |= await summaries(self.client, keys, gone)
        return listing(request.member_id, member, codes, deleted, request.include_deleted)

    async def generation(self) -> int:
        value, fetched = self._generation
        if time.monotonic() - fetched > GENERATION_TTL_S:
            value = await read_generation(self.client)
            self._generation = (value, time.monotonic())
        return value

    async def _member(self, member_id: str, generation: int) -> MemberView | None:
        partition = partition_for(member_id, self.settings.partitions)
        raw = await self.client.get(partition.read_model(generation).member(member_id))
        return MemberView.from_bytes(raw) if raw else None

    async def _owners(
        self, members: set[str], profiles: set[str], generation: int
    ) -> tuple[dict[str, MemberView], dict[str, ProfileModel]]:
        """The views of other members whose codes were named, and the models of the member's
        own inactive profiles behind her codes: whether those profiles were deleted."""
        if not members and not profiles:
            return {}, {}
        ordered_members, ordered_profiles = sorted(members), sorted(profiles)
        parts = self.settings.partitions
        async with self.client.pipeline(transaction=False) as pipe:
            for member_id in ordered_members:
                pipe.get(partition_for(member_id, parts).read_model(generation).member(member_id))
            for profile in ordered_profiles:
                pipe.get(partition_for(profile, parts).read_model(generation).profile(profile))
            replies = await pipe.execute()
        views = _parsed(ordered_members, replies, MemberView.from_bytes)
        models = _parsed(ordered_profiles, replies[len(ordered_members) :], ProfileModel.from_bytes)
        return views, models

    async def _fetch(
        self, codes: set[str], profiles: set[str], generation: int
    ) -> tuple[dict[str, CodeView], dict[str, ProfileModel]]:
        if not codes and not profiles:
            return {}, {}
        ordered_codes, ordered_profiles = sorted(codes), sorted(profiles)
        parts = self.settings.partitions
        async with self.client.pipeline(transaction=False) as pipe:
            for code in ordered_codes:
                pipe.get(partition_for(code, parts).read_model(generation).code(code))
            for profile in ordered_profiles:
                pipe.get(partition_for(profile, parts).read_model(generation).profile(profile))
            replies = await pipe.execute()
        found = _parsed(ordered_codes, replies, CodeView.from_bytes)
        models = _parsed(ordered_profiles, replies[len(ordered_codes) :], ProfileModel.from_bytes)
        return found, models


async def member_codes(
    client: aioredis.Redis, keys: ReadModelKeys, member: MemberView
) -> list[CodeView]:
    """Every code the member minted, newest first (their entries, then the codes)."""
    entry_keys = [keys.member_code(member.member_id, i) for i in range(member.codes_minted)]
    entries = await _get_many(client, reversed(entry_keys), MemberCode.from_bytes)
    return await _get_many(client, [keys.code(e.code) for e in entries], CodeView.from_bytes)


async def deleted_summaries(
    client: aioredis.Redis, keys: ReadModelKeys, member: MemberView
) -> dict[str, ProfileSummary]:
    """Every profile the member deleted, with its summary when it was deleted."""
    deletion_keys = [
        keys.member_deletion(member.member_id, i) for i in range(member.profiles_deleted)
    ]
    deletions = await _get_many(client, deletion_keys, MemberDeletion.from_bytes)
    return await summaries(client, keys, {d.profile_id for d in deletions})


async def summaries(
    client: aioredis.Redis, keys: ReadModelKeys, profile_ids: Iterable[str]
) -> dict[str, ProfileSummary]:
    """The summaries deleted profiles keep on their models (active ones have none there)."""
    ordered = sorted(profile_ids)
    models = await _get_many(client, [keys.profile(p) for p in ordered], ProfileModel.from_bytes)
    return {model.profile_id: model.summary for model in models if model.summary}


async def _get_many(
    client: aioredis.Redis, keys: Iterable[str], parse: Callable[[bytes], T]
) -> list[T]:
    """The values of ``keys`` that exist, parsed, in order (one slot: the member's partition)."""
    ordered = list(keys)
    found: list[T] = []
    for start in range(0, len(ordered), CHUNK):
        replies: list[Any] = await client.mget(ordered[start : start + CHUNK])
        found += [parse(raw) for raw in replies if raw is not None]
    return found


def _parsed(
    names: Sequence[str], replies: Sequence[Any], parse: Callable[[bytes], T]
) -> dict[str, T]:
    return {name: parse(raw) for name, raw in zip(names, replies, strict=False) if raw}


def _failure(code: str, message: str, token: str = "", position: int = -1) -> ResolveResponse:
    error = ResolveError(code=code, message=message, token=token, position=position)
    return ResolveResponse(ok=False, error=error)


def _invalid(error: ValidationError) -> ResolveResponse:
    where, message = invalid(error)
    return _failure("INVALID_REQUEST", message, where)
