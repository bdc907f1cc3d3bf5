"""The read-model contract, in memory."""

from __future__ import annotations

import pytest

from shared.adapters.readmodels import InMemoryReadModels, KeyedReadModels, LruCache
from tests.readmodels_contract import SETTINGS, ReadModelsContract


class TestInMemoryReadModels(ReadModelsContract):
    @pytest.fixture
    def models(self) -> InMemoryReadModels:
        return InMemoryReadModels(SETTINGS)

    async def add_image(self, models: KeyedReadModels, image_id: str, stored: bytes) -> None:
        assert isinstance(models, InMemoryReadModels)
        models.catalog[image_id] = stored

    async def emitted(self, models: KeyedReadModels, partition: int) -> list[bytes]:
        assert isinstance(models, InMemoryReadModels)
        return models.changes[partition]

    async def activate(self, models: KeyedReadModels, generation: int) -> None:
        assert isinstance(models, InMemoryReadModels)
        models.activate(generation)

    def reopened(self, models: KeyedReadModels) -> KeyedReadModels:
        assert isinstance(models, InMemoryReadModels)
        fresh = InMemoryReadModels(SETTINGS, models.generation)
        fresh.stored, fresh.catalog, fresh.changes = models.stored, models.catalog, models.changes
        return fresh


def test_the_cache_keeps_the_most_recently_used_values_up_to_its_limit() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)
