"""The dynamic program's levels are the global optimum, and Lloyd started from them escapes the grids' local optima."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import wqcompile.quant.lloyd_act as lloyd_act
import wqcompile.quant.optimal_levels as optimal_levels_module
from wqcompile.quant import LogHistogram, fit_lloyd_act
from wqcompile.quant._sorted_stats import SortedStats
from wqcompile.quant.optimal_levels import optimal_levels


def _sse(x, w, values):
    """Σ w·(x − nearest value)² (nearest by distance, as any set of values is used)."""
    d = (x[:, None] - np.asarray(values)[None, :]) ** 2
    return float((w * d.min(1)).sum())


def _brute_force(x, w, levels):
    """The least error over every way to cut the sorted points into a zero cell and levels − 1 non-empty cells."""
    best = np.inf
    n = x.size
    for zero_end in range(n - levels + 2):
        for cuts in itertools.combinations(range(zero_end + 1, n), levels - 2):
            ends = [zero_end, *cuts, n]
            err = float((w[:zero_end] * x[:zero_end] ** 2).sum())
            for lo, hi in zip(ends[:-1], ends[1:]):
                m = (w[lo:hi] * x[lo:hi]).sum() / w[lo:hi].sum()
                err += float((w[lo:hi] * (x[lo:hi] - m) ** 2).sum())
            best = min(best, err)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_optimal_levels_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, levels = int(rng.integers(4, 10)), int(rng.integers(2, 5))
    x = np.sort(rng.lognormal(0, 1, n))
    w = rng.uniform(0.1, 3.0, n)
    values = optimal_levels(x, w, levels)
    assert values is not None and values[0] == 0.0 and np.all(np.diff(values) > 0) and values.size == levels
    assert _sse(x, w, values) == pytest.approx(_brute_force(x, w, levels), rel=1e-9, abs=1e-12)


def test_too_few_points_for_the_levels_give_none():
    assert optimal_levels(np.array([1.0, 2.0]), np.ones(2), 4) is None
    assert optimal_levels(np.array([1.0, 2.0, 3.0]), np.ones(3), 4) is not None


def test_merged_points_then_lloyd_stay_close_to_the_full_optimum(monkeypatch):
    # more than MAX_POINTS points are merged in groups (here 6), then the caller polishes with Lloyd on all of them
    x = np.geomspace(0.01, 10.0, 600)                        # like a histogram's bins: even in log2
    w = x * x * np.exp(-x) * np.random.default_rng(3).uniform(0.8, 1.2, 600)   # gamma(2) density × bin width
    full = optimal_levels(x, w, 8)
    monkeypatch.setattr(optimal_levels_module, "MAX_POINTS", 100)
    merged = optimal_levels(x, w, 8)
    assert merged is not None and np.all(np.diff(merged) > 0)
    polished, _ = lloyd_act._lloyd(SortedStats(x, w), merged)
    assert _sse(x, w, full) <= _sse(x, w, polished) <= 1.01 * _sse(x, w, full)


def test_lloyd_escapes_the_local_optimum_of_its_grid_starts(monkeypatch):
    # a ReLU6 tensor with much of its mass clipped: Lloyd from the log and uniform grids stops ~5 % above the optimum
    x = np.clip(np.random.default_rng(0).normal(0.5, 2.5, 100_000), 0, 6)
    h = LogHistogram()
    h.update(x.astype(np.float32))
    q = fit_lloyd_act(h, 16)
    monkeypatch.setattr(lloyd_act, "DP_MAX_LEVELS", 0)
    grids_only = fit_lloyd_act(h, 16)
    assert q.info["start"] == "optimal" and grids_only.info["start"] != "optimal"

    def mse(quantizer):
        return float(((quantizer(x) - x) ** 2).mean())

    assert mse(q) < 0.97 * mse(grids_only)
