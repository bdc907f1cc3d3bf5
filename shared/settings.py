"""Settings shared by every service, read once from the environment (prefix ``PZ_``)."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.member import Rules

RUN_FILE = "data/run.json"


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
        """Read the settings. Without ``REDIS_URL``, the process environment (or an ``env``
        naming ``PZ_RUN_FILE``) means the system ``make run`` started: its ``data/run.json``
        gives the server (as the admin user) and the partition count, so that ops tools act
        on the running system rather than on whatever listens on port 6379."""
        consult_run_file = env is None or "PZ_RUN_FILE" in env
        env = dict(os.environ if env is None else env)
        values: dict[str, str] = {}
        if "REDIS_URL" in env:
            values["redis_url"] = env["REDIS_URL"]
        elif consult_run_file and (running := running_system(env)) is not None:
            values["redis_url"] = str(running["redis_url"])
            if "PZ_PARTITIONS" not in env and "partitions" in running:
                values["partitions"] = str(running["partitions"])
        for name in cls.model_fields:
            key = f"PZ_{name.upper()}"
            if key in env:
                values[name] = env[key]
        return cls.model_validate(values)

    def unlock_threshold(self, family: str) -> int:
        return self.unlock_v6 if family == "v6" else self.unlock_v7

    def rules(self) -> Rules:
        """The member rules ingest decides with under these settings."""
        return Rules(
            unlock={"v6": self.unlock_v6, "v7": self.unlock_v7},
            embed_dim=self.embed_dim,
            grids_kept=self.grids_kept,
        )


def run_file(env: dict[str, str] | None = None) -> Path:
    """Where ``make run`` describes the running system (``PZ_RUN_FILE``, default
    ``data/run.json``): its admin ``redis_url``, ``publisher_url`` and ``partitions``."""
    return Path((os.environ if env is None else env).get("PZ_RUN_FILE", RUN_FILE))


def running_system(env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The contents of the run file, or ``None`` when no system is running (or it is unreadable)."""
    try:
        found = json.loads(run_file(env).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and "redis_url" in found else None


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()
