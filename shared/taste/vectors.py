"""Unit vectors that survive extreme but finite values.

A plain ``v / ||v||`` squares every component: values near 1e-170 underflow to a zero norm
and values near 1e170 overflow to an infinite one, and the result is nan, inf or zero.
Dividing by the largest magnitude first keeps every square in [0, 1].
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def scaled_norm(vector: ArrayLike) -> float:
    """The Euclidean norm without underflow or overflow in the squares (0.0 for zero)."""
    values = np.asarray(vector, dtype=np.float64)
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    if scale == 0.0 or not np.isfinite(scale):
        return scale
    return scale * float(np.linalg.norm(values / scale))


def unit(vector: ArrayLike) -> np.ndarray:
    """``vector`` scaled to length 1; ``ValueError`` if it is empty, zero or not finite."""
    values = np.asarray(vector, dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("a vector needs one or more finite values")
    scale = float(np.max(np.abs(values)))
    if scale == 0.0:
        raise ValueError("a zero vector has no direction")
    scaled = values / scale
    return scaled / np.linalg.norm(scaled)
