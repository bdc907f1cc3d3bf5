"""Choosing which images to show in the next grid.

``random``: a uniform sample of the candidates.

``thompson``: each slot is the best not-yet-chosen image under its own posterior sample.

``active``: greedy expected-information design. The pool is the most promising images
(highest upper confidence bound on utility, so grids can stay pleasant) plus a random sample
of the rest (diversity). The grid opens with a random image of the diverse part, then adds,
one at a time, the image that most reduces the *catalog-weighted* posterior variance
``tr(Cov_catalog @ Sigma)`` expected from the member's top-k choice out of the grid (Laplace
update with the expected Plackett-Luce top-k Fisher information at choice probabilities
softened by the posterior uncertainty). That is the expected squared error of the predicted
utility difference between two random catalog images, the error held-out pair accuracy is
made of. A choice only teaches where the shown images differ, so the criterion itself keeps
grids diverse.

Callers should pass as candidates only images the member has not been shown yet: showing
the same image again and again adds little and makes picks foregone.
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
    pool_promising: float = 0.25,
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
        return _active(
            learner, x, size, rng, picks=picks, pool_size=pool_size, promising=pool_promising
        )
    raise ValueError(f"unknown grid strategy {strategy!r}; expected one of {STRATEGIES}")


def _posterior_samples(
    learner: TasteLearner, x: np.ndarray, b: np.ndarray, n_samples: int, rng: np.random.Generator
) -> np.ndarray:
    """Utilities of every candidate under ``n_samples`` posterior draws, (n_samples, n)."""
    _, s, tau2 = learner.subspace_posterior()
    basis = learner.prior.basis
    r = basis.shape[0]
    out = np.tile(x @ learner.mean(), (n_samples, 1))
    if r:
        chol = np.linalg.cholesky(s + 1e-12 * np.eye(r))
        out += (rng.standard_normal((n_samples, r)) @ chol.T) @ b.T
    g = rng.standard_normal((n_samples, x.shape[1]))
    # residual draw: g projected off the basis, dotted with x
    out += np.sqrt(tau2) * (g @ x.T - (g @ basis.T) @ b.T)
    return np.asarray(out)


def _thompson(
    learner: TasteLearner, x: np.ndarray, size: int, rng: np.random.Generator
) -> list[int]:
    b = x @ learner.prior.basis.T
    samples = _posterior_samples(learner, x, b, size, rng)
    chosen: list[int] = []
    taken = np.zeros(x.shape[0], dtype=bool)
    for row in samples:
        j = int(np.argmax(np.where(taken, -np.inf, row)))
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
    promising: float,
) -> list[int]:
    basis = learner.prior.basis
    _, s, tau2 = learner.subspace_posterior()
    d, r = learner.prior.dim, learner.prior.rank
    n = x.shape[0]
    b = x @ basis.T  # (n, r)
    mean_u, var_u = learner.predict(x)

    # catalog covariance: full in the prior subspace, isotropic (kappa per dim) outside it
    centred_b = b - b.mean(axis=0)
    k_sub = centred_b.T @ centred_b / max(n - 1, 1)
    total_var = float(np.sum(np.var(x, axis=0, ddof=1))) if n > 1 else 0.0
    kappa = max(total_var - float(np.trace(k_sub)), 0.0) / max(d - r, 1)

    # pool: the most promising images (upper confidence bound) plus a random sample
    pool_size = max(size, min(pool_size, n))
    ucb = mean_u + np.sqrt(np.maximum(var_u, 0.0))
    n_top = max(1, min(pool_size, round(promising * pool_size)))
    top = np.argsort(-ucb, kind="stable")[:n_top]
    rest = np.setdiff1d(np.arange(n), top)
    extra = rng.choice(rest, size=min(pool_size - n_top, rest.size), replace=False)
    pool = np.concatenate([top, np.sort(extra)])

    b_pool = b[pool]
    x_pool = x[pool]
    sb = s @ b_pool.T  # (r, P)
    # residual Gram matrix: x_i . x_j - b_i . b_j
    res_gram = x_pool @ x_pool.T - b_pool @ b_pool.T
    c_pool = b_pool @ sb + tau2 * res_gram
    g_pool = sb.T @ k_sub @ sb + (tau2**2) * kappa * res_gram
    # choice logits softened by the utility uncertainty (probit approximation)
    logits = mean_u[pool] / np.sqrt(1.0 + np.pi * var_u[pool] / 8.0)

    # Open with a random image of the diverse part (not the favourite: a grid built around
    # the image the member is already known to pick wastes a pick on a foregone choice),
    # then add greedily the image that most reduces the expected catalog-weighted variance.
    first = int(rng.integers(n_top, len(pool))) if len(pool) > n_top else 0
    chosen = [first]
    remaining = np.ones(len(pool), dtype=bool)
    remaining[first] = False
    while len(chosen) < size:
        cand = np.flatnonzero(remaining)
        sets = np.concatenate([np.tile(np.array(chosen), (cand.size, 1)), cand[:, None]], axis=1)
        t = sets.shape[1]
        eye = np.eye(t)
        h = _expected_topk_information(logits[sets], min(picks, t - 1))
        c = c_pool[sets[:, :, None], sets[:, None, :]]
        g = g_pool[sets[:, :, None], sets[:, None, :]]
        # Laplace update: Sigma' = Sigma - Sigma X^T M X Sigma with M = H (I + C H)^-1;
        # the catalog-weighted variance drops by tr(M G), G = X Sigma K Sigma X^T
        jac_t = np.transpose(eye[None] + c @ h, (0, 2, 1))
        m = np.transpose(np.linalg.solve(jac_t, np.transpose(h, (0, 2, 1))), (0, 2, 1))
        score = np.einsum("mij,mji->m", m, g)
        best = int(cand[int(np.argmax(score))])
        chosen.append(best)
        remaining[best] = False
    picked = [int(pool[i]) for i in chosen]
    return [picked[i] for i in rng.permutation(len(picked))]


def _expected_topk_information(logits: np.ndarray, picks: int) -> np.ndarray:
    """Expected Plackett-Luce Fisher information (in utility space) of ``picks`` sequential
    picks from each set of logits, (m, t) -> (m, t, t).

    Stage by stage, an image still available with probability ``avail`` is chosen with
    probability proportional to ``avail * exp(logit)``; its expected removal lowers its
    availability for the next stage ("soft removal"), so later picks' information among
    the remaining images counts even when one image dominates the first pick.
    """
    m, t = logits.shape
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    avail = np.ones((m, t))
    h = np.zeros((m, t, t))
    for _ in range(picks):
        q = avail * e
        q /= np.maximum(q.sum(axis=1, keepdims=True), 1e-300)
        h += q[:, :, None] * np.eye(t)[None] - q[:, :, None] * q[:, None, :]
        avail = np.maximum(avail - q, 0.0)
    return h
