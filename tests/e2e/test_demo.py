"""``make demo`` against a running system, twice: the second run once crashed (its grids
showed the first run's images, which its simulated members did not know)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.supervisor import Stack

pytestmark = pytest.mark.e2e
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


@pytest.mark.timeout(180)
def test_the_demo_runs_again_and_again_on_one_system(stack: Stack) -> None:
    for run in range(2):
        demo = subprocess.run(
            [sys.executable, "-m", "services.demo", "--images", "60", "--seed", str(run)],
            env={**os.environ, "REDIS_URL": stack.url}, capture_output=True, text=True,
            timeout=150,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
        assert "60 registrations accepted" in demo.stdout
        assert "error PROFILE_LOCKED" in demo.stdout, "dave stays locked"
        assert demo.stdout.count("-> a lighthouse at dusk --p ") == 1, demo.stdout[-2000:]
