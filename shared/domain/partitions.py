"""Which partition a handle belongs to: a rule of the contract, not of the key layout."""

from __future__ import annotations

import zlib


def partition_of(key: str, partitions: int) -> int:
    """The partition of a member ID, profile ID or code: ``crc32(utf8) % partitions``."""
    return zlib.crc32(key.encode()) % partitions
