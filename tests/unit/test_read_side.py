"""profile-projector and prompt-resolver over in-memory read models: the application layer
without a server (the same store contract holds for Redis: tests/readmodels_contract.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from services.profile_projector.projector import Projector
from services.prompt_resolver.resolver import Resolver
from shared.adapters.follower import Entry
from shared.adapters.readmodels import InMemoryReadModels
from shared.domain import events as ev
from shared.domain.codes import derive_code
from shared.domain.listing import Listing, ListRequest
from shared.domain.partitions import partition_of
from shared.domain.projection import ProfileChange
from shared.domain.resolution import ResolveRequest
from shared.keys import Partition
from shared.settings import Settings
from tests.unit.builders import DIM, EMBEDDINGS, Journal, logged, minted, position

SETTINGS = Settings(partitions=2, embed_dim=DIM, unlock_v6=3, unlock_v7=3)
HOME = partition_of("alice", SETTINGS.partitions)


def homed_ids() -> Journal:
    """Alice's journal, her profile IDs in her partition as ingest mints them."""
    ids = (f"prof{n}" for n in itertools.count(1))
    home = (i for i in ids if partition_of(i, SETTINGS.partitions) == HOME)
    return Journal(new_id=lambda: next(home))


def entries(events: list[ev.LoggedEvent], start: int = 0) -> list[Entry]:
    return [(position(start + i), {b"event": e.to_bytes()}) for i, e in enumerate(events)]


@pytest.fixture
def models() -> InMemoryReadModels:
    store = InMemoryReadModels(SETTINGS)
    for image_id, vector in EMBEDDINGS.items():
        store.catalog[image_id] = vector.astype("<f4").tobytes()
    return store


async def test_a_projected_unlock_emits_its_change_and_a_redelivery_changes_nothing(
    models: InMemoryReadModels,
) -> None:
    alice = homed_ids()
    profile_id = alice.unlock_global()
    projector = Projector(models, SETTINGS)
    batch = entries(alice.log)
    assert await projector.apply(Partition(HOME), "0-0", batch)
    assert await models.position(HOME) == batch[-1][0]
    [*_, change] = [ProfileChange.from_bytes(raw) for raw in models.changes[HOME]]
    assert (change.profile_id, change.picks, change.unlocked) == (profile_id, 3, True)
    stored = dict(models.stored)
    assert not await Projector(models, SETTINGS).apply(Partition(HOME), "0-0", batch)
    assert models.stored == stored


async def test_the_resolver_answers_from_what_the_projector_committed(
    models: InMemoryReadModels,
) -> None:
    alice = homed_ids()
    profile_id = alice.unlock_global()
    code = derive_code(profile_id, 3, HOME, SETTINGS.partitions)
    events = [*alice.log, logged(minted(code, profile_id, "Global V7 Profile"), "alice", 9)]
    assert await Projector(models, SETTINGS).apply(Partition(HOME), "0-0", entries(events))
    resolver = Resolver(models, SETTINGS)
    reply = await resolver.resolve(ResolveRequest(member_id="alice", prompt=f"a cat --p {code}"))
    assert reply.ok and [e.code for e in reply.entries] == [code], reply.error
    assert reply.vector is not None and np.allclose(reply.vector, [1.0, 0.0, 0.0, 0.0])
    listing = await resolver.list_profiles({"member_id": "alice"})
    assert isinstance(listing, Listing)
    assert [p.latest_code for p in listing.profiles] == [code]
    assert [c.code for c in listing.codes] == [code]
    unknown = await resolver.list_profiles(ListRequest(member_id="nobody").model_dump())
    assert isinstance(unknown, Listing) and unknown.profiles == []


async def test_a_following_projector_moves_to_the_generation_a_replay_switched_to(
    models: InMemoryReadModels,
) -> None:
    alice = homed_ids()
    alice.unlock_global()
    projector = Projector(models, SETTINGS, follow_active=True)
    first = entries(alice.log[:1])
    assert await projector.apply(Partition(HOME), "0-0", first)
    models.activate(2)
    assert not await projector.apply(Partition(HOME), first[-1][0], entries(alice.log[1:], 1))
    assert projector.position_key(Partition(HOME)) == models.at(2).position_key(HOME)
    assert await projector.apply(Partition(HOME), "0-0", entries(alice.log))
    assert await models.at(2).position(HOME) == position(len(alice.log) - 1)
    assert await models.position(HOME) == first[-1][0], "generation 1 stays where it was"
