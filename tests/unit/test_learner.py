"""Unit tests for the taste prior, the incremental learner and the minting rule."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest

from shared.taste.learner import TasteLearner
from shared.taste.minting import cosine_distance, should_mint
from shared.taste.prior import TastePrior, estimate_prior
from shared.taste.simulation import WorldConfig, make_world

DIM = 64


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _prior(rng: np.random.Generator, dim: int = DIM, rank: int = 8) -> TastePrior:
    q, _ = np.linalg.qr(rng.standard_normal((dim, rank)))
    return TastePrior(
        mean=rng.standard_normal(dim) * 0.3,
        basis=q.T,
        variances=np.linspace(4.0, 1.0, rank),
        residual_variance=0.2,
    )


def _events(rng: np.random.Generator, n: int, dim: int = DIM) -> list[tuple[str, object]]:
    events: list[tuple[str, object]] = []
    for i in range(n):
        kind = i % 4
        if kind in (0, 1):
            shown = _unit(rng.standard_normal((9, dim))).astype(np.float32)
            events.append(("grid", (shown, [int(j) for j in rng.permutation(9)[:3]])))
        elif kind == 2:
            events.append(("pair", _unit(rng.standard_normal((2, dim)))))
        else:
            events.append(("like", _unit(rng.standard_normal(dim))))
    return events


def _apply(learner: TasteLearner, kind: str, payload: object) -> None:
    if kind == "grid":
        shown, picked = cast(tuple[np.ndarray, list[int]], payload)
        learner.observe_grid(shown, picked)
    elif kind == "pair":
        pair = cast(np.ndarray, payload)
        learner.observe_pair(pair[0], pair[1])
    else:
        learner.observe_like(cast(np.ndarray, payload))


def _replay(prior: TastePrior, events: list[tuple[str, object]]) -> TasteLearner:
    learner = TasteLearner(prior)
    for kind, payload in events:
        _apply(learner, kind, payload)
    return learner


def test_prior_payload_round_trip_is_exact() -> None:
    prior = _prior(np.random.default_rng(0))
    payload = prior.to_payload()
    import json

    again = TastePrior.from_payload(json.loads(json.dumps(payload)))
    assert again.dim == DIM and again.rank == 8
    for a, b in [(prior.mean, again.mean), (prior.basis, again.basis)]:
        assert a.tobytes() == b.tobytes()
    assert prior.variances.tobytes() == again.variances.tobytes()
    assert prior.residual_variance == again.residual_variance
    assert prior.fingerprint() == again.fingerprint()


def test_prior_payload_rejects_bad_input() -> None:
    payload = _prior(np.random.default_rng(0)).to_payload()
    with pytest.raises(ValueError):
        TastePrior.from_payload({**payload, "rank": 9})
    with pytest.raises(ValueError):
        TastePrior.from_payload({k: v for k, v in payload.items() if k != "mean"})
    with pytest.raises(ValueError):
        TastePrior(np.zeros(4), np.ones((1, 4)), np.ones(1), 1.0)  # basis not orthonormal


def test_uninformed_prior() -> None:
    prior = TastePrior.uninformed(32)
    assert prior.dim == 32 and prior.rank == 0
    learner = TasteLearner(prior)
    assert learner.vector().shape == (32,)
    assert learner.evidence == 0
    rng = np.random.default_rng(1)
    learner.observe_grid(_unit(rng.standard_normal((9, 32))), [4, 1, 7])
    assert np.isclose(np.linalg.norm(learner.vector()), 1.0)
    assert learner.evidence == 3


def test_estimate_prior_recovers_planted_subspace() -> None:
    rng = np.random.default_rng(2)
    d, r, n = 48, 4, 600
    q, _ = np.linalg.qr(rng.standard_normal((d, r)))
    planted = q.T
    mean = rng.standard_normal(d)
    coef = rng.standard_normal((n, r)) * np.sqrt([9.0, 6.0, 4.0, 3.0])
    vectors = mean + coef @ planted + rng.standard_normal((n, d)) * 0.3
    prior = estimate_prior(vectors, rank=10)
    assert prior.rank == r  # noise directions are not kept
    overlap = np.linalg.svd(prior.basis @ planted.T, compute_uv=False)
    assert overlap.min() > 0.95
    assert np.allclose(prior.variances, [9.0, 6.0, 4.0, 3.0], rtol=0.3)
    assert prior.residual_variance == pytest.approx(0.09, rel=0.3)
    assert np.linalg.norm(prior.mean - mean) < 0.5
    # adding back posterior covariance raises every variance
    wider = estimate_prior(vectors, rank=10, posterior_covariance=0.5)
    assert wider.residual_variance > prior.residual_variance


def test_state_is_deterministic_and_round_trips() -> None:
    rng = np.random.default_rng(3)
    prior = _prior(rng)
    events = _events(np.random.default_rng(4), 60)
    a = _replay(prior, events)
    b = _replay(prior, events)
    assert a.state() == b.state()
    # resume from persisted state mid-stream gives the same bytes as one long run
    first = _replay(prior, events[:30])
    resumed = TasteLearner.from_state(prior, first.state())
    assert resumed.state() == first.state()
    for kind, payload in events[30:]:
        _apply(resumed, kind, payload)
    assert resumed.state() == a.state()
    assert resumed.evidence == a.evidence
    assert np.array_equal(resumed.vector(), a.vector())


def test_state_rejects_other_prior_and_garbage() -> None:
    rng = np.random.default_rng(5)
    prior = _prior(rng)
    state = _replay(prior, _events(rng, 8)).state()
    with pytest.raises(ValueError):
        TasteLearner.from_state(_prior(np.random.default_rng(6)), state)
    with pytest.raises(ValueError):
        TasteLearner.from_state(prior, state[:-8])
    with pytest.raises(ValueError):
        TasteLearner.from_state(prior, b"nonsense")


def test_state_size_is_bounded() -> None:
    rng = np.random.default_rng(7)
    prior = _prior(rng, dim=256, rank=32)
    learner = TasteLearner(prior)
    sizes = []
    for _ in range(3):
        for _ in range(50):
            shown = _unit(rng.standard_normal((9, 256)))
            learner.observe_grid(shown, [0, 1, 2])
        sizes.append(len(learner.state()))
    assert len(set(sizes)) == 1
    assert sizes[0] <= 64 * 1024


def test_like_then_unlike_restores_taste() -> None:
    rng = np.random.default_rng(9)
    prior = _prior(rng)
    learner = _replay(prior, _events(rng, 20))
    before = learner.mean()
    image = _unit(rng.standard_normal(DIM))
    learner.observe_like(image)
    liked = learner.mean()
    assert not np.allclose(liked, before)
    learner.observe_unlike(image)
    # Gaussian division is exact in the subspace; the isotropic residual makes it approximate
    assert np.linalg.norm(learner.mean() - before) < 0.25 * np.linalg.norm(liked - before)


def test_evidence_counts_signals() -> None:
    rng = np.random.default_rng(10)
    learner = TasteLearner(_prior(rng))
    learner.observe_grid(_unit(rng.standard_normal((9, DIM))), [0, 3])
    learner.observe_pair(_unit(rng.standard_normal(DIM)), _unit(rng.standard_normal(DIM)))
    image = _unit(rng.standard_normal(DIM))
    learner.observe_like(image)
    learner.observe_unlike(image)
    assert learner.evidence == 3


def test_bad_input_is_rejected() -> None:
    learner = TasteLearner(TastePrior.uninformed(8))
    with pytest.raises(ValueError):
        learner.observe_grid(np.zeros((3, 7)), [0])
    with pytest.raises(ValueError):
        learner.observe_grid(np.eye(8)[:3], [3])
    with pytest.raises(ValueError):
        learner.observe_grid(np.eye(8)[:3], [1, 1])
    with pytest.raises(ValueError):
        learner.observe_like(np.full(8, np.nan))


def test_learning_improves_accuracy_and_uncertainty_falls() -> None:
    world = make_world(WorldConfig(dim=32, n_images=600, n_styles=8, taste_rank=4), seed=1)
    rng = np.random.default_rng(11)
    tastes = world.sample_tastes(rng, 12)
    pairs = world.heldout_pairs(rng, 400)
    prior = TastePrior.from_catalog(world.embeddings[world.serve_pool], 16)
    early, late, unc_drop = [], [], []
    for taste in tastes:
        learner = TasteLearner(prior)
        win = world.pair_win_probability(taste, pairs)
        u0 = learner.uncertainty()
        for g in range(40):
            idx = rng.choice(world.serve_pool, 9, replace=False)
            learner.observe_grid(
                world.embeddings[idx], world.choose(rng, taste, world.embeddings[idx], 3)
            )
            if g == 1:
                early.append(world.expected_accuracy(learner.mean(), win, pairs)[0])
        late.append(world.expected_accuracy(learner.mean(), win, pairs)[0])
        unc_drop.append(learner.uncertainty() < u0)
    assert np.median(late) > np.median(early) + 0.03
    assert np.median(late) > 0.7
    assert all(unc_drop)


def test_should_mint_rule() -> None:
    v = np.array([1.0, 0.0])
    assert should_mint(None, v, 1)
    assert not should_mint(v, v, 0)
    assert not should_mint(v, np.array([0.0, 1.0]), 1)  # never on every pick
    assert should_mint(v, np.array([0.0, 1.0]), 3)
    assert not should_mint(v, np.array([1.0, 0.01]), 10)
    assert should_mint(v, np.array([1.0, 0.01]), 25)


@pytest.mark.parametrize("scale", [1e-170, 1e-300, 1e150, 1e300])
def test_vector_keeps_the_direction_of_a_tiny_or_huge_mean(scale: float) -> None:
    prior = TastePrior(
        mean=np.array([3.0, 4.0, 0.0, 0.0]) * scale,
        basis=np.zeros((0, 4)),
        variances=np.zeros(0),
        residual_variance=1.0,
    )
    assert np.allclose(TasteLearner(prior).vector(), [0.6, 0.8, 0.0, 0.0])


def test_vector_of_a_zero_mean_is_zero() -> None:
    assert not TasteLearner(TastePrior.uninformed(4)).vector().any()


@pytest.mark.parametrize("scale", [1e-170, 1e-320, 1e160, 1e300])
def test_cosine_distance_is_exact_at_any_scale(scale: float) -> None:
    a, b = np.array([1.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.0])
    assert cosine_distance(a * scale, b * scale) == pytest.approx(1 - 1 / np.sqrt(2.0))
    assert cosine_distance(a * scale, a) == pytest.approx(0.0)


@pytest.mark.parametrize("other", [np.zeros(3), np.array([np.inf, 0.0, 0.0])])
def test_cosine_distance_without_a_direction_is_one(other: np.ndarray) -> None:
    assert cosine_distance(np.array([1.0, 0.0, 0.0]), other) == 1.0


_REPLAY_SCRIPT = """
import hashlib, numpy as np
from shared.taste.learner import TasteLearner
from shared.taste.prior import TastePrior
rng = np.random.default_rng(21)
d, r = 256, 24
q, _ = np.linalg.qr(rng.standard_normal((d, r)))
prior = TastePrior(rng.standard_normal(d) * 0.2, q.T, np.linspace(9.0, 1.0, r), 0.3)
learner = TasteLearner(prior)
for _ in range(40):
    shown = rng.standard_normal((9, d))
    shown /= np.linalg.norm(shown, axis=1, keepdims=True)
    learner.observe_grid(shown.astype(np.float32), [int(i) for i in rng.permutation(9)[:3]])
print(hashlib.sha256(learner.state()).hexdigest())
"""


def test_state_bytes_identical_across_processes_and_thread_counts() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    digests = set()
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        env["PYTHONPATH"] = str(root)
        out = subprocess.run(
            [sys.executable, "-c", _REPLAY_SCRIPT],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1
