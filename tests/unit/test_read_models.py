"""The read-model contract, in memory."""

from __future__ import annotations

import pytest

from shared.adapters.readmodels import InMemoryReadModels, KeyedReadModels
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
