"""The whole system as processes under ACL users, on the suite's server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.supervisor import Stack

ENV = {"PZ_PARTITIONS": "2", "PZ_EMBED_DIM": "16", "PZ_UNLOCK_V7": "6", "PZ_MINT_EVERY": "6"}


@pytest.fixture
def stack(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("REDIS_URL", redis_url)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    running = Stack(tmp_path, quiet=True, acl=True)
    try:
        running.start(timeout=60)
        yield running
    finally:
        running.stop()
