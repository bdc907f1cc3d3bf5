"""Codes: 7 lowercase letters and digits, derived from the profile state they label.

The same (profile, evidence) always derives the same candidates, so minting one state
twice cannot create two codes; a salt walks past codes that are taken or that would land
in another partition (a code's partition is ``partition_of(code)``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import numpy as np

from shared.taste.minting import cosine_distance, should_mint

from .partitions import partition_of

__all__ = ["cosine_distance", "mint_due"]

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
CODE_LENGTH = 7


def candidate(profile_id: str, evidence: int, salt: int) -> str:
    digest = hashlib.sha256(f"{profile_id}|{evidence}|{salt}".encode()).digest()
    number = int.from_bytes(digest[:8], "big")
    chars = []
    for _ in range(CODE_LENGTH):
        number, index = divmod(number, len(ALPHABET))
        chars.append(ALPHABET[index])
    return "".join(chars)


MAX_SALT = 100_000


def candidates(profile_id: str, evidence: int, partition: int, partitions: int) -> Iterator[str]:
    """This state's candidate codes that live in ``partition``, in their fixed order."""
    for salt in range(MAX_SALT):
        code = candidate(profile_id, evidence, salt)
        if partition_of(code, partitions) == partition:
            yield code


def derive_code(
    profile_id: str,
    evidence: int,
    partition: int,
    partitions: int,
    taken: Callable[[str], bool] = lambda code: False,
) -> str:
    """The first candidate for this state that lives in ``partition`` and is not taken."""
    for code in candidates(profile_id, evidence, partition, partitions):
        if not taken(code):
            return code
    raise RuntimeError(f"no free code for profile {profile_id!r} at evidence {evidence}")


def mint_due(
    last_evidence: int | None,
    last_vector: np.ndarray | None,
    evidence: int,
    vector: np.ndarray,
    every: int,
    drift: float,
    min_signals: int = 1,
) -> bool:
    """A new code is due for an unlocked profile when it has none yet, when ``every`` new
    signals arrived since the last one, or when its taste moved ``drift`` (cosine distance)
    after at least ``min_signals`` new signals (:func:`shared.taste.minting.should_mint`)."""
    since = evidence - (last_evidence or 0)
    return should_mint(
        None if last_evidence is None else last_vector,
        vector,
        since,
        min_distance=drift,
        max_signals=every,
        min_signals=min_signals,
    )
