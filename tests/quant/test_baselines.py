"""Baseline quantizers (linear, log, k-means weights; linear and Miyashita activations), registries, metrics."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from wqcompile.quant import fit_auto_act, fit_lloyd_act, fit_logquant_mse, fit_segmented_act
from wqcompile.quant import (
    ACT_QUANTIZERS,
    WEIGHT_QUANTIZERS,
    ActQuantizer,
    LogHistogram,
    fit_kmeans_weights,
    fit_linear_act,
    fit_linear_weights,
    fit_log_weights,
    fit_miyashita_logquant,
    fit_weighted_entropy,
    fit_wq_logquant,
    sqnr_db,
)
from wqcompile.quant._sorted_stats import SortedStats
from wqcompile.quant.linear_act import STEP_BITS
from wqcompile.quant.log_grid import pow2_16
from wqcompile.runtime_ops.fixed_point import int_thresholds

# A local minimum found by grid + golden section may sit within this relative distance of a
# neighbouring scale that is marginally better; perturbations of 1 % must never improve the error.
PERTURBATION = 0.01


@pytest.fixture(scope="module")
def gauss():
    return np.random.default_rng(21).standard_normal(20000) * 0.05


def _sse(w, cb):
    return float(np.sum((w - cb.dequantize()) ** 2))


# ---------------------------------------------------------------- registries


def test_registries_are_explicit_tables():
    assert WEIGHT_QUANTIZERS == {
        "wq": fit_weighted_entropy,
        "linear": fit_linear_weights,
        "log": fit_log_weights,
        "kmeans": fit_kmeans_weights,
    }
    assert ACT_QUANTIZERS == {"wq": fit_wq_logquant, "linear": fit_linear_act, "miyashita": fit_miyashita_logquant,
                              "logmse": fit_logquant_mse, "lloyd": fit_lloyd_act, "segmented": fit_segmented_act,
                              "auto": fit_auto_act}


@pytest.mark.parametrize("key", ["linear", "log", "kmeans"])
def test_weight_baselines_ignore_unknown_options(gauss, key):
    cb = WEIGHT_QUANTIZERS[key](gauss, 8, mode="per_sign", search="bisect", unknown=1)
    assert cb.method == key and cb.levels == 8


@pytest.mark.parametrize("key", ["linear", "miyashita", "lloyd"])
def test_act_baselines_ignore_unknown_options(key):
    h = LogHistogram()
    h.update(np.abs(np.random.default_rng(22).standard_normal(1000)))
    q = ACT_QUANTIZERS[key](h, 8, mode="robust", unknown=1)
    assert q.method == key and q.levels == 8


@pytest.mark.parametrize("key", sorted(WEIGHT_QUANTIZERS))
def test_weight_fitters_reject_nan(key):
    with pytest.raises(ValueError, match=r"w3.*NaN/Inf"):
        WEIGHT_QUANTIZERS[key](np.array([1.0, np.nan]), 4, name="w3")


@pytest.mark.parametrize("key", sorted(WEIGHT_QUANTIZERS))
def test_weight_fitters_all_zero(caplog, key):
    with caplog.at_level(logging.WARNING):
        cb = WEIGHT_QUANTIZERS[key](np.zeros(10), 4)
    assert "zero" in caplog.text
    assert np.all(cb.dequantize() == 0.0) and cb.levels == 4


@pytest.mark.parametrize("key", sorted(ACT_QUANTIZERS))
def test_act_fitters_without_positives(caplog, key):
    h = LogHistogram()
    h.update(np.array([-1.0, 0.0]))
    with caplog.at_level(logging.WARNING):
        q = ACT_QUANTIZERS[key](h, 4)
    assert "no finite positive" in caplog.text
    assert q.method == "zero" and np.all(q(np.array([1.0, 1e9, np.inf])) == 0.0)


# ---------------------------------------------------------------- linear weights


def test_linear_weights_binary_is_mean_abs(gauss):
    cb = fit_linear_weights(gauss, 2)
    s = np.mean(np.abs(gauss))
    assert np.allclose(cb.values, [-s, s], rtol=1e-12)  # prefix-sum mean vs np.mean: rounding only
    assert np.array_equal(cb.dequantize(), np.where(gauss >= 0, cb.values[1], cb.values[0]))


@pytest.mark.parametrize("L", [3, 4, 8, 16])
def test_linear_weights_grid(gauss, L):
    cb = fit_linear_weights(gauss, L)
    m = (L - 1) // 2
    s = cb.info["step"]
    used = np.unique(cb.values)
    assert used.size == 2 * m + 1 and cb.info["unused_levels"] == L - used.size
    assert np.allclose(used, s * np.arange(-m, m + 1), rtol=0, atol=1e-15)  # s·k rounding only
    # Clipping range within (0, max|w|]; 1e-12 relative covers s = α/m rounding up when α = max|w|.
    assert m * s <= np.max(np.abs(gauss)) * (1 + 1e-12)
    # Nearest-value assignment: no codebook value is closer than the assigned one.
    dist = np.abs(gauss[:, None] - cb.values[None, :])
    assert np.all(np.abs(gauss - cb.dequantize()) <= dist.min(axis=1))
    for scale in (1 - PERTURBATION, 1 + PERTURBATION):
        grid = scale * s * np.arange(m + 1)
        assert SortedStats(np.abs(gauss)).sse(grid) >= cb.info["sse"]


def test_linear_weights_deterministic(gauss):
    a, b = fit_linear_weights(gauss, 16), fit_linear_weights(gauss, 16)
    assert np.array_equal(a.values, b.values) and np.array_equal(a.indices, b.indices)


# ---------------------------------------------------------------- log weights


@pytest.mark.parametrize("L", [2, 4, 8, 16])
def test_log_weights_powers_of_two(gauss, L):
    cb = fit_log_weights(gauss, L)
    mags = np.abs(cb.values)
    exps = np.log2(mags)
    assert np.array_equal(exps, np.round(exps))  # exact powers of two
    K, E = L // 2, cb.info["top_exponent"]
    assert np.array_equal(np.unique(mags), np.ldexp(1.0, np.arange(E - K + 1, E + 1)))
    e0 = math.floor(math.log2(np.max(np.abs(gauss))) + 0.5)
    assert e0 - 3 <= E <= e0 + 1
    # Nearest value: no other codebook value is closer.
    dist = np.abs(gauss[:, None] - cb.values[None, :])
    assert np.all(np.abs(gauss - cb.dequantize()) <= dist.min(axis=1))


def test_log_weights_picks_best_top_exponent(gauss):
    cb = fit_log_weights(gauss, 4)
    stats = SortedStats(np.abs(gauss))
    errs = {E: stats.sse(np.ldexp(1.0, np.arange(E - 1, E + 1))) for E in range(-10, 3)}
    assert cb.info["sse"] == min(errs.values())


def test_log_weights_odd_levels_have_zero():
    cb = fit_log_weights(np.array([0.0, 0.01, -0.5, 1.0]), 5)
    assert cb.values[2] == 0.0 and cb.dequantize()[0] == 0.0


# ---------------------------------------------------------------- k-means


def test_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(23)
    centres = np.array([-1.0, 0.2, 3.0])
    w = np.concatenate([c + 0.01 * rng.standard_normal(3000) for c in centres])
    cb = fit_kmeans_weights(w, 3)
    assert cb.info["converged"]
    means = [np.mean(w[i * 3000 : (i + 1) * 3000]) for i in range(3)]
    assert np.allclose(cb.values, means, rtol=0, atol=1e-12)  # fixed point = blob means, up to prefix-sum rounding


def test_kmeans_is_lloyd_fixed_point(gauss):
    cb = fit_kmeans_weights(gauss, 8, max_iter=2000, tol=0.0)
    q = cb.indices
    for i, v in enumerate(cb.values):
        if np.any(q == i):
            assert math.isclose(v, np.mean(gauss[q == i]), rel_tol=1e-9)  # prefix-sum vs direct mean


def test_kmeans_constant_input_and_empty_clusters():
    cb = fit_kmeans_weights(np.full(10, 0.3), 4)
    assert np.all(cb.dequantize() == 0.3) and cb.info["unused_levels"] == 3
    cb2 = fit_kmeans_weights(np.array([0.0, 0.0, 0.0, 1.0]), 4)  # centres 1/3, 2/3 stay empty
    assert cb2.info["empty_clusters"] == 2
    assert np.array_equal(cb2.dequantize(), [0.0, 0.0, 0.0, 1.0])


def test_kmeans_initialisation_is_linear():
    cb = fit_kmeans_weights(np.array([0.0, 1.0, 2.0, 3.0]), 4, max_iter=1)
    assert cb.values.tolist() == [0.0, 1.0, 2.0, 3.0]


# ---------------------------------------------------------------- linear activations


def test_linear_act_grid_and_optimality():
    rng = np.random.default_rng(24)
    h = LogHistogram()
    h.update(np.maximum(rng.standard_normal(50000), 0.0))
    for L in (2, 4, 16):
        q = fit_linear_act(h, L)
        s, fitted = q.info["scale"], q.info["fitted_scale"]
        # the step keeps STEP_BITS significant bits: values and thresholds are exact dyadic numbers
        mant, e = np.frexp(s)
        assert float(np.ldexp(mant, STEP_BITS)).is_integer() and abs(s / fitted - 1) <= 2.0**-STEP_BITS
        assert np.array_equal(q.values, s * np.arange(L))
        assert np.array_equal(q.thresholds, s * (np.arange(L - 1) + 0.5))
        assert np.array_equal(q.thresholds.astype(np.float32).astype(np.float64), q.thresholds)
        assert q.fsr is None and q.step is None
        nz = np.flatnonzero(h.counts)
        b = nz + h.lo
        stats = SortedStats(np.sqrt(pow2_16(b) * pow2_16(b + 1)), weights=h.counts[nz])
        best = stats.sse(fitted * np.arange(L))
        for scale in (1 - PERTURBATION, 1 + PERTURBATION):
            if scale * fitted * (L - 1) <= h.max_value:
                assert stats.sse(scale * fitted * np.arange(L)) >= best
        assert stats.sse(q.values) <= best * (1 + 2.0**-STEP_BITS)   # flat at the optimum


def test_linear_act_thresholds_lower_to_an_evenly_spaced_integer_grid():
    """Whenever the accumulator spacing is ≥ 64, int_thresholds gives T_n = T_1 + (n - 1)·D exactly (the runtime's
    arithmetic index), with the strict T_0 one above the grid."""
    rng = np.random.default_rng(5)
    h = LogHistogram()
    h.update(np.maximum(rng.standard_normal(50000) * 3.0, 0.0))
    q = fit_linear_act(h, 256)
    for shift in range(-4, 30):
        t = int_thresholds(q.thresholds, shift).astype(np.int64)
        d = q.info["scale"] * 2.0**shift
        if d < 64 or t[-1] >= 2**30:
            continue
        assert np.all(np.diff(t[1:]) == d) and t[0] == t[1] - d + 1, shift


def test_linear_act_round_to_nearest():
    q = ActQuantizer(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5]), "linear")
    assert q.quantize(np.array([0.5, 0.51, 1.49, 1.5, 9.0])).tolist() == [0, 1, 1, 2, 2]


# ---------------------------------------------------------------- Miyashita


def test_miyashita_levels():
    h = LogHistogram()
    h.update(np.array([0.01, 0.3, 5.0]))  # log2(5) = 2.32 -> top exponent 2
    q = fit_miyashita_logquant(h, 8)
    assert q.info["top_exponent"] == 2
    assert q.values.tolist() == [0.0] + [2.0**k for k in range(-4, 3)]
    assert (q.fsr, q.step) == (16 * (2 - 8 + 2), 16)  # WQ convention: lowest level, 1/16 octaves
    ref = ActQuantizer.log(q.fsr, q.step, 8)
    assert np.array_equal(q.values, ref.values) and np.array_equal(q.thresholds, ref.thresholds)


def test_miyashita_log_domain_rounding():
    h = LogHistogram()
    h.update(np.array([1.0]))
    q = fit_miyashita_logquant(h, 4)  # levels 0, 1/4, 1/2, 1
    s = math.sqrt(2.0)
    x = np.array([0.25 / s, 0.2 / s, 0.26 / s, 0.5 / s * 0.999, 0.5 / s * 1.001, 1 / s * 1.001, 100.0])
    assert q(x).tolist() == [0.0, 0.0, 0.25, 0.25, 0.5, 1.0, 1.0]


# ---------------------------------------------------------------- metrics


def test_sqnr_db():
    w = np.array([1.0, -2.0, 3.0])
    assert sqnr_db(w, w) == math.inf
    assert sqnr_db(np.zeros(3), np.zeros(3)) == math.inf
    assert sqnr_db(np.zeros(3), np.ones(3)) == -math.inf
    assert math.isclose(sqnr_db(w, w + np.array([0.1, 0.0, 0.0])), 10 * math.log10(14 / 0.01), rel_tol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        sqnr_db(w, w[:2])


def test_wq_beats_nothing_obvious(gauss):
    # Sanity: every fitter at 4 bits reconstructs a Gaussian with a useful SQNR.
    for key, fit in WEIGHT_QUANTIZERS.items():
        assert sqnr_db(gauss, fit(gauss, 16).dequantize()) > 10.0, key
