"""Settings shared by every service, read once from the environment (prefix ``PZ_``)."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    """Every knob of the system; each field is read from ``PZ_<NAME>`` (``REDIS_URL`` as is)."""

    model_config = ConfigDict(frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    partitions: int = Field(default=4, ge=1, le=1024)
    embed_dim: int = Field(default=256, ge=2, le=4096)
    unlock_v7: int = Field(default=40, ge=1)
    unlock_v6: int = Field(default=40, ge=1)
    mint_every: int = Field(default=25, ge=1, description="signals after which a new code is due")
    mint_drift: float = Field(default=0.05, gt=0, le=2, description="cosine distance that is due")
    mint_min_signals: int = Field(default=3, ge=1, description="never mint more often than this")
    idempotency_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    max_deliveries: int = Field(default=5, ge=1, description="attempts before dead-lettering")
    claim_idle_ms: int = Field(default=10_000, ge=100, description="idle time before takeover")
    batch_size: int = Field(default=64, ge=1, le=10_000)
    grids_kept: int = Field(default=64, ge=1, description="open grids remembered per member")
    max_prompt_length: int = Field(default=6000, ge=10)
    max_p_values: int = Field(default=10, ge=1)
    max_message_bytes: int = Field(default=256 * 1024, ge=1024, description="inbox entry cap")
    receipt_ttl_s: int = Field(default=60, ge=1, description="how long a receipt waits")
    dead_letters_kept: int = Field(default=100_000, ge=100, description="per partition (~)")
    generation_grace_s: float = Field(default=10.0, ge=0, description="before an old one drops")
    replica: str = Field(default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, str] = {}
        if "REDIS_URL" in env:
            values["redis_url"] = env["REDIS_URL"]
        for name in cls.model_fields:
            key = f"PZ_{name.upper()}"
            if key in env:
                values[name] = env[key]
        return cls.model_validate(values)

    def unlock_threshold(self, family: str) -> int:
        return self.unlock_v6 if family == "v6" else self.unlock_v7


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()
