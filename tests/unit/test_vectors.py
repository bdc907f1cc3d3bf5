"""Unit vectors from extreme but finite values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.taste.vectors import scaled_norm, unit


@pytest.mark.parametrize("magnitude", [1e-320, 1e-170, 1.0, 1e170, 1e307])
def test_unit_is_unit_at_every_magnitude(magnitude: float) -> None:
    vector = np.array([3.0, -4.0, 0.0]) * magnitude
    result = unit(vector)
    assert np.all(np.isfinite(result))
    assert abs(float(np.linalg.norm(result)) - 1.0) < 1e-12
    assert np.allclose(result, [0.6, -0.8, 0.0], atol=1e-3 if magnitude < 1e-300 else 1e-12)


@pytest.mark.parametrize("bad", [[0.0, 0.0], [], [1.0, float("nan")], [float("inf"), 1.0]])
def test_unit_refuses_vectors_without_a_direction(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        unit(bad)


def test_scaled_norm_neither_underflows_nor_overflows() -> None:
    assert scaled_norm([1e-170, 1e-170]) == pytest.approx(2**0.5 * 1e-170)
    assert scaled_norm([1e200, 1e200]) == pytest.approx(2**0.5 * 1e200)
    assert scaled_norm([0.0, 0.0]) == 0.0


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=32))
def test_unit_of_any_finite_nonzero_vector_has_length_one(values: list[float]) -> None:
    if not any(values):
        return
    assert abs(float(np.linalg.norm(unit(values))) - 1.0) < 1e-9
