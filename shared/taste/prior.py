"""Population prior over taste vectors: a mean plus a low-rank Gaussian plus isotropic residual.

The prior says where tastes usually lie before a member has shown us anything. It is
estimated from data the live system really has (the learned taste vectors of earlier
members' profiles, and optionally the catalog's embeddings), never from simulator truth.

Covariance of the prior, in the embedding space of dimension ``d``::

    Sigma0 = basis.T @ diag(variances) @ basis + residual_variance * (I - basis.T @ basis)

``basis`` has orthonormal rows, so the two parts live in orthogonal subspaces.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

PAYLOAD_VERSION = 1

#: Prior variance per dimension used before any population prior exists. Embeddings are unit
#: vectors, so ``var(w . x) = UNINFORMED_VARIANCE`` for any image: a utility spread of about one
#: logit, weak enough for the data to take over after a handful of picks.
UNINFORMED_VARIANCE = 1.0


def _encode(array: np.ndarray) -> str:
    data = np.ascontiguousarray(array, dtype="<f8").tobytes()
    return base64.b64encode(data).decode("ascii")


def _decode(text: str, shape: tuple[int, ...]) -> np.ndarray:
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    expected = int(np.prod(shape, dtype=np.int64)) * 8
    if len(raw) != expected:
        raise ValueError(f"array payload has {len(raw)} bytes, expected {expected} for {shape}")
    return np.frombuffer(raw, dtype="<f8").reshape(shape).astype(np.float64)


@dataclass(frozen=True, eq=False)
class TastePrior:
    """Gaussian population prior over taste vectors (see module docstring)."""

    mean: np.ndarray
    basis: np.ndarray
    variances: np.ndarray
    residual_variance: float

    def __post_init__(self) -> None:
        mean = np.array(self.mean, dtype=np.float64).reshape(-1)
        dim = mean.shape[0]
        basis = np.array(self.basis, dtype=np.float64).reshape(-1, dim)
        variances = np.array(self.variances, dtype=np.float64).reshape(-1)
        if dim < 1:
            raise ValueError("prior dimension must be at least 1")
        if basis.shape[0] != variances.shape[0]:
            raise ValueError(
                f"basis has {basis.shape[0]} rows but {variances.shape[0]} variances given"
            )
        if basis.shape[0] > dim:
            raise ValueError("prior rank cannot exceed its dimension")
        residual = float(self.residual_variance)
        finite = np.isfinite(mean).all() and np.isfinite(basis).all()
        if not (finite and np.isfinite(variances).all() and np.isfinite(residual)):
            raise ValueError("prior contains non-finite values")
        if (variances <= 0).any() or residual <= 0:
            raise ValueError("prior variances must be positive")
        if basis.shape[0] and not np.allclose(basis @ basis.T, np.eye(basis.shape[0]), atol=1e-6):
            raise ValueError("prior basis rows must be orthonormal")
        for array in (mean, basis, variances):
            array.setflags(write=False)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "basis", basis)
        object.__setattr__(self, "variances", variances)
        object.__setattr__(self, "residual_variance", residual)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def rank(self) -> int:
        return int(self.basis.shape[0])

    @classmethod
    def uninformed(cls, dim: int) -> TastePrior:
        """Zero mean, isotropic prior: used before any population prior exists."""
        if dim < 1:
            raise ValueError("dim must be at least 1")
        return cls(
            mean=np.zeros(dim),
            basis=np.zeros((0, dim)),
            variances=np.zeros(0),
            residual_variance=UNINFORMED_VARIANCE,
        )

    @classmethod
    def from_catalog(
        cls, embeddings: np.ndarray, rank: int, variance: float = UNINFORMED_VARIANCE
    ) -> TastePrior:
        """Isotropic prior whose tracked subspace is the catalog's main directions of variation.

        Carries no population knowledge (every direction has the same prior variance), but
        tells the learner where to keep a full covariance: the directions in which images
        actually differ, which are the only ones that picks can teach.
        """
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError("embeddings must be a 2-D array (n, d)")
        centred = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        rank = max(0, min(int(rank), vt.shape[0]))
        basis = _canonical_signs(vt[:rank])
        return cls(
            mean=np.zeros(x.shape[1]),
            basis=basis,
            variances=np.full(rank, float(variance)),
            residual_variance=float(variance),
        )

    def covariance(self) -> np.ndarray:
        """Dense (d, d) prior covariance (for tests and diagnostics; O(d^2) memory)."""
        b = self.basis
        proj = b.T @ b
        result: np.ndarray = b.T @ (self.variances[:, None] * b) + self.residual_variance * (
            np.eye(self.dim) - proj
        )
        return result

    def to_payload(self) -> dict[str, Any]:
        """JSON-safe dict; arrays are base64 of little-endian float64 (exact round trip)."""
        return {
            "version": PAYLOAD_VERSION,
            "dim": self.dim,
            "rank": self.rank,
            "mean": _encode(self.mean),
            "basis": _encode(self.basis),
            "variances": _encode(self.variances),
            "residual_variance": _encode(np.array([self.residual_variance])),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TastePrior:
        try:
            version = int(payload["version"])
            dim = int(payload["dim"])
            rank = int(payload["rank"])
            if version != PAYLOAD_VERSION:
                raise ValueError(f"unsupported prior payload version {version}")
            if dim < 1 or rank < 0 or rank > dim:
                raise ValueError(f"bad prior shape dim={dim} rank={rank}")
            return cls(
                mean=_decode(payload["mean"], (dim,)),
                basis=_decode(payload["basis"], (rank, dim)),
                variances=_decode(payload["variances"], (rank,)),
                residual_variance=float(_decode(payload["residual_variance"], (1,))[0]),
            )
        except KeyError as exc:
            raise ValueError(f"prior payload misses field {exc.args[0]!r}") from exc

    def fingerprint(self) -> bytes:
        """8-byte digest of the exact prior parameters (stored in learner states)."""
        h = hashlib.sha256()
        h.update(np.array([self.dim, self.rank], dtype="<i8").tobytes())
        for array in (self.mean, self.basis, self.variances, np.array([self.residual_variance])):
            h.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
        return h.digest()[:8]


def _canonical_signs(rows: np.ndarray) -> np.ndarray:
    """Flip each row so its largest-magnitude entry is positive (SVD sign is arbitrary)."""
    rows = np.array(rows, dtype=np.float64)
    if rows.size == 0:
        return rows
    idx = np.argmax(np.abs(rows), axis=1)
    signs = np.sign(rows[np.arange(rows.shape[0]), idx])
    signs[signs == 0] = 1.0
    result: np.ndarray = rows * signs[:, None]
    return result


def estimate_prior(
    taste_vectors: np.ndarray,
    rank: int,
    *,
    catalog: np.ndarray | None = None,
    catalog_rank: int = 0,
    posterior_covariance: np.ndarray | float | None = None,
    min_variance_ratio: float = 1.2,
    min_residual_variance: float = 1e-4,
) -> TastePrior:
    """Estimate a population prior from learned taste vectors of earlier profiles.

    Args:
        taste_vectors: (n, d) learned taste vectors, in utility units, i.e. the learners'
            posterior means (``TasteLearner.mean()``), not unit directions.
        rank: most population directions to keep (fewer if the data do not support them).
        catalog: optional (m, d) catalog embeddings; their top ``catalog_rank`` principal
            directions (orthogonalised against the population ones) are added to the basis
            with the residual variance, so the learner tracks a full covariance there too.
        posterior_covariance: optional average posterior covariance of those profiles,
            either a (d, d) matrix (mean of ``TasteLearner.covariance()``) or a scalar
            (mean ``TasteLearner.uncertainty()``). By the law of total variance the
            population covariance is the spread of the posterior means plus the average
            posterior covariance; adding it back undoes the learners' shrinkage. Repeating
            "learn the profiles under the new prior, re-estimate" is an EM iteration.
        min_variance_ratio: a direction is kept only if its variance exceeds by this ratio
            the largest eigenvalue that pure noise at the level of the remaining eigenvalues
            would produce with ``n`` samples (the Marchenko-Pastur edge).

    The noise floor (mean eigenvalue outside the kept directions) becomes the isotropic
    residual variance; kept directions get their eigenvalue as prior variance.
    """
    v = np.asarray(taste_vectors, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 2:
        raise ValueError("taste_vectors must be (n, d) with n >= 2")
    if not np.isfinite(v).all():
        raise ValueError("taste_vectors contain non-finite values")
    n, d = v.shape
    mean = v.mean(axis=0)
    centred = v - mean
    cov = centred.T @ centred / (n - 1)
    if posterior_covariance is not None:
        extra = np.asarray(posterior_covariance, dtype=np.float64)
        if extra.ndim == 0:
            cov = cov + float(extra) * np.eye(d)
        elif extra.shape == (d, d):
            cov = cov + 0.5 * (extra + extra.T)
        else:
            raise ValueError(f"posterior_covariance must be a scalar or ({d}, {d})")
        if not np.isfinite(cov).all():
            raise ValueError("posterior_covariance contains non-finite values")
    eig, vecs = np.linalg.eigh(cov)
    order = np.argsort(-eig, kind="stable")
    eig = np.maximum(eig[order], 0.0)
    vt = vecs[:, order].T
    total_trace = float(eig.sum())
    max_rank = max(0, min(int(rank), d - 1))
    keep = 0
    for k in range(max_rank):
        floor = (total_trace - eig[:k].sum() - eig[k]) / max(d - k - 1, 1)
        # largest eigenvalue pure noise would give (Marchenko-Pastur edge)
        edge = floor * (1.0 + np.sqrt((d - k) / max(n - 1, 1))) ** 2
        if eig[k] < min_variance_ratio * max(edge, 1e-300):
            break
        keep = k + 1
    floor = (total_trace - float(eig[:keep].sum())) / max(d - keep, 1)
    residual = max(floor, min_residual_variance)
    basis = _canonical_signs(vt[:keep])
    variances = eig[:keep].copy()
    if catalog is not None and catalog_rank > 0:
        basis, variances = _add_catalog_directions(
            basis, variances, catalog, catalog_rank, residual
        )
    return TastePrior(mean=mean, basis=basis, variances=variances, residual_variance=residual)


def _add_catalog_directions(
    basis: np.ndarray,
    variances: np.ndarray,
    catalog: np.ndarray,
    catalog_rank: int,
    residual: float,
) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(catalog, dtype=np.float64)
    d = basis.shape[1]
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"catalog must be (m, {d})")
    centred = x - x.mean(axis=0)
    if basis.shape[0]:
        centred = centred - (centred @ basis.T) @ basis
    _, svals, vt = np.linalg.svd(centred, full_matrices=False)
    room = d - basis.shape[0]
    take = int(min(catalog_rank, room, int((svals > 1e-8 * max(svals.max(), 1e-300)).sum())))
    if take <= 0:
        return basis, variances
    extra = vt[:take]
    if basis.shape[0]:
        extra = extra - (extra @ basis.T) @ basis
    q, _ = np.linalg.qr(extra.T)
    extra = _canonical_signs(q.T[:take])
    return np.vstack([basis, extra]), np.concatenate([variances, np.full(take, residual)])
