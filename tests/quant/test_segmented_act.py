"""The segmented (piecewise-uniform) activation quantizer: its grid, its error against the other 8-bit fitters, and
the integer thresholds it lowers to (runs of evenly spaced integers: the runtime's arithmetic index)."""

from __future__ import annotations

import numpy as np
import pytest

from wqcompile.quant import LogHistogram, fit_linear_act, fit_lloyd_act, fit_segmented_act
from wqcompile.quant._sorted_stats import SortedStats
from wqcompile.quant.linear_act import STEP_BITS
from wqcompile.quant.lloyd_act import SUBPOINTS
from wqcompile.quant.segmented_act import candidate_patterns, run_pattern
from wqcompile.runtime_ops.fixed_point import float32_thresholds, int_thresholds


def _hist(x) -> LogHistogram:
    h = LogHistogram()
    h.update(np.asarray(x, dtype=np.float64))
    return h


def _heavy(seed: int, n: int = 60000) -> np.ndarray:
    """A ReLU'd activation with a heavy tail (Student t, 3 degrees of freedom), as deep ResNet blocks produce."""
    return np.maximum(np.random.default_rng(seed).standard_t(3, n), 0.0)


def _runs(t: np.ndarray) -> int:
    """The number of runs of equal spacing in t[1:] (build_threshold_runs' greedy split)."""
    v, j, runs = t[1:].astype(np.int64), 0, 0
    while j < v.size:
        step = v[j + 1] - v[j] if j + 1 < v.size else 1
        n = 1
        while j + n < v.size and v[j + n] - v[j + n - 1] == step:
            n += 1
        runs, j = runs + 1, j + n
    return runs


def _sse(h: LogHistogram, values: np.ndarray) -> float:
    return SortedStats(*h.spread_points(SUBPOINTS)).sse(values)


def test_run_pattern():
    g = run_pattern(8, ((0, 3), (2, 5), (3, 7)))
    assert g.tolist() == [0, 1, 2, 3, 7, 11, 19, 27]
    assert run_pattern(5, ((0, 4),)).tolist() == [0, 1, 2, 3, 4]
    for L in (2, 3, 16, 64, 256):
        for g in candidate_patterns(L):
            steps = np.diff(g)
            assert g[0] == 0 and g.size == L and np.all(steps >= 1)
            assert len(np.unique(steps)) <= 3 and np.all(np.diff(steps) >= 0)          # ≤ 3 runs, growing steps
            assert set(np.log2(steps).tolist()) <= set(range(5))                        # powers of two up to 2^4


@pytest.mark.parametrize("L", [16, 64, 256])
def test_grid_is_dyadic_and_thresholds_are_midpoints(L):
    q = fit_segmented_act(_hist(_heavy(1)), L)
    s, g = q.info["scale"], np.asarray(q.info["pattern"])
    mant, _ = np.frexp(s)
    assert float(np.ldexp(mant, STEP_BITS)).is_integer()
    assert np.array_equal(q.values, s * g) and q.values[0] == 0 and np.all(np.diff(q.values) > 0)
    assert np.array_equal(q.thresholds, s * (g[:-1] + g[1:]) / 2)
    # exact in float32 (QRelu's thresholds): float32_thresholds only nudges the strict first one
    f = float32_thresholds(q.thresholds)
    assert np.array_equal(f[1:].astype(np.float64), q.thresholds[1:]) and f[0] > q.thresholds[0]


def test_beats_linear_and_lloyd_at_eight_bits_on_a_heavy_tail():
    """The measured reason for the quantizer: on heavy-tailed activations Lloyd's 255 levels stay near their start,
    the piecewise grid does not (Open-NSFW, 50 activations: 41.2 dB Lloyd, 40.6 linear, 46.9 segmented)."""
    for seed in range(3):
        h = _hist(_heavy(seed))
        seg = _sse(h, fit_segmented_act(h, 256).values)
        assert seg < 0.8 * _sse(h, fit_lloyd_act(h, 256).values)
        assert seg < 0.8 * _sse(h, fit_linear_act(h, 256).values)


def test_never_much_worse_than_linear():
    """One run is a candidate, so on a light tail (a ReLU'd normal, where uniform is near optimal) the fit is as
    good as the linear quantizer's up to the coarse pattern search and the 6-bit step."""
    for L in (16, 256):
        h = _hist(np.maximum(np.random.default_rng(3).standard_normal(60000), 0))
        assert _sse(h, fit_segmented_act(h, L).values) <= 1.05 * _sse(h, fit_linear_act(h, L).values)


@pytest.mark.parametrize("seed", range(4))
def test_integer_thresholds_are_runs_of_even_spacing(seed):
    """Whenever the finest accumulator spacing is ≥ 64 (so that s·2^shift / 2 is an integer), the lowered
    thresholds are ≤ 3 runs with the strict first threshold one above its grid point: what the runtime's
    arithmetic index takes (it allows 8)."""
    q = fit_segmented_act(_hist(_heavy(10 + seed) * float(np.exp2(seed * 3 - 5))), 256)
    checked = 0
    for shift in range(-10, 40):
        d = q.info["scale"] * 2.0**shift
        t = int_thresholds(q.thresholds, shift).astype(np.int64)
        if d < 64 or t[-1] >= 2**30:
            continue
        exact = q.thresholds * 2.0**shift
        assert np.array_equal(t[1:], exact[1:]) and t[0] == exact[0] + 1
        assert _runs(t) <= 3
        checked += 1
    assert checked > 0


def test_no_positive_activations_give_the_zero_quantizer():
    q = fit_segmented_act(_hist(-np.abs(np.random.default_rng(0).standard_normal(100))), 256)
    assert q.method == "zero" and np.all(q.quantize(np.array([0.5, 3.0, 1e6])) == 0)


def test_levels_out_of_range():
    with pytest.raises(ValueError, match="levels must be in"):
        fit_segmented_act(_hist(_heavy(0)), 257)


def test_the_default_picks_lloyd_up_to_16_levels_and_segmented_above():
    from wqcompile.config import QuantConfig
    from wqcompile.quant import ACT_QUANTIZERS, fit_auto_act

    assert QuantConfig().act_quantizer == "auto" and ACT_QUANTIZERS["auto"] is fit_auto_act
    h = _hist(_heavy(4))
    assert [fit_auto_act(h, L).method for L in (2, 8, 16, 32, 64, 256)] == ["lloyd"] * 3 + ["segmented"] * 3
