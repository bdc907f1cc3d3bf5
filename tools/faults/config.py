"""What one fault run does: the load, the faults and the services' settings."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from shared.settings import Settings

Say = Callable[[str], None]


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class FaultConfig:
    """One fault run: the load, the faults, and the service settings (``PZ_*``)."""

    events: int = 50_000
    members: int = 20
    rate: float = 1000.0
    duration: float | None = None
    faults: int = 20
    server_restarts: int = 1
    replicas: int = 2
    seed: int = 7
    partitions: int = 4
    embed_dim: int = 16
    unlock: int = 10
    mint_every: int = 10
    claim_idle_ms: int = 1500
    batch_size: int = 64
    invalid_share: float = 0.03
    resend_share: float = 0.05
    images_v7: int = 6
    images_v6: int = 3
    acl: bool = True
    pauses: int = 2
    extreme_images: bool = True
    restore: bool = True
    drain_timeout: float = 600.0
    stall_s: float = 120.0
    quiet_s: float = 2.0

    def env(self) -> dict[str, str]:
        """The ``PZ_*`` variables the service processes must see (they inherit os.environ)."""
        return {
            "PZ_PARTITIONS": str(self.partitions),
            "PZ_EMBED_DIM": str(self.embed_dim),
            "PZ_UNLOCK_V7": str(self.unlock),
            "PZ_UNLOCK_V6": str(self.unlock),
            "PZ_MINT_EVERY": str(self.mint_every),
            "PZ_CLAIM_IDLE_MS": str(self.claim_idle_ms),
            "PZ_BATCH_SIZE": str(self.batch_size),
        }

    def settings(self, url: str) -> Settings:
        return Settings(
            redis_url=url,
            partitions=self.partitions,
            embed_dim=self.embed_dim,
            unlock_v7=self.unlock,
            unlock_v6=self.unlock,
            mint_every=self.mint_every,
            claim_idle_ms=self.claim_idle_ms,
            batch_size=self.batch_size,
            replica="fault-harness",
        )

    @property
    def window(self) -> float:
        """Seconds the publishing should take at the steady rate (the fault window)."""
        planned = self.events / self.rate
        return min(planned, self.duration) if self.duration else planned
