"""``make demo`` against a running system, twice: the second run once crashed (its grids
showed the first run's images, which its simulated members did not know)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tools.supervisor import Stack

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(180)
def test_the_demo_runs_again_and_again_on_one_system(stack: Stack) -> None:
    for run in range(2):
        demo = subprocess.run(
            [sys.executable, "-m", "tools.demo", "--images", "60", "--seed", str(run)],
            env={**os.environ, "REDIS_URL": stack.url}, capture_output=True, text=True,
            timeout=150,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
        assert "60 registrations accepted" in demo.stdout
        assert "error PROFILE_LOCKED" in demo.stdout, "dave stays locked"
        assert demo.stdout.count("-> a lighthouse at dusk --p ") == 1, demo.stdout[-2000:]
