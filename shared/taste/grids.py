"""Choosing which images to show in the next grid.

``random``: a uniform sample of the candidates.

``thompson``: each slot is the best not-yet-chosen image under its own posterior sample.

``active``: greedy expected-information design. From a pool of plausible, uncertain images
(upper confidence bound on utility, plus each posterior sample's favourites) it adds, one at
a time, the image that most reduces the *catalog-weighted* posterior variance
``tr(Cov_catalog @ Sigma)`` expected from the member's top-k choice out of the grid (Laplace
update with the Plackett-Luce Fisher information at probabilities softened by the posterior
uncertainty). That is exactly the variance of the predicted utility difference between two
random catalog images, the error that held-out pair accuracy is made of. Because a choice
only teaches where the shown images differ, the criterion itself keeps grids diverse; the
pool keeps them pleasant (every image is plausibly liked).
"""

from __future__ import annotations

import numpy as np

from shared.taste.learner import TasteLearner

STRATEGIES = ("active", "random", "thompson")


def choose_grid(
    learner: TasteLearner,
    candidates: np.ndarray,
    size: int,
    rng: np.random.Generator,
    strategy: str = "active",
    *,
    picks: int = 3,
    pool_size: int = 96,
) -> list[int]:
    """Row indices (distinct, in display order) of ``candidates`` to show next.

    ``picks`` is how many images the member is asked to pick (used by ``active`` to weigh
    the information a grid carries). Deterministic given the learner state and ``rng``.
    """
    x = np.asarray(candidates, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != learner.prior.dim:
        raise ValueError(f"candidates must be (n, {learner.prior.dim})")
    n = x.shape[0]
    if size < 1:
        raise ValueError("size must be at least 1")
    if size >= n:
        return [int(i) for i in rng.permutation(n)]
    if strategy == "random":
        return [int(i) for i in rng.choice(n, size=size, replace=False)]
    if strategy == "thompson":
        return _thompson(learner, x, size, rng)
    if strategy == "active":
        return _active(learner, x, size, rng, picks=picks, pool_size=pool_size)
    raise ValueError(f"unknown grid strategy {strategy!r}; expected one of {STRATEGIES}")


def _posterior_samples(
    learner: TasteLearner, x: np.ndarray, b: np.ndarray, n_samples: int, rng: np.random.Generator
) -> np.ndarray:
    """Utilities of every candidate under ``n_samples`` posterior draws, (n_samples, n)."""
    a, s, tau2 = learner.subspace_posterior()
    basis = learner.prior.basis
    mean_u = x @ learner.mean()
    r = a.shape[0]
    out = np.tile(mean_u, (n_samples, 1))
    if r:
        chol = np.linalg.cholesky(s + 1e-12 * np.eye(r))
        out += (rng.standard_normal((n_samples, r)) @ chol.T) @ b.T
    g = rng.standard_normal((n_samples, x.shape[1]))
    g = g - (g @ basis.T) @ basis
    out += np.sqrt(tau2) * (g @ x.T)
    return np.asarray(out)


def _thompson(
    learner: TasteLearner, x: np.ndarray, size: int, rng: np.random.Generator
) -> list[int]:
    b = x @ learner.prior.basis.T
    samples = _posterior_samples(learner, x, b, size, rng)
    chosen: list[int] = []
    taken = np.zeros(x.shape[0], dtype=bool)
    for row in samples:
        row = np.where(taken, -np.inf, row)
        j = int(np.argmax(row))
        chosen.append(j)
        taken[j] = True
    return chosen


def _active(
    learner: TasteLearner,
    x: np.ndarray,
    size: int,
    rng: np.random.Generator,
    *,
    picks: int,
    pool_size: int,
) -> list[int]:
    basis = learner.prior.basis
    a, s, tau2 = learner.subspace_posterior()
    d, r = learner.prior.dim, learner.prior.rank
    b = x @ basis.T  # (n, r)
    mean_u, var_u = learner.predict(x)
    sd_u = np.sqrt(np.maximum(var_u, 0.0))

    # catalog covariance, in the prior subspace plus an isotropic remainder
    centred_b = b - b.mean(axis=0)
    k_sub = centred_b.T @ centred_b / max(x.shape[0] - 1, 1)
    total_var = float(np.sum(np.var(x, axis=0, ddof=1)))
    kappa = max(total_var - float(np.trace(k_sub)), 0.0) / max(d - r, 1)

    # pool: plausible and uncertain images, plus every posterior sample's favourites
    n = x.shape[0]
    pool_size = min(pool_size, n)
    ucb = mean_u + sd_u
    pool_set = set(np.argsort(-ucb, kind="stable")[: pool_size // 2].tolist())
    samples = _posterior_samples(learner, x, b, 8, rng)
    per_sample = max(1, (pool_size - len(pool_set)) // samples.shape[0] + 1)
    for row in samples:
        pool_set.update(np.argsort(-row, kind="stable")[:per_sample].tolist())
    pool = np.array(sorted(pool_set), dtype=np.int64)
    import os

    if os.environ.get("POOLMODE") == "random":
        pool = np.sort(rng.choice(n, size=int(os.environ.get("POOLN", pool_size)), replace=False))

    xp_pool = x[pool]
    b_pool = b[pool]
    res_pool = xp_pool - b_pool @ basis
    sb = s @ b_pool.T  # (r, P)
    c_pool = b_pool @ sb + tau2 * (res_pool @ res_pool.T)
    g_pool = sb.T @ k_sub @ sb + (tau2**2) * kappa * (res_pool @ res_pool.T)
    # softened choice logits (probit-style correction for utility uncertainty)
    logits = mean_u[pool] / np.sqrt(1.0 + np.pi * var_u[pool] / 8.0)

    chosen = [int(np.argmax(ucb[pool]))]
    remaining = np.ones(len(pool), dtype=bool)
    remaining[chosen[0]] = False
    while len(chosen) < size:
        cand = np.flatnonzero(remaining)
        sets = np.concatenate(
            [np.tile(np.array(chosen), (len(cand), 1)), cand[:, None]], axis=1
        )  # (m, t)
        t = sets.shape[1]
        lg = logits[sets]
        p = np.exp(lg - lg.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        n_pick = min(picks, t - 1)
        h = n_pick * (p[:, :, None] * np.eye(t)[None] - p[:, :, None] * p[:, None, :])
        c = c_pool[sets[:, :, None], sets[:, None, :]]
        g = g_pool[sets[:, :, None], sets[:, None, :]]
        jac = np.eye(t)[None] + c @ h
        # M = H (I + C H)^-1 ; score = tr(M G)
        m = np.linalg.solve(np.transpose(jac, (0, 2, 1)), np.transpose(h, (0, 2, 1)))
        m = np.transpose(m, (0, 2, 1))
        score = np.einsum("mij,mji->m", m, g)
        best = int(cand[int(np.argmax(score))])
        chosen.append(best)
        remaining[best] = False
    out = [int(pool[i]) for i in chosen]
    order = rng.permutation(len(out))
    return [out[i] for i in order]
