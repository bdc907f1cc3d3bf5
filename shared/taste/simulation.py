"""Synthetic world for measuring taste learning: a catalog, a population of tastes, members.

Everything here is a *simulator*: hidden tastes are only used to generate choices and to
score predictions. Learners and priors must never read them (the benchmark estimates its
prior from learned profiles, as the live system would).

- Catalog: unit embeddings grouped in style clusters (each image: a style centre plus
  image-specific variation spread over all dimensions).
- Population: taste ``w = mean + basis.T @ c + noise`` with ``c ~ N(0, diag(variances))``
  (a low-rank part, rank >= 12) and isotropic individual noise outside that subspace.
  The three parts' shares of the between-image utility variance are parameters.
- Choices: Plackett-Luce over ``x . w / temperature`` with a lapse (random click) rate; the
  temperature is calibrated so that the hidden taste itself scores ``oracle_accuracy`` on
  held-out pairs labelled by the same noisy choice model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WorldConfig:
    dim: int = 256
    n_images: int = 3000
    heldout_fraction: float = 0.2
    n_styles: int = 32
    style_zipf: float = 0.0  # style popularity ~ 1 / rank**style_zipf (0: equal sizes)
    style_weight: float = 0.75  # cosine between an image and its style centre
    taste_rank: int = 12
    share_mean: float = 0.25  # shares of between-image utility variance
    share_lowrank: float = 0.70
    share_noise: float = 0.05
    style_alignment: float = 0.8  # how much taste directions lie in the style span
    lapse: float = 0.05
    oracle_accuracy: float = 0.80


@dataclass(frozen=True)
class World:
    config: WorldConfig
    embeddings: np.ndarray  # (n_images, d) unit rows
    serve_pool: np.ndarray  # indices of images that grids are built from
    heldout_pool: np.ndarray  # indices of images reserved for evaluation pairs
    pop_mean: np.ndarray  # (d,)  hidden
    pop_basis: np.ndarray  # (rank, d) hidden, orthonormal rows
    pop_variances: np.ndarray  # (rank,) hidden
    noise_variance: float  # hidden, per dimension outside pop_basis
    temperature: float

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def lapse(self) -> float:
        return self.config.lapse

    def sample_tastes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Hidden tastes of ``n`` members, (n, d)."""
        return _sample_tastes(
            rng, n, self.pop_mean, self.pop_basis, self.pop_variances, self.noise_variance
        )

    def utilities(self, tastes: np.ndarray, images: np.ndarray) -> np.ndarray:
        """Choice-model utilities (already divided by the temperature)."""
        result: np.ndarray = (images @ np.atleast_2d(tastes).T).T / self.temperature
        return result

    def choose(
        self, rng: np.random.Generator, taste: np.ndarray, shown: np.ndarray, n_picks: int
    ) -> list[int]:
        """A member with hidden ``taste`` picks ``n_picks`` of the ``shown`` rows (in order)."""
        u = (shown @ taste) / self.temperature
        remaining = list(range(shown.shape[0]))
        order: list[int] = []
        for _ in range(min(n_picks, len(remaining))):
            if rng.random() < self.config.lapse:
                j = int(rng.integers(len(remaining)))
            else:
                v = u[remaining]
                p = np.exp(v - v.max())
                p /= p.sum()
                j = int(rng.choice(len(remaining), p=p))
            order.append(remaining.pop(j))
        return order

    def heldout_pairs(self, rng: np.random.Generator, n_pairs: int) -> np.ndarray:
        """(n_pairs, 2) distinct image indices from the held-out pool."""
        pool = self.heldout_pool
        i = rng.integers(len(pool), size=n_pairs)
        j = (i + 1 + rng.integers(len(pool) - 1, size=n_pairs)) % len(pool)
        return np.stack([pool[i], pool[j]], axis=1)

    def pair_win_probability(self, tastes: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """P(first image of each pair is chosen) under the noisy choice model, (m, n_pairs)."""
        t = np.atleast_2d(tastes)
        diff = self.embeddings[pairs[:, 0]] - self.embeddings[pairs[:, 1]]
        delta = (diff @ t.T).T / self.temperature
        result: np.ndarray = (1 - self.config.lapse) / (1 + np.exp(-delta)) + self.config.lapse / 2
        return result

    def expected_accuracy(
        self, predictions: np.ndarray, win_prob: np.ndarray, pairs: np.ndarray
    ) -> np.ndarray:
        """Expected agreement of each prediction row with the member's own noisy pair choices.

        ``win_prob`` is ``pair_win_probability`` for the members the rows predict (one
        member per row). Ties count one half. Exact expectation, no label sampling noise.
        """
        pred = np.atleast_2d(predictions)
        diff = self.embeddings[pairs[:, 0]] - self.embeddings[pairs[:, 1]]
        score = (diff @ pred.T).T
        agree = np.where(score > 0, win_prob, np.where(score < 0, 1 - win_prob, 0.5))
        return np.asarray(agree.mean(axis=1))


def make_world(config: WorldConfig | None = None, seed: int = 0) -> World:
    cfg = config or WorldConfig()
    if cfg.taste_rank < 1 or cfg.taste_rank >= cfg.dim:
        raise ValueError("taste_rank must be in [1, dim)")
    rng = np.random.default_rng(seed)
    d = cfg.dim
    centres = _unit(rng.standard_normal((cfg.n_styles, d)))
    popularity = 1.0 / np.arange(1, cfg.n_styles + 1) ** cfg.style_zipf
    style = rng.choice(cfg.n_styles, size=cfg.n_images, p=popularity / popularity.sum())
    own = rng.standard_normal((cfg.n_images, d))
    own = own - np.sum(own * centres[style], axis=1, keepdims=True) * centres[style]
    own = _unit(own)
    cw = cfg.style_weight
    emb = _unit(cw * centres[style] + np.sqrt(1 - cw**2) * own)
    perm = rng.permutation(cfg.n_images)
    n_hold = max(2, round(cfg.heldout_fraction * cfg.n_images))
    heldout_pool = np.sort(perm[:n_hold])
    serve_pool = np.sort(perm[n_hold:])

    # population directions: mostly inside the style span, partly arbitrary
    in_span = rng.standard_normal((cfg.taste_rank, cfg.n_styles)) @ centres
    arbitrary = rng.standard_normal((cfg.taste_rank, d))
    al = cfg.style_alignment
    raw = al * _unit(in_span) + np.sqrt(1 - al**2) * _unit(arbitrary)
    q, _ = np.linalg.qr(raw.T)
    basis = q.T[: cfg.taste_rank]
    variances = np.geomspace(1.0, 0.25, cfg.taste_rank)
    mean_dir = _unit(rng.standard_normal(cfg.n_styles) @ centres)

    # scale the three parts to their shares of the between-image utility variance
    cov_x = np.cov(emb[serve_pool].T)
    v_mean = float(mean_dir @ cov_x @ mean_dir)
    v_low = float(np.sum(variances * np.einsum("ij,jk,ik->i", basis, cov_x, basis)))
    proj_perp = np.eye(d) - basis.T @ basis
    v_noise = float(np.trace(proj_perp @ cov_x))
    pop_mean = mean_dir * np.sqrt(cfg.share_mean / v_mean)
    variances = variances * (cfg.share_lowrank / v_low)
    noise_variance = cfg.share_noise / v_noise

    world = World(
        config=cfg,
        embeddings=emb,
        serve_pool=serve_pool,
        heldout_pool=heldout_pool,
        pop_mean=pop_mean,
        pop_basis=basis,
        pop_variances=variances,
        noise_variance=noise_variance,
        temperature=1.0,
    )
    temperature = calibrate_temperature(world, np.random.default_rng(seed + 1))
    return World(**{**world.__dict__, "temperature": temperature})


def calibrate_temperature(
    world: World, rng: np.random.Generator, n_members: int = 200, n_pairs: int = 2000
) -> float:
    """Temperature at which the hidden tastes score ``oracle_accuracy`` on held-out pairs."""
    target = world.config.oracle_accuracy
    lapse = world.config.lapse
    tastes = world.sample_tastes(rng, n_members)
    pairs = world.heldout_pairs(rng, n_pairs)
    diff = world.embeddings[pairs[:, 0]] - world.embeddings[pairs[:, 1]]
    gaps = np.abs(diff @ tastes.T)

    def oracle(temp: float) -> float:
        p = 1 / (1 + np.exp(-gaps / temp))
        return float(np.mean((1 - lapse) * p + lapse / 2))

    lo, hi = 1e-4, 1e4
    for _ in range(100):
        mid = np.sqrt(lo * hi)
        if oracle(mid) > target:
            lo = mid
        else:
            hi = mid
    return float(np.sqrt(lo * hi))


def _sample_tastes(
    rng: np.random.Generator,
    n: int,
    mean: np.ndarray,
    basis: np.ndarray,
    variances: np.ndarray,
    noise_variance: float,
) -> np.ndarray:
    d = mean.shape[0]
    coef = rng.standard_normal((n, basis.shape[0])) * np.sqrt(variances)
    noise = rng.standard_normal((n, d)) * np.sqrt(noise_variance)
    noise = noise - (noise @ basis.T) @ basis
    result: np.ndarray = mean + coef @ basis + noise
    return result


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    result: np.ndarray = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return result
