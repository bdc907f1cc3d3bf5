"""prompt-resolver's adapter: fetch the read models a prompt needs, then resolve purely."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError

from shared.adapters.generation import read_generation
from shared.domain.listing import Listing, ListRequest, listing
from shared.domain.resolution import (
    ResolveError,
    ResolveRequest,
    ResolveResponse,
    lookups,
    resolve,
)
from shared.domain.rpc import invalid
from shared.domain.views import CodeView, MemberView, ProfileModel
from shared.keys import partition_for
from shared.prompt.grammar import PromptError, parse_prompt
from shared.settings import Settings

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
        codes, owners = await self._fetch(wanted.codes, wanted.profiles, generation)
        members = [member] if member else []
        members += await self._owners(codes, request.member_id, generation)
        deleted = frozenset(
            pid for view in members for pid, profile in view.profiles.items() if profile.deleted
        )
        return resolve(parsed, request.member_id, member, codes, owners, deleted, self.needed)

    async def list_profiles(self, body: Any) -> Listing | ResolveResponse:
        try:
            request = ListRequest.model_validate(body)
        except ValidationError as error:
            return _invalid(error)
        generation = await self.generation()
        member = await self._member(request.member_id, generation)
        codes, _ = await self._fetch(set(member.codes) if member else set(), set(), generation)
        return listing(request.member_id, member, codes, request.include_deleted)

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
        self, codes: dict[str, CodeView], member_id: str, generation: int
    ) -> list[MemberView]:
        """The member views of the owners of other members' codes (to warn of deletions)."""
        owners = sorted({view.member_id for view in codes.values()} - {member_id})
        if not owners:
            return []
        parts = self.settings.partitions
        keys = [partition_for(o, parts).read_model(generation).member(o) for o in owners]
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            replies = await pipe.execute()
        return [MemberView.from_bytes(raw) for raw in replies if raw]

    async def _fetch(
        self, codes: set[str], profiles: set[str], generation: int
    ) -> tuple[dict[str, CodeView], dict[str, str]]:
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
        found = {
            code: CodeView.from_bytes(raw)
            for code, raw in zip(ordered_codes, replies, strict=False)
            if raw
        }
        owners = {
            profile: ProfileModel.from_bytes(raw).member_id
            for profile, raw in zip(ordered_profiles, replies[len(ordered_codes) :], strict=True)
            if raw
        }
        return found, owners


def _failure(code: str, message: str, token: str = "", position: int = -1) -> ResolveResponse:
    error = ResolveError(code=code, message=message, token=token, position=position)
    return ResolveResponse(ok=False, error=error)


def _invalid(error: ValidationError) -> ResolveResponse:
    where, message = invalid(error)
    return _failure("INVALID_REQUEST", message, where)
