"""The contract every read-model store keeps (``shared.domain.ports.ReadModels``).

Subclassed once per implementation (``tests/unit/test_read_models.py``: in memory;
``tests/integration/test_read_models.py``: a real server), which provides the ``models``
fixture and the few hooks below that reach past the port: putting images in the catalog,
reading the change stream, switching generations, reopening the store without caches.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import pytest

from shared.adapters.catalog import catalog_entry
from shared.adapters.readmodels import KeyedReadModels
from shared.domain import events as ev
from shared.domain.partitions import partition_of
from shared.domain.projection import Changed, ProfileChange
from shared.domain.views import MemberCode, MemberDeletion, PriorView, ProfileModel
from shared.settings import Settings
from shared.taste.learner import TasteLearner
from shared.taste.prior import TastePrior
from tests.unit.builders import code_view, member_view, summary

DIM = 4
SETTINGS = Settings(partitions=2, embed_dim=DIM)
UNINFORMED = TastePrior.uninformed(DIM).fingerprint()


def home(member_id: str) -> int:
    return partition_of(member_id, SETTINGS.partitions)


def named(partition: int, prefix: str, count: int = 1) -> list[str]:
    """``count`` IDs starting with ``prefix`` that live in ``partition``."""
    found = (f"{prefix}{i}" for i in range(1000))
    return [name for name in found if home(name) == partition][:count]


def changed(**fields: Any) -> Changed:
    empty: dict[str, Any] = {"members": {}, "profiles": {}, "codes": {}, "member_codes": (),
                             "deletions": (), "priors": {}, "current_prior": None,
                             "profile_changes": ()}  # fmt: skip
    return Changed(**(empty | fields))


def change(member_id: str, profile_id: str, evidence: int, position: str) -> ProfileChange:
    return ProfileChange(
        member_id=member_id, profile_id=profile_id, name="Mine", family="v7", version="7",
        evidence=evidence, picks=evidence, unlocked=True,
        vector=np.array([0.6, 0.8, 0.0, 0.0]), position=position,
    )  # fmt: skip


def learned(profile_id: str, member_id: str, prior_id: str, prior: TastePrior) -> ProfileModel:
    learner = TasteLearner(prior)
    learner.observe_pair(np.array([1.0, 0.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0, 0.0]))
    state = base64.b64encode(learner.state()).decode()
    return ProfileModel(profile_id=profile_id, member_id=member_id, state=state, prior=prior_id)


def a_prior() -> TastePrior:
    rows = np.random.default_rng(3).normal(size=(20, DIM))
    return TastePrior.from_catalog(rows / np.linalg.norm(rows, axis=1, keepdims=True), rank=2)


class ReadModelsContract(ABC):
    """What a read-model store must do, whatever it stores in."""

    @abstractmethod
    async def add_image(self, models: KeyedReadModels, image_id: str, stored: bytes) -> None:
        """Put an image's stored embedding (the catalog's ``emb``) in the catalog."""

    @abstractmethod
    async def emitted(self, models: KeyedReadModels, partition: int) -> list[bytes]:
        """The partition's change stream."""

    @abstractmethod
    async def activate(self, models: KeyedReadModels, generation: int) -> None: ...

    @abstractmethod
    def reopened(self, models: KeyedReadModels) -> KeyedReadModels:
        """The same store, seen through fresh caches."""

    async def test_a_fresh_store_has_nothing_and_knows_the_uninformed_prior(
        self, models: KeyedReadModels
    ) -> None:
        found = await models.read(members=["ann"], profiles=["p1"], codes=["c1"])
        assert (found.members, found.profiles, found.codes) == ({}, {}, {})
        assert await models.position(0) == "0-0"
        assert await models.current_prior(0) == ""
        assert (await models.priors(0, [""]))[""].fingerprint() == UNINFORMED
        assert await models.member_codes(member_view("ann")) == []
        assert await models.snapshot(0) == {}
        assert await models.active_generation() == 1
        with pytest.raises(ValueError, match="catalog is empty"):
            await models.catalog_sample(10)

    async def test_a_commit_stores_every_model_and_the_position_in_one_step(
        self, models: KeyedReadModels
    ) -> None:
        [ann] = named(0, "ann")
        [p1, p2] = named(0, "p", 2)
        [c1, c2] = named(0, "c", 2)
        view = member_view(ann, summary(p1)).model_copy(update={"codes_minted": 2})
        view = view.model_copy(update={"profiles_deleted": 1, "position": "3-0"})
        codes = {
            c: code_view(c, profile_id=p1, member_id=ann, vector=np.ones(DIM)) for c in (c1, c2)
        }
        batch = changed(
            members={ann: view},
            profiles={p1: ProfileModel(profile_id=p1, member_id=ann, position="2-0")},
            codes=codes,
            member_codes=[MemberCode(member_id=ann, index=i, code=c, position="3-0")
                          for i, c in enumerate((c1, c2))],
            deletions=[MemberDeletion(member_id=ann, index=0, profile_id=p2, position="3-0")],
        )  # fmt: skip
        assert await models.commit(0, "0-0", "3-0", batch, emit_changes=False)
        assert await models.position(0) == "3-0"
        found = await models.read(members=[ann], profiles=[p1, p2], codes=[c1, c2, "nope"])
        assert found.members == {ann: view}
        assert found.profiles == batch.profiles and found.codes == codes
        assert [c.code for c in await models.member_codes(view)] == [c2, c1], "newest first"
        assert [d.profile_id for d in await models.deletions(view)] == [p2]
        stored = await models.snapshot(0)
        assert stored[f":member:{ann}"] == view.to_bytes()
        assert len(stored) == 1 + 1 + 2 + 2 + 1, "member, profile, codes, code and deletion entries"
        assert await self.emitted(models, 0) == []

    async def test_a_commit_from_a_stale_position_stores_nothing(
        self, models: KeyedReadModels
    ) -> None:
        [ann] = named(0, "ann")
        first = changed(members={ann: member_view(ann)})
        assert await models.commit(0, "0-0", "1-0", first, emit_changes=True)
        later = changed(
            members={ann: member_view(ann, personalization=True)},
            profile_changes=[change(ann, "p1", 3, "2-0")],
        )
        assert not await models.commit(0, "0-0", "2-0", later, emit_changes=True)
        assert await models.position(0) == "1-0"
        assert (await models.read(members=[ann])).members[ann] == member_view(ann)
        assert await self.emitted(models, 0) == []

    async def test_profile_changes_are_emitted_in_order_and_read_back_alike(
        self, models: KeyedReadModels
    ) -> None:
        changes = [change("ann", "p1", 3, "1-0"), change("ann", "p2", 4, "1-0")]
        assert await models.commit(1, "0-0", "1-0", changed(profile_changes=changes), True)
        assert await models.commit(1, "1-0", "2-0", changed(profile_changes=changes), False)
        stream = [ProfileChange.from_bytes(raw) for raw in await self.emitted(models, 1)]
        assert [(c.profile_id, c.evidence) for c in stream] == [("p1", 3), ("p2", 4)]
        assert np.array_equal(stream[0].vector, changes[0].vector)
        assert await self.emitted(models, 0) == []

    async def test_reads_span_partitions_and_generations_are_apart(
        self, models: KeyedReadModels
    ) -> None:
        [ann], [bob] = named(0, "ann"), named(1, "bob")
        assert await models.commit(0, "0-0", "1-0", changed(members={ann: member_view(ann)}), False)
        assert await models.commit(1, "0-0", "5-0", changed(members={bob: member_view(bob)}), False)
        assert set((await models.read(members=[ann, bob])).members) == {ann, bob}
        assert (await models.read(members=[ann, bob], partition=1)).members.keys() == {bob}
        other = models.at(2)
        assert other.generation == 2 and await other.position(1) == "0-0"
        assert (await other.read(members=[ann, bob])).members == {}
        await self.activate(models, 2)
        assert await models.active_generation() == 2 == await other.active_generation()

    async def test_priors_are_read_by_model_id_and_the_current_one_by_partition(
        self, models: KeyedReadModels
    ) -> None:
        prior = a_prior()
        published = PriorView(model_id="m1", position="1-0")
        batch = changed(priors={"m1": prior}, current_prior=published)
        assert await models.commit(0, "0-0", "1-0", batch, False)
        for store in (models, self.reopened(models)):
            assert await store.current_prior(0) == "m1" and await store.current_prior(1) == ""
            found = await store.priors(0, ["m1", ""])
            assert found["m1"].fingerprint() == prior.fingerprint()
            assert found[""].fingerprint() == UNINFORMED
            with pytest.raises(LookupError, match="prior m9"):
                await store.priors(0, ["m9"])

    async def test_a_profile_learner_comes_from_its_model_or_from_the_current_prior(
        self, models: KeyedReadModels
    ) -> None:
        prior = a_prior()
        [ann] = named(0, "ann")
        [p1, p2] = named(0, "p", 2)
        model = learned(p1, ann, "m1", prior)
        untaught = ProfileModel(profile_id=p2, member_id=ann, prior="m1")
        batch = changed(profiles={p1: model, p2: untaught}, priors={"m1": prior},
                        current_prior=PriorView(model_id="m1", position="1-0"))  # fmt: skip
        assert await models.commit(0, "0-0", "1-0", batch, False)
        learner = await models.learner(0, p1)
        assert learner.evidence == 1 and learner.state() == base64.b64decode(model.state)
        fresh = await models.learner(0, None)
        assert fresh.evidence == 0 and fresh.prior.fingerprint() == prior.fingerprint()
        assert (await models.learner(1, None)).prior.fingerprint() == UNINFORMED
        [only] = await models.learners(0)
        assert only.state() == learner.state(), "profiles without a signal have no learner"

    async def test_embeddings_are_the_catalog_vectors_and_never_change_once_read(
        self, models: KeyedReadModels
    ) -> None:
        vectors = {"i1": [3.0, 4.0, 0.0, 0.0], "i2": [0.0, 0.0, 1.0, 1.0]}
        for image_id, vector in vectors.items():
            await self.add_image(models, image_id, _stored(image_id, vector))
        found = await models.embeddings(["i1", "i2", "i1"])
        assert set(found) == {"i1", "i2"} and found["i1"].dtype == np.float64
        assert np.allclose(found["i1"], [0.6, 0.8, 0.0, 0.0])
        with pytest.raises(LookupError, match=r"'i3' .*not in the catalog"):
            await models.embeddings(["i1", "i3"])
        sample = await models.catalog_sample(10)
        assert sample.shape == (2, DIM) and np.allclose(sample[1], found["i2"])
        assert (await models.catalog_sample(1)).shape == (1, DIM)


def _stored(image_id: str, vector: list[float]) -> bytes:
    event = ev.ImageRegistered(image_id=image_id, model_version="7", embedding=vector)
    stored: bytes = catalog_entry(event, "artist", f"artist|{image_id}")["emb"]
    return stored
