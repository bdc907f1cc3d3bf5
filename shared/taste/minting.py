"""When a profile's taste has changed enough to deserve a new immutable code.

Pure rule, no I/O: the code-minter calls it with the vector of the profile's last code, the
current vector and how many signals (picks, pairs, likes) arrived since that code.
"""

from __future__ import annotations

import numpy as np

from shared.taste.vectors import unit

#: Mint when the taste direction moved by at least this cosine distance since the last code.
DEFAULT_MIN_DISTANCE = 0.05
#: ... or when this many new signals arrived (steady refinement still gets a code).
DEFAULT_MAX_SIGNALS = 25
#: Never mint more often than every this many signals (no code per pick).
DEFAULT_MIN_SIGNALS = 3


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cos(a, b), exact for tiny and huge components alike; 1.0 if either vector is zero
    or not finite (no direction to compare)."""
    try:
        cos = unit(np.reshape(a, -1)) @ unit(np.reshape(b, -1))
    except ValueError:
        return 1.0
    return float(1.0 - np.clip(cos, -1.0, 1.0))


def should_mint(
    last_vector: np.ndarray | None,
    vector: np.ndarray,
    picks_since_last: int,
    *,
    min_distance: float = DEFAULT_MIN_DISTANCE,
    max_signals: int = DEFAULT_MAX_SIGNALS,
    min_signals: int = DEFAULT_MIN_SIGNALS,
) -> bool:
    """Whether to mint a new code for a (unlocked) profile now.

    ``last_vector`` is the taste vector of the profile's latest code (None if it has none:
    the first code is minted as soon as there is any new signal).
    """
    if picks_since_last <= 0:
        return False
    if not np.isfinite(np.asarray(vector, dtype=np.float64)).all():
        return False
    if last_vector is None:
        return True
    if picks_since_last < min_signals:
        return False
    if picks_since_last >= max_signals:
        return True
    return cosine_distance(last_vector, vector) >= min_distance
