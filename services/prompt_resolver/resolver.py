"""prompt-resolver's adapter: fetch the read models a prompt needs, then resolve purely.

What a resolve reads is bounded: the member's view (active profiles only), the codes and
profile IDs the prompt names, and, to tell whether a code's profile was deleted, its owner's
view or (for the member's own codes of inactive profiles) the small model a deleted profile
leaves behind.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from shared.domain.listing import Listing, ListRequest, listing
from shared.domain.ports import ReadModels
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
from shared.domain.views import MemberView, ProfileSummary
from shared.prompt.grammar import PromptError, parse_prompt
from shared.settings import Settings

GENERATION_TTL_S = 1.0


class Resolver:
    def __init__(self, models: ReadModels, settings: Settings) -> None:
        self.models = models
        self.settings = settings
        self.needed = dict(settings.rules().unlock)
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
        store = self.models.at(await self.generation())
        member = await _member(store, request.member_id)
        wanted = lookups(parsed, member)
        found = await store.read(codes=wanted.codes, profiles=wanted.profiles)
        codes = found.codes
        more = followups(request.member_id, member, codes)
        owners = await store.read(members=more.members, profiles=more.profiles)
        models = {**found.profiles, **owners.profiles}
        foreign = {profile_id: model.member_id for profile_id, model in models.items()}
        deleted = deleted_profiles(request.member_id, codes, models, owners.members)
        return resolve(parsed, request.member_id, member, codes, foreign, deleted, self.needed)

    async def list_profiles(self, body: Any) -> Listing | ResolveResponse:
        try:
            request = ListRequest.model_validate(body)
        except ValidationError as error:
            return _invalid(error)
        store = self.models.at(await self.generation())
        member = await _member(store, request.member_id)
        if member is None:
            return listing(request.member_id, None, [], {}, request.include_deleted)
        codes = await store.member_codes(member)
        deleted = await deleted_summaries(store, member) if request.include_deleted else {}
        gone = {view.profile_id for view in codes} - member.profiles.keys() - deleted.keys()
        deleted |= await summaries(store, gone)
        return listing(request.member_id, member, codes, deleted, request.include_deleted)

    async def generation(self) -> int:
        value, fetched = self._generation
        if time.monotonic() - fetched > GENERATION_TTL_S:
            value = await self.models.active_generation()
            self._generation = (value, time.monotonic())
        return value


async def _member(store: ReadModels, member_id: str) -> MemberView | None:
    return (await store.read(members=[member_id])).members.get(member_id)


async def deleted_summaries(store: ReadModels, member: MemberView) -> dict[str, ProfileSummary]:
    """Every profile the member deleted, with its summary when it was deleted."""
    return await summaries(store, {d.profile_id for d in await store.deletions(member)})


async def summaries(store: ReadModels, profile_ids: Iterable[str]) -> dict[str, ProfileSummary]:
    """The summaries deleted profiles keep on their models (active ones have none there)."""
    found = await store.read(profiles=profile_ids)
    return {model.profile_id: model.summary for model in found.profiles.values() if model.summary}


def _failure(code: str, message: str, token: str = "", position: int = -1) -> ResolveResponse:
    error = ResolveError(code=code, message=message, token=token, position=position)
    return ResolveResponse(ok=False, error=error)


def _invalid(error: ValidationError) -> ResolveResponse:
    where, message = invalid(error)
    return _failure("INVALID_REQUEST", message, where)
