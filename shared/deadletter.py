"""Dead letters: what could not be processed, with the original message and the reason."""

from __future__ import annotations

import base64
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class DeadLetter(BaseModel):
    """One entry of a partition's dead-letter stream (field ``dead``, JSON).

    For an oversized message only a prefix of the original is kept, with ``original_size``
    and ``original_sha1`` of the whole."""

    model_config = ConfigDict(frozen=True)

    service: str
    source: str
    entry_id: str
    code: str
    reason: str
    field: str | None = None
    deliveries: int = 1
    original: str | None = None
    original_base64: str | None = None
    original_size: int | None = None
    original_sha1: str | None = None
    at: datetime

    @classmethod
    def of(cls, original: bytes | None, **fields: object) -> DeadLetter:
        if original is None:
            return cls.model_validate(fields)
        try:
            return cls.model_validate({**fields, "original": original.decode()})
        except UnicodeDecodeError:
            encoded = base64.b64encode(original).decode()
            return cls.model_validate({**fields, "original_base64": encoded})

    @property
    def truncated(self) -> bool:
        """Only a prefix of an oversized original was kept (with its size and SHA-1)."""
        return self.original_sha1 is not None

    def original_bytes(self) -> bytes:
        if self.original_base64 is not None:
            return base64.b64decode(self.original_base64)
        return (self.original or "").encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()
