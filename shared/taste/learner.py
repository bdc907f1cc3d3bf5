"""Incremental Bayesian taste learner (Plackett-Luce / Bradley-Terry with a Gaussian posterior).

Model: a member's utility for an image with unit embedding ``x`` is ``x . w``. Picking
``p_1, p_2, ...`` (in that order) from a shown grid follows the Plackett-Luce top-k model
(each pick is a softmax over the images not yet picked, mixed with a small ``LAPSE`` rate of
random clicks); a ranked pair is the two-image case (Bradley-Terry). A like is weak Gaussian
evidence that the liked image beats the average image seen so far; an unlike divides it
back out.

Posterior: Gaussian, with the structure of the population prior (see ``prior.py``)::

    w = prior.mean + basis.T @ a + z,      z orthogonal to the basis
    a ~ N(a_mean, S)           full (r, r) covariance in the prior's subspace
    z ~ N(z_mean, tau2 * P)    isotropic covariance in the orthogonal complement

Each event is folded in by a Laplace step computed exactly in the k-dimensional space of
the shown images' utilities (Newton on ``u = X mu + C grad loglik(u)``), followed by the
moment projection back onto the structured family above (the cross-covariance between the
subspace and the residual is dropped; the residual keeps its trace). This is an
assumed-density filter: one pass, constant work per event, state size independent of the
number of events, and no randomness, so a replay reproduces ``state()`` bit for bit.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from shared.taste.prior import TastePrior
from shared.taste.vectors import unit

_MAGIC = b"TSTL"
_VERSION = 1
_HEADER = struct.Struct("<4sHII8sqq")

#: Newton iterations for the per-event mode (fixed count keeps work and results deterministic).
_NEWTON_STEPS = 6
#: A like says "this image is about LIKE_MARGIN logits above the average image seen",
#: with Gaussian noise of variance LIKE_NOISE: weaker than a pick out of a grid.
LIKE_MARGIN = 1.0
LIKE_NOISE = 2.0
#: Assumed rate of random clicks (misclicks, casual picks) in grids and pairs.
#: A generic allowance, not fitted to any data; results are insensitive to it (0 to 0.2).
LAPSE = 0.05
#: Floor on the residual variance so the learner never freezes completely.
_MIN_TAU2 = 1e-8


class TasteLearner:
    """Per-profile taste posterior; fold events in with ``observe_*``; persist with ``state()``."""

    def __init__(self, prior: TastePrior) -> None:
        self._prior = prior
        self._basis = prior.basis
        r = prior.rank
        self._a = np.zeros(r)
        self._s = np.diag(prior.variances).astype(np.float64)
        self._z = np.zeros(prior.dim)
        self._tau2 = float(prior.residual_variance)
        self._ref = np.zeros(prior.dim)
        self._n_ref = 0
        self._evidence = 0

    # ------------------------------------------------------------------ persistence

    @classmethod
    def from_state(cls, prior: TastePrior, state: bytes) -> TasteLearner:
        """Rebuild a learner from ``state()`` bytes; the prior must be the one it was built with."""
        learner = cls(prior)
        d, r = prior.dim, prior.rank
        if len(state) < _HEADER.size:
            raise ValueError("taste state too short")
        magic, version, dim, rank, fp, evidence, n_ref = _HEADER.unpack_from(state, 0)
        if magic != _MAGIC:
            raise ValueError("not a taste learner state")
        if version != _VERSION:
            raise ValueError(f"unsupported taste state version {version}")
        if dim != d or rank != r:
            raise ValueError(f"state is for dim={dim} rank={rank}, prior has dim={d} rank={r}")
        if fp != prior.fingerprint():
            raise ValueError("state was built with a different prior")
        n_tri = r * (r + 1) // 2
        n_floats = r + n_tri + d + 1 + d
        body = state[_HEADER.size :]
        if len(body) != 8 * n_floats:
            raise ValueError(f"taste state body has {len(body)} bytes, expected {8 * n_floats}")
        values = np.frombuffer(body, dtype="<f8").astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError("taste state contains non-finite values")
        pos = 0
        learner._a = values[pos : pos + r].copy()
        pos += r
        s = np.zeros((r, r))
        iu = np.triu_indices(r)
        s[iu] = values[pos : pos + n_tri]
        s.T[iu] = values[pos : pos + n_tri]
        learner._s = s
        pos += n_tri
        learner._z = values[pos : pos + d].copy()
        pos += d
        learner._tau2 = float(values[pos])
        pos += 1
        learner._ref = values[pos : pos + d].copy()
        learner._evidence = int(evidence)
        learner._n_ref = int(n_ref)
        return learner

    def state(self) -> bytes:
        """Deterministic compact encoding (about 8 * (d * 2 + r * r / 2) bytes)."""
        r = self._prior.rank
        header = _HEADER.pack(
            _MAGIC,
            _VERSION,
            self._prior.dim,
            r,
            self._prior.fingerprint(),
            self._evidence,
            self._n_ref,
        )
        iu = np.triu_indices(r)
        body = np.concatenate(
            [self._a, self._s[iu], self._z, np.array([self._tau2]), self._ref]
        ).astype("<f8")
        return header + body.tobytes()

    # ------------------------------------------------------------------ read side

    @property
    def prior(self) -> TastePrior:
        return self._prior

    @property
    def evidence(self) -> int:
        """Observations folded in: picks + pairs + likes - unlikes."""
        return self._evidence

    def mean(self) -> np.ndarray:
        """Posterior mean taste in utility units (feed these to ``estimate_prior``)."""
        result: np.ndarray = self._prior.mean + self._a @ self._basis + self._z
        return result

    def vector(self) -> np.ndarray:
        """Unit-norm taste direction (the zero vector if nothing is known or the mean is not
        finite); scaled, so a mean of tiny or huge components keeps its direction."""
        try:
            return unit(self.mean())
        except ValueError:
            return np.zeros(self._prior.dim)

    def uncertainty(self) -> float:
        """Mean posterior variance per embedding dimension (trace / d)."""
        d, r = self._prior.dim, self._prior.rank
        return float((np.trace(self._s) + self._tau2 * (d - r)) / d)

    def subspace_posterior(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(a_mean, S, tau2): the posterior in the prior's coordinates (copies)."""
        return self._a.copy(), self._s.copy(), self._tau2

    def covariance(self) -> np.ndarray:
        """Dense (d, d) posterior covariance (O(d^2) memory; for prior estimation)."""
        u = self._basis
        d = self._prior.dim
        result: np.ndarray = u.T @ self._s @ u + self._tau2 * (np.eye(d) - u.T @ u)
        return result

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance of the utility of each image row."""
        x = _as_matrix(images, self._prior.dim)
        b = x @ self._basis.T
        mean_u = x @ self.mean()
        # |x_perp|^2 = |x|^2 - |b|^2 because the basis rows are orthonormal
        resid_sq = np.maximum(np.einsum("ij,ij->i", x, x) - np.einsum("ij,ij->i", b, b), 0.0)
        var_u = np.einsum("ij,ij->i", b @ self._s, b) + self._tau2 * resid_sq
        return mean_u, var_u

    # ------------------------------------------------------------------ write side

    def observe_grid(self, shown: np.ndarray, picked: Sequence[int]) -> None:
        """Fold in a grid: ``shown`` (k, d) embeddings; ``picked`` row indices in pick order."""
        x = _as_matrix(shown, self._prior.dim)
        k = x.shape[0]
        order = [int(i) for i in picked]
        if len(set(order)) != len(order):
            raise ValueError("picked contains duplicates")
        if any(i < 0 or i >= k for i in order):
            raise ValueError(f"picked indices must be in [0, {k})")
        self._update_ref(x)
        if not order:
            return
        if len(order) >= k:
            order = order[: k - 1]  # picking everything carries no preference beyond k-1 picks
        if order:
            self._plackett_luce(x, order)
        self._evidence += len([int(i) for i in picked])

    def observe_pair(self, winner: np.ndarray, loser: np.ndarray) -> None:
        """Fold in a ranked pair (Bradley-Terry): ``winner`` preferred to ``loser``."""
        d = self._prior.dim
        x = np.vstack([_as_vector(winner, d), _as_vector(loser, d)])
        self._update_ref(x)
        self._plackett_luce(x, [0])
        self._evidence += 1

    def observe_like(self, image: np.ndarray) -> None:
        """A like: weak evidence that ``image`` beats the average image seen so far."""
        x = _as_vector(image, self._prior.dim)
        self._gaussian(x - self._ref, LIKE_MARGIN, LIKE_NOISE)
        self._evidence += 1

    def observe_unlike(self, image: np.ndarray) -> None:
        """Undo a like (Gaussian division; exact if nothing changed in between)."""
        x = _as_vector(image, self._prior.dim)
        self._gaussian(x - self._ref, LIKE_MARGIN, -LIKE_NOISE)
        self._evidence -= 1

    # ------------------------------------------------------------------ internals

    def _update_ref(self, x: np.ndarray) -> None:
        for row in x:
            self._n_ref += 1
            self._ref = self._ref + (row - self._ref) / self._n_ref

    def _split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = x @ self._basis.T
        xp = x - b @ self._basis
        return b, xp

    def _plackett_luce(self, x: np.ndarray, order: list[int]) -> None:
        k = x.shape[0]
        b, xp = self._split(x)
        mu = x @ self.mean()
        sb = self._s @ b.T  # (r, k)
        c = b @ sb + self._tau2 * (xp @ xp.T)
        c = 0.5 * (c + c.T)
        # stages: at stage j the member picks order[j] out of those not yet picked
        masks = np.ones((len(order), k), dtype=bool)
        for j in range(1, len(order)):
            masks[j] = masks[j - 1]
            masks[j, order[j - 1]] = False
        picked_onehot = np.zeros((len(order), k))
        picked_onehot[np.arange(len(order)), order] = 1.0
        eye = np.eye(k)
        u = mu.copy()
        g = np.zeros(k)
        h = np.zeros((k, k))
        for _ in range(_NEWTON_STEPS):
            g, h = _pl_grad_hess(u, masks, picked_onehot, LAPSE)
            f = u - mu - c @ g
            jac = eye + c @ h
            u = u - np.linalg.solve(jac, f)
        g, h = _pl_grad_hess(u, masks, picked_onehot, LAPSE)
        if not (np.isfinite(u).all() and np.isfinite(g).all() and np.isfinite(h).all()):
            return  # numerically hopeless event: leave the posterior as it was
        # mean: w* = w + Sigma X^T g*
        self._a = self._a + sb @ g
        self._z = self._z + self._tau2 * (xp.T @ g)
        # covariance: Sigma' = Sigma - Sigma X^T M X Sigma, M = H (I + C H)^-1
        m = np.linalg.solve((eye + c @ h).T, h.T).T
        m = 0.5 * (m + m.T)
        self._shrink(sb, xp, m)

    def _gaussian(self, h_vec: np.ndarray, target: float, noise: float) -> None:
        b, xp = self._split(h_vec[None, :])
        sb = self._s @ b.T  # (r, 1)
        s = float((b @ sb)[0, 0] + self._tau2 * float(xp[0] @ xp[0]))
        if noise < 0 and s >= -0.99 * noise:
            return  # cannot divide this out without losing positive definiteness; skip
        denom = s + noise
        if denom == 0.0:
            return
        pred = float(h_vec @ self.mean())
        gain = (target - pred) / denom
        self._a = self._a + sb[:, 0] * gain
        self._z = self._z + self._tau2 * xp[0] * gain
        self._shrink(sb, xp, np.array([[1.0 / denom]]))

    def _shrink(self, sb: np.ndarray, xp: np.ndarray, m: np.ndarray) -> None:
        s_new = self._s - sb @ m @ sb.T
        s_new = 0.5 * (s_new + s_new.T)
        d, r = self._prior.dim, self._prior.rank
        if r:
            # keep the covariance positive definite whatever the numerics did
            diag = np.diag(s_new)
            if (diag <= 0).any():
                s_new = s_new + np.eye(r) * (1e-12 - min(float(diag.min()), 0.0))
            self._s = s_new
        if d > r:
            shrink = self._tau2**2 * float(np.sum(m * (xp @ xp.T))) / (d - r)
            self._tau2 = max(self._tau2 - shrink, _MIN_TAU2)


def _pl_grad_hess(
    u: np.ndarray, masks: np.ndarray, picked_onehot: np.ndarray, lapse: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and (Gauss-Newton) negative Hessian of the Plackett-Luce log-likelihood.

    With ``lapse`` > 0 each pick is a mixture: with probability ``lapse`` a random click
    among the remaining images. A pick's softmax terms are then weighted by the posterior
    responsibility that it was a real choice, so surprising picks move the taste less.
    """
    logits = np.where(masks, u[None, :], -np.inf)
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p = p / p.sum(axis=1, keepdims=True)
    if lapse > 0.0:
        p_pick = (p * picked_onehot).sum(axis=1)
        n_left = masks.sum(axis=1)
        real = (1.0 - lapse) * p_pick
        resp = real / (real + lapse / n_left)
    else:
        resp = np.ones(p.shape[0])
    g = (resp[:, None] * (picked_onehot - p)).sum(axis=0)
    pw = resp[:, None] * p
    h = np.diag(pw.sum(axis=0)) - p.T @ pw
    return g, 0.5 * (h + h.T)


def _as_matrix(x: np.ndarray, dim: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != dim or a.shape[0] < 1:
        raise ValueError(f"expected a (k, {dim}) array of embeddings, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("embeddings contain non-finite values")
    return a


def _as_vector(x: np.ndarray, dim: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.shape[0] != dim:
        raise ValueError(f"expected an embedding of dimension {dim}, got {a.shape[0]}")
    if not np.isfinite(a).all():
        raise ValueError("embedding contains non-finite values")
    return a
