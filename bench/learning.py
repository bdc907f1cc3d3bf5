"""Learning-quality benchmark: how many picks until a profile predicts its member's taste.

Run: ``.venv/bin/python -m bench.learning [--members 200 ...]``

1. Builds a synthetic world (``shared.taste.simulation``): a catalog with style clusters and
   a population of hidden tastes (mean + low-rank + individual noise).
2. Estimates the population prior the way the live system would: earlier members pick from
   random grids, their profiles are learned (first with a catalog-only prior that knows
   nothing about tastes), ``estimate_prior`` is fitted on the learned profiles, and the
   profiles are re-learned under the new prior (EM rounds, replaying the same events).
3. For each grid strategy (random, active) every test member picks 3 of 9 per grid; every
   learner sees the same events (active grids are chosen from our posterior; no image is
   shown twice to a member): centroid of picks, picked-minus-unpicked centroid,
   L2-regularised Bradley-Terry (followed to ``--bt-horizon`` picks on random grids), ours.
4. Reports expected held-out pairwise accuracy (exact expectation under the member's noisy
   choice model), the oracle's (the hidden taste's) accuracy, cosine to the hidden taste and
   N@90%: picks after which the median member's (acc - 0.5) / (oracle - 0.5) reaches 0.9.
   Also the codes a member would get from the minting rule.

Writes ``out/learning.md`` and ``out/learning.png``; prints the table; the last stdout line
is one JSON object.
"""

from __future__ import annotations

import os

# small matrices everywhere: one BLAS thread per worker process is fastest and reproducible
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from shared.taste.grids import choose_grid  # noqa: E402
from shared.taste.learner import TasteLearner  # noqa: E402
from shared.taste.minting import cosine_distance, should_mint  # noqa: E402
from shared.taste.prior import TastePrior, estimate_prior  # noqa: E402
from shared.taste.simulation import World, WorldConfig, make_world  # noqa: E402

LEARNERS = ("centroid", "diff_centroid", "bt_l2", "ours")
LEARNER_LABELS = {
    "centroid": "centroid of picks",
    "diff_centroid": "picked - unpicked centroid",
    "bt_l2": "L2-regularised BT",
    "ours": "ours (Bayesian PL, population prior)",
}
STRATEGIES = ("random", "active")
REPORT_PICKS = (10, 25, 50, 100, 200)
BT_ALPHA = 1.0  # L2 penalty of the BT baseline (= unit-variance isotropic prior)


@dataclass(frozen=True)
class Settings:
    members: int
    prior_members: int
    prior_picks: int
    prior_rounds: int
    prior_rank: int
    grid_size: int
    picks_per_grid: int
    max_picks: int
    dim: int
    n_pairs: int
    seed: int
    workers: int
    unlock_picks: int
    mint_distance: float
    mint_signals: int
    bt_horizon: int
    out: Path


# ---------------------------------------------------------------- baselines


class CentroidLearner:
    def __init__(self, dim: int, contrast: bool) -> None:
        self.contrast = contrast
        self.picked = np.zeros(dim)
        self.unpicked = np.zeros(dim)
        self.n_picked = 0
        self.n_unpicked = 0

    def observe_grid(self, shown: np.ndarray, picked: list[int]) -> None:
        mask = np.zeros(shown.shape[0], dtype=bool)
        mask[picked] = True
        self.picked += shown[mask].sum(axis=0)
        self.n_picked += int(mask.sum())
        self.unpicked += shown[~mask].sum(axis=0)
        self.n_unpicked += int((~mask).sum())

    def vector(self) -> np.ndarray:
        v = self.picked / max(self.n_picked, 1)
        if self.contrast:
            v = v - self.unpicked / max(self.n_unpicked, 1)
        return v


class BradleyTerryL2:
    """L2-regularised Bradley-Terry on (picked > unpicked) pairs, refitted by Newton."""

    def __init__(self, dim: int, alpha: float = BT_ALPHA) -> None:
        self.alpha = alpha
        self.rows: list[np.ndarray] = []
        self.w = np.zeros(dim)

    def observe_grid(self, shown: np.ndarray, picked: list[int]) -> None:
        mask = np.zeros(shown.shape[0], dtype=bool)
        mask[picked] = True
        diffs = shown[mask][:, None, :] - shown[~mask][None, :, :]
        self.rows.append(diffs.reshape(-1, shown.shape[1]))

    def fit(self, iterations: int = 4) -> np.ndarray:
        if not self.rows:
            return self.w
        x = np.vstack(self.rows)
        w = self.w
        d = x.shape[1]
        for _ in range(iterations):
            z = x @ w
            p = 1.0 / (1.0 + np.exp(-z))
            grad = x.T @ (1.0 - p) - self.alpha * w
            hess = (x * (p * (1 - p))[:, None]).T @ x + self.alpha * np.eye(d)
            w = w + np.linalg.solve(hess, grad)
        self.w = w
        return w


# ---------------------------------------------------------------- simulation runs


def _grid_for(
    world: World,
    strategy: str,
    learner: TasteLearner,
    rng: np.random.Generator,
    size: int,
    unseen: np.ndarray,
) -> np.ndarray:
    """Indices (into the catalog) of the next grid, from images this member has not seen."""
    pool = world.serve_pool[np.flatnonzero(unseen)]
    idx = choose_grid(learner, world.embeddings[pool], size, rng, strategy)
    chosen = np.asarray(pool[idx])
    unseen[np.searchsorted(world.serve_pool, chosen)] = False
    return chosen


def _prior_history(args: tuple[World, Settings, int]) -> list[tuple[np.ndarray, list[int]]]:
    """Random-grid picks of one earlier member (each image shown at most once)."""
    world, settings, member = args
    rng = np.random.default_rng([settings.seed, 1, member])
    taste = world.sample_tastes(rng, 1)[0]
    n_grids = max(1, settings.prior_picks // settings.picks_per_grid)
    unseen = np.ones(world.serve_pool.size, dtype=bool)
    history = []
    for _ in range(n_grids):
        if unseen.sum() < settings.grid_size:
            unseen[:] = True
        pool = world.serve_pool[np.flatnonzero(unseen)]
        idx = np.sort(rng.choice(pool, settings.grid_size, replace=False))
        unseen[np.searchsorted(world.serve_pool, idx)] = False
        picks = world.choose(rng, taste, world.embeddings[idx], settings.picks_per_grid)
        history.append((idx, picks))
    return history


_HISTORIES: list[list[tuple[np.ndarray, list[int]]]] = []


def _learn_profile(args: tuple[World, TastePrior, int]) -> tuple[np.ndarray, np.ndarray]:
    world, prior, member = args
    learner = TasteLearner(prior)
    for idx, picks in _HISTORIES[member]:
        learner.observe_grid(world.embeddings[idx], picks)
    return learner.mean(), learner.covariance()


def _map(func: Any, jobs: list[Any], workers: int, log: Any = None, what: str = "") -> list[Any]:
    results: list[Any] = []
    step = max(1, len(jobs) // 10)
    if workers > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers) as pool:
            for res in pool.imap(func, jobs, chunksize=max(1, min(8, len(jobs) // (8 * workers)))):
                results.append(res)
                if log and (len(results) % step == 0 or len(results) == len(jobs)):
                    log(f"{what} {len(results)}/{len(jobs)}")
    else:
        for job in jobs:
            results.append(func(job))
            if log and (len(results) % step == 0 or len(results) == len(jobs)):
                log(f"{what} {len(results)}/{len(jobs)}")
    return results


def estimate_population_prior(
    world: World, settings: Settings, log: Any
) -> tuple[TastePrior, dict[str, Any]]:
    """Earlier members pick from random grids; fit the prior on their learned profiles."""
    jobs = [(world, settings, m) for m in range(settings.prior_members)]
    _HISTORIES[:] = _map(_prior_history, jobs, settings.workers)
    log(f"earlier members simulated: {settings.prior_members} x {settings.prior_picks} picks")
    # round 0 knows nothing about tastes: isotropic prior, with a full covariance tracked in
    # the catalog's main directions of variation (the only ones picks can teach)
    prior = TastePrior.from_catalog(world.embeddings[world.serve_pool], settings.prior_rank)
    info: dict[str, Any] = {}
    for rnd in range(settings.prior_rounds):
        jobs2 = [(world, prior, m) for m in range(settings.prior_members)]
        learned = _map(_learn_profile, jobs2, settings.workers)
        means = np.array([m for m, _ in learned])
        post_cov = np.mean([c for _, c in learned], axis=0)
        prior = estimate_prior(means, settings.prior_rank, posterior_covariance=post_cov)
        log(f"prior EM round {rnd + 1}/{settings.prior_rounds}: rank {prior.rank}")
        info = {"rank": prior.rank, "residual_variance": prior.residual_variance}
    # diagnostics only (never fed back): how well the estimated subspace matches the truth
    overlap = np.linalg.svd(prior.basis @ world.pop_basis.T, compute_uv=False)
    k = min(prior.rank, world.pop_basis.shape[0])
    info["subspace_overlap_mean"] = float(np.mean(overlap[:k])) if k else 0.0
    return prior, info


def measure_costs(world: World, prior: TastePrior, settings: Settings) -> dict[str, Any]:
    """Per-call cost of the live operations (one thread, median of repeats)."""
    rng = np.random.default_rng([settings.seed, 4])
    learner = TasteLearner(prior)
    cands = world.embeddings[world.serve_pool]
    grids = [rng.choice(cands.shape[0], settings.grid_size, replace=False) for _ in range(300)]
    picks = list(range(settings.picks_per_grid))
    times = []
    for idx in grids:
        t0 = time.perf_counter()
        learner.observe_grid(cands[idx], picks)
        times.append(time.perf_counter() - t0)
    grid_times = []
    for _ in range(30):
        t0 = time.perf_counter()
        choose_grid(learner, cands, settings.grid_size, rng, "active")
        grid_times.append(time.perf_counter() - t0)
    state = learner.state()
    t0 = time.perf_counter()
    for _ in range(100):
        TasteLearner.from_state(prior, state)
    return {
        "observe_grid_ms": 1000 * float(np.median(times)),
        "active_grid_ms": 1000 * float(np.median(grid_times)),
        "from_state_ms": 1000 * (time.perf_counter() - t0) / 100,
        "state_bytes": len(state),
        "candidates": int(cands.shape[0]),
    }


def _interp_at(curve_picks: np.ndarray, values: np.ndarray, at: float) -> float:
    return float(np.interp(at, curve_picks, values))


def run_member(args: tuple[World, TastePrior, Settings, int]) -> dict[str, Any]:
    """All strategies and learners for one test member."""
    world, prior, settings, member = args
    rng_taste = np.random.default_rng([settings.seed, 2, member])
    taste = world.sample_tastes(rng_taste, 1)[0]
    pairs = world.heldout_pairs(rng_taste, settings.n_pairs)
    win_prob = world.pair_win_probability(taste, pairs)
    oracle = float(world.expected_accuracy(taste, win_prob, pairs)[0])
    n_grids = -(-settings.max_picks // settings.picks_per_grid)
    picks_axis = settings.picks_per_grid * np.arange(0, n_grids + 1)
    bt_grids = _bt_checkpoints(settings, n_grids)
    out: dict[str, Any] = {"oracle": oracle, "curves": {}, "cos": {}, "codes": {}}
    for s_i, strategy in enumerate(STRATEGIES):
        rng = np.random.default_rng([settings.seed, 3, member, s_i])
        ours = TasteLearner(prior)
        centroid = CentroidLearner(world.dim, contrast=False)
        diff = CentroidLearner(world.dim, contrast=True)
        bt = BradleyTerryL2(world.dim)
        vecs: dict[str, list[np.ndarray]] = {name: [] for name in LEARNERS}
        zero = np.zeros(world.dim)
        for name in ("centroid", "diff_centroid", "ours"):
            vecs[name].append(ours.mean() if name == "ours" else zero)
        vecs["bt_l2"].append(zero)
        unseen = np.ones(world.serve_pool.size, dtype=bool)
        last_code: np.ndarray | None = None
        since = 0
        codes: list[np.ndarray] = []
        for g in range(n_grids):
            if unseen.sum() < settings.grid_size:
                unseen[:] = True
            idx = _grid_for(world, strategy, ours, rng, settings.grid_size, unseen)
            shown = world.embeddings[idx]
            picks = world.choose(rng, taste, shown, settings.picks_per_grid)
            ours.observe_grid(shown, picks)
            centroid.observe_grid(shown, picks)
            diff.observe_grid(shown, picks)
            bt.observe_grid(shown, picks)
            vecs["ours"].append(ours.mean())
            vecs["centroid"].append(centroid.vector())
            vecs["diff_centroid"].append(diff.vector())
            if g + 1 in bt_grids:
                vecs["bt_l2"].append(bt.fit().copy())
            since += len(picks)
            if ours.evidence >= settings.unlock_picks and should_mint(
                last_code,
                ours.vector(),
                since,
                min_distance=settings.mint_distance,
                max_signals=settings.mint_signals,
            ):
                last_code = ours.vector()
                codes.append(last_code)
                since = 0
        for name in LEARNERS:
            pred = np.array(vecs[name])
            acc = world.expected_accuracy(pred, np.tile(win_prob, (len(pred), 1)), pairs)
            norms = np.linalg.norm(pred, axis=1) * np.linalg.norm(taste)
            cos = np.where(norms > 0, pred @ taste / np.where(norms > 0, norms, 1.0), 0.0)
            axis = (
                picks_axis
                if name != "bt_l2"
                else settings.picks_per_grid * np.array([0, *sorted(bt_grids)])
            )
            key = f"{strategy}/{name}"
            # resample every learner onto the per-grid axis (BT is fitted at checkpoints)
            out["curves"][key] = np.interp(picks_axis, axis, acc)
            out["cos"][key] = np.interp(picks_axis, axis, cos)
        if strategy == "random" and settings.bt_horizon > settings.max_picks:
            # keep feeding the BT baseline past the horizon to find where it reaches 90%
            ext_grids = -(-settings.bt_horizon // settings.picks_per_grid)
            ext_axis = [n_grids]
            ext_acc = [float(out["curves"]["random/bt_l2"][-1])]
            for g in range(n_grids, ext_grids):
                if unseen.sum() < settings.grid_size:
                    unseen[:] = True
                idx = _grid_for(world, "random", ours, rng, settings.grid_size, unseen)
                shown = world.embeddings[idx]
                bt.observe_grid(shown, world.choose(rng, taste, shown, settings.picks_per_grid))
                if (g + 1 - n_grids) % 10 == 0 or g + 1 == ext_grids:
                    w_bt = bt.fit(iterations=3)
                    ext_axis.append(g + 1)
                    ext_acc.append(float(world.expected_accuracy(w_bt, win_prob, pairs)[0]))
            out["bt_ext"] = (settings.picks_per_grid * np.array(ext_axis), np.array(ext_acc))
        dists = [cosine_distance(a, b) for a, b in itertools.pairwise(codes)]
        out["codes"][strategy] = (len(codes), dists)
    return out


def _bt_checkpoints(settings: Settings, n_grids: int) -> set[int]:
    ppg = settings.picks_per_grid
    points = {n_grids}
    for picks in (*REPORT_PICKS, 40, 60, 75, 90, 120, 140, 160, 180):
        lo = max(1, picks // ppg)
        points.update({min(lo, n_grids), min(lo + 1, n_grids)})
    points.update(range(4, n_grids + 1, 4))
    return points


# ---------------------------------------------------------------- reporting


def n_at_90(picks_axis: np.ndarray, median_norm: np.ndarray) -> int | None:
    """First pick count where the median normalised accuracy reaches 0.9 (interpolated)."""
    above = np.flatnonzero(median_norm >= 0.9)
    if above.size == 0:
        return None
    i = int(above[0])
    if i == 0:
        return int(picks_axis[0])
    x0, x1 = picks_axis[i - 1], picks_axis[i]
    y0, y1 = median_norm[i - 1], median_norm[i]
    frac = (0.9 - y0) / (y1 - y0) if y1 != y0 else 1.0
    return int(np.ceil(x0 + frac * (x1 - x0)))


def summarise(results: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    n_grids = -(-settings.max_picks // settings.picks_per_grid)
    picks_axis = settings.picks_per_grid * np.arange(0, n_grids + 1)
    oracle = np.array([r["oracle"] for r in results])
    rows: dict[str, dict[str, Any]] = {}
    for strategy in STRATEGIES:
        for name in LEARNERS:
            key = f"{strategy}/{name}"
            acc = np.array([r["curves"][key] for r in results])
            cos = np.array([r["cos"][key] for r in results])
            norm = (acc - 0.5) / (oracle[:, None] - 0.5)
            med_norm = np.median(norm, axis=0)
            rows[key] = {
                "acc": {p: _interp_at(picks_axis, np.median(acc, axis=0), p) for p in REPORT_PICKS},
                "cos": {p: _interp_at(picks_axis, np.median(cos, axis=0), p) for p in REPORT_PICKS},
                "n90": n_at_90(picks_axis, med_norm),
                "n90_horizon": settings.max_picks,
                "median_norm": med_norm,
                "acc_40": _interp_at(picks_axis, np.median(acc, axis=0), 40),
            }
    row = rows["random/bt_l2"]
    if row["n90"] is None and results and "bt_ext" in results[0]:
        ext_axis = results[0]["bt_ext"][0]
        ext = np.array([r["bt_ext"][1] for r in results])
        ext_norm = np.median((ext - 0.5) / (oracle[:, None] - 0.5), axis=0)
        row["n90"] = n_at_90(ext_axis, ext_norm)
        row["n90_horizon"] = int(ext_axis[-1])
        row["ext_median_norm"] = (ext_axis, ext_norm)
    codes = {}
    for strategy in STRATEGIES:
        counts = [r["codes"][strategy][0] for r in results]
        dists = [d for r in results for d in r["codes"][strategy][1]]
        codes[strategy] = {
            "mean_codes": float(np.mean(counts)),
            "mean_distance": float(np.mean(dists)) if dists else 0.0,
        }
    return {
        "rows": rows,
        "oracle": float(np.median(oracle)),
        "picks_axis": picks_axis,
        "codes": codes,
    }


def render_markdown(summary: dict[str, Any], settings: Settings, extra: dict[str, Any]) -> str:
    def fmt_n(row: dict[str, Any]) -> str:
        return f"> {row['n90_horizon']}" if row["n90"] is None else str(row["n90"])

    head = " | ".join(f"acc@{p}" for p in REPORT_PICKS)
    lines = [
        f"# Taste learning benchmark ({settings.members} members, grids of "
        f"{settings.grid_size}, {settings.picks_per_grid} picks each, d={settings.dim})",
        "",
        f"Oracle (hidden taste) held-out pairwise accuracy: {summary['oracle']:.3f} (median). "
        "Accuracies are medians over members of the exact expected agreement with the "
        "member's own noisy choices on held-out pairs; N@90% = picks until the median "
        "member's (acc - 0.5) / (oracle - 0.5) reaches 0.9.",
        "",
        f"| grids | learner | {head} | cos@50 | cos@200 | N@90% |",
        "|---|---|" + "---|" * (len(REPORT_PICKS) + 3),
    ]
    for strategy in STRATEGIES:
        for name in LEARNERS:
            row = summary["rows"][f"{strategy}/{name}"]
            accs = " | ".join(f"{row['acc'][p]:.3f}" for p in REPORT_PICKS)
            lines.append(
                f"| {strategy} | {LEARNER_LABELS[name]} | {accs} | {row['cos'][50]:.3f} | "
                f"{row['cos'][200]:.3f} | {fmt_n(row)} |"
            )
    lines += ["", "## Codes (minting rule over the run, ours)", ""]
    lines.append("| grids | codes per member | mean cosine distance between consecutive codes |")
    lines.append("|---|---|---|")
    for strategy in STRATEGIES:
        c = summary["codes"][strategy]
        lines.append(f"| {strategy} | {c['mean_codes']:.2f} | {c['mean_distance']:.4f} |")
    lines += [
        "",
        f"Minting: first code at unlock ({settings.unlock_picks} picks), then when the cosine "
        f"distance from the last code reaches {settings.mint_distance} or "
        f"{settings.mint_signals} new picks arrived (never more often than every 3 picks).",
        "",
        "## Prior",
        "",
        f"Estimated from {settings.prior_members} earlier members x {settings.prior_picks} "
        f"picks on random grids, {settings.prior_rounds} EM rounds: rank {extra['rank']}, "
        f"residual variance {extra['residual_variance']:.4f}; diagnostic only: mean canonical "
        f"correlation with the hidden population subspace {extra['subspace_overlap_mean']:.3f}.",
        "",
        "## Costs (one thread, median)",
        "",
        f"observe_grid (d={settings.dim}, k={settings.grid_size}): "
        f"{extra['observe_grid_ms']:.3f} ms; TasteLearner.from_state: "
        f"{extra['from_state_ms']:.3f} ms; state size: {extra['state_bytes']} bytes "
        f"(prior rank {extra['rank']}); choose_grid active over {extra['candidates']} "
        f"candidates: {extra['active_grid_ms']:.1f} ms.",
        "",
        f"Runtime: {extra['runtime_s']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    axis = summary["picks_axis"]
    styles = {"random": "--", "active": "-"}
    colours = {"centroid": "C0", "diff_centroid": "C1", "bt_l2": "C2", "ours": "C3"}
    for strategy in STRATEGIES:
        for name in LEARNERS:
            ax.plot(
                axis,
                summary["rows"][f"{strategy}/{name}"]["median_norm"],
                styles[strategy],
                color=colours[name],
                label=f"{LEARNER_LABELS[name]} / {strategy}",
            )
    ext = summary["rows"]["random/bt_l2"].get("ext_median_norm")
    if ext is not None:
        ax.plot(ext[0], ext[1], ":", color=colours["bt_l2"], label="L2-regularised BT / random")
    ax.axhline(0.9, color="grey", lw=0.8)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xlabel("picks")
    ax.set_ylabel("median normalised accuracy (acc-0.5)/(oracle-0.5)")
    ax.set_ylim(-0.1, 1.05)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Taste learning curves")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=200)
    p.add_argument("--prior-members", type=int, default=400)
    p.add_argument("--prior-picks", type=int, default=600)
    p.add_argument("--prior-rounds", type=int, default=6)
    p.add_argument("--prior-rank", type=int, default=32)
    p.add_argument("--grid-size", type=int, default=9)
    p.add_argument("--picks-per-grid", type=int, default=3)
    p.add_argument("--max-picks", type=int, default=200)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--pairs", type=int, default=1000, help="held-out pairs per member")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--unlock-picks", type=int, default=40)
    p.add_argument("--mint-distance", type=float, default=0.05)
    p.add_argument("--mint-signals", type=int, default=25)
    p.add_argument(
        "--bt-horizon",
        type=int,
        default=500,
        help="picks up to which BT on random grids is followed to find its N@90%%",
    )
    p.add_argument("--out", type=Path, default=Path("out"))
    a = p.parse_args(argv)
    if a.picks_per_grid >= a.grid_size:
        p.error("--picks-per-grid must be smaller than --grid-size")
    settings = Settings(
        members=a.members,
        prior_members=a.prior_members,
        prior_picks=a.prior_picks,
        prior_rounds=max(1, a.prior_rounds),
        prior_rank=a.prior_rank,
        grid_size=a.grid_size,
        picks_per_grid=a.picks_per_grid,
        max_picks=a.max_picks,
        dim=a.dim,
        n_pairs=a.pairs,
        seed=a.seed,
        workers=max(1, a.workers),
        unlock_picks=a.unlock_picks,
        mint_distance=a.mint_distance,
        mint_signals=a.mint_signals,
        bt_horizon=a.bt_horizon,
        out=a.out,
    )
    return settings


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    out_dir = settings.out
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    world = make_world(WorldConfig(dim=settings.dim), seed=settings.seed)
    log(f"world: {world.embeddings.shape[0]} images, temperature {world.temperature:.4f}")
    prior, prior_info = estimate_population_prior(world, settings, log)
    timing = measure_costs(world, prior, settings)
    log(
        f"costs: observe_grid {timing['observe_grid_ms']:.3f} ms, active grid "
        f"{timing['active_grid_ms']:.2f} ms, state {timing['state_bytes']} bytes"
    )
    prior_info.update(timing)
    jobs = [(world, prior, settings, m) for m in range(settings.members)]
    results = _map(run_member, jobs, settings.workers, log, "members")
    summary = summarise(results, settings)
    runtime = time.monotonic() - started
    prior_info["runtime_s"] = runtime
    out_dir.mkdir(parents=True, exist_ok=True)
    table = render_markdown(summary, settings, prior_info)
    (out_dir / "learning.md").write_text(table)
    plot(summary, out_dir / "learning.png")
    rows = summary["rows"]
    n_active = rows["active/ours"]["n90"]
    n_random = rows["random/ours"]["n90"]
    n_bt = rows["random/bt_l2"]["n90"]
    result = {
        "members": settings.members,
        "oracle_acc": round(summary["oracle"], 4),
        "n_at_90_active": n_active,
        "n_at_90_random": n_random,
        "n_at_90_bt_random": n_bt,
        "n_at_90_bt_random_lower_bound": (
            rows["random/bt_l2"]["n90_horizon"] + 1 if n_bt is None else n_bt
        ),
        "acc_at_40_active": round(rows["active/ours"]["acc_40"], 4),
        "acc_at_40_random": round(rows["random/ours"]["acc_40"], 4),
        "codes_per_member_active": round(summary["codes"]["active"]["mean_codes"], 2),
        "code_distance_active": round(summary["codes"]["active"]["mean_distance"], 4),
        "prior_rank": prior.rank,
        "observe_grid_ms": round(prior_info["observe_grid_ms"], 3),
        "active_grid_ms": round(prior_info["active_grid_ms"], 2),
        "state_bytes": prior_info["state_bytes"],
        "runtime_s": round(runtime, 1),
    }
    print(table)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
