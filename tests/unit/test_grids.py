"""Unit tests for grid choice."""

from __future__ import annotations

import numpy as np
import pytest

from shared.taste.grids import STRATEGIES, choose_grid
from shared.taste.learner import TasteLearner
from shared.taste.prior import TastePrior


def _setup(seed: int = 0, n: int = 300, dim: int = 48) -> tuple[TasteLearner, np.ndarray]:
    rng = np.random.default_rng(seed)
    cands = rng.standard_normal((n, dim))
    cands /= np.linalg.norm(cands, axis=1, keepdims=True)
    learner = TasteLearner(TastePrior.from_catalog(cands, 12))
    for _ in range(5):
        idx = rng.choice(n, 9, replace=False)
        learner.observe_grid(cands[idx], [0, 4, 2])
    return learner, cands


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_grid_indices_are_distinct_and_valid(strategy: str) -> None:
    learner, cands = _setup()
    grid = choose_grid(learner, cands, 9, np.random.default_rng(1), strategy)
    assert len(grid) == 9
    assert len(set(grid)) == 9
    assert all(isinstance(i, int) and 0 <= i < len(cands) for i in grid)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_grid_choice_is_deterministic_given_rng(strategy: str) -> None:
    learner, cands = _setup()
    a = choose_grid(learner, cands, 9, np.random.default_rng(5), strategy)
    b = choose_grid(learner, cands, 9, np.random.default_rng(5), strategy)
    assert a == b


def test_small_candidate_sets_and_errors() -> None:
    learner, cands = _setup()
    assert sorted(choose_grid(learner, cands[:5], 9, np.random.default_rng(0))) == list(range(5))
    with pytest.raises(ValueError):
        choose_grid(learner, cands, 9, np.random.default_rng(0), "nope")
    with pytest.raises(ValueError):
        choose_grid(learner, cands[:, :10], 9, np.random.default_rng(0))
    with pytest.raises(ValueError):
        choose_grid(learner, cands, 0, np.random.default_rng(0))


def test_active_grid_stays_diverse() -> None:
    learner, cands = _setup(seed=3)
    grid = choose_grid(learner, cands, 9, np.random.default_rng(2), "active")
    sims = cands[grid] @ cands[grid].T
    assert np.max(sims - np.eye(9)) < 0.99  # no near-duplicates


def test_active_grids_teach_more_than_random_ones() -> None:
    """Expected catalog-weighted posterior variance after one grid: active < random."""
    rng = np.random.default_rng(4)
    learner, cands = _setup(seed=4)
    basis = learner.prior.basis
    b = cands @ basis.T
    k_sub = np.cov(b.T)
    taste = learner.mean() + 2.0 * rng.standard_normal(cands.shape[1]) / np.sqrt(48)

    def after(grid: list[int]) -> float:
        total = 0.0
        for rep in range(6):
            copy = TasteLearner.from_state(learner.prior, learner.state())
            u = cands[grid] @ taste
            order: list[int] = []
            left = list(range(len(grid)))
            pick_rng = np.random.default_rng(rep)
            for _ in range(3):
                p = np.exp(u[left] - u[left].max())
                order.append(left.pop(int(pick_rng.choice(len(left), p=p / p.sum()))))
            copy.observe_grid(cands[grid], order)
            total += float(np.trace(k_sub @ copy.subspace_posterior()[1]))
        return total / 6

    active = np.mean([after(choose_grid(learner, cands, 9, rng, "active")) for _ in range(6)])
    random = np.mean([after(choose_grid(learner, cands, 9, rng, "random")) for _ in range(6)])
    assert active < random
