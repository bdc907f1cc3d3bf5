"""The receipt ingest pushes for every message it can address: what became of it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Status = Literal["accepted", "ignored", "duplicate", "rejected"]


class Receipt(BaseModel):
    """Pushed to ``pz:{pN}:receipt:<member_id>|<idempotency_key>`` (N: the partition of the
    inbox the message was published to) once its events are in the log and its images can be
    shown; kept ``PZ_RECEIPT_TTL_S``. Wait for it with ``BLPOP``; without one, send again."""

    schema_version: int = 1
    status: Status = Field(
        description="accepted: appended; ignored: valid, nothing to append; duplicate: this "
        "key was already appended with this very message; rejected: dead-lettered"
    )
    entry_ids: list[str] = Field(default=[], description="the log entries it appended")
    code: str | None = Field(default=None, description="rejected: the dead letter's code")
    reason: str | None = Field(default=None, description="rejected: what was wrong")
    field: str | None = Field(default=None, description="rejected: the field at fault")

    def body_without_entries(self) -> str:
        """Its JSON without ``entry_ids`` and the closing brace, for the IDs the log gives."""
        return self.model_dump_json(exclude_none=True, exclude={"entry_ids"})[:-1]
