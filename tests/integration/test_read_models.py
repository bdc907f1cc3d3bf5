"""The read-model contract, against a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.adapters.readmodels import KeyedReadModels, RedisReadModels
from shared.keys import ACTIVE_GENERATION, Partition, image_key
from tests.readmodels_contract import SETTINGS, ReadModelsContract


class TestRedisReadModels(ReadModelsContract):
    @pytest.fixture
    async def models(self, redis_url: str) -> AsyncIterator[RedisReadModels]:
        client = aioredis.Redis.from_url(redis_url)
        yield RedisReadModels(client, SETTINGS)
        await client.aclose()

    async def add_image(self, models: KeyedReadModels, image_id: str, stored: bytes) -> None:
        await self._client(models).hset(image_key(image_id), "emb", stored)

    async def emitted(self, models: KeyedReadModels, partition: int) -> list[bytes]:
        entries: Any = await self._client(models).xrange(Partition(partition).changes)
        return [fields[b"change"] for _, fields in entries]

    async def activate(self, models: KeyedReadModels, generation: int) -> None:
        await self._client(models).set(ACTIVE_GENERATION, generation)

    def reopened(self, models: KeyedReadModels) -> KeyedReadModels:
        return RedisReadModels(self._client(models), SETTINGS, models.generation)

    @staticmethod
    def _client(models: KeyedReadModels) -> aioredis.Redis:
        assert isinstance(models, RedisReadModels)
        return models.client
