"""WQ weighted log quantization of activations against wq-algorithm.md §3 and §7 (vectors 3-5)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from tests.quant.listed import assert_listed
from tests.quant.spec_vectors import relu_normal_histogram
from wqcompile.quant import ActQuantizer, LogHistogram, fit_wq_logquant
from wqcompile.quant import log_histogram as log_histogram_module
from wqcompile.quant.log_grid import pow2_16


@pytest.fixture(scope="module")
def relu_hist():
    return relu_normal_histogram()


# ---------------------------------------------------------------- §3.7 / §7.3 search output


def test_relu_histogram_shape(relu_hist):
    assert relu_hist.first_bin == -257 and relu_hist.last_bin == 36
    min_offset = relu_hist.first_bin - 1
    assert min_offset + 640 == 382  # the code's array index of min_offset
    assert relu_hist.last_bin - min_offset + 1 == 295  # the code's `length`


@pytest.mark.parametrize(
    ("L", "fsr", "step", "S"),
    [(2, 23, 32, "0.82747"), (4, -5, 12, "1.18130"), (8, -15, 6, "1.73690"), (16, -31, 4, "2.23314")],
)
def test_relu_normal_search(relu_hist, L, fsr, step, S):
    q = fit_wq_logquant(relu_hist, L, mode="code")
    assert (q.fsr, q.step) == (fsr, step)
    assert_listed(q.info["S"], S)
    assert q.info["fallback"] is None and q.method == "wq"


@pytest.mark.parametrize(
    ("L", "lowest", "ratio"),
    [(2, "2.709", "4"), (4, "0.8052", "1.682"), (8, "0.5221", "1.297"), (16, "0.2611", "1.189")],
)
def test_relu_normal_levels(relu_hist, L, lowest, ratio):
    q = fit_wq_logquant(relu_hist, L)
    assert_listed(q.values[1], lowest)
    assert_listed(2.0 ** (q.step / 16), ratio)


def test_relu_normal_level_occupancy(relu_hist):
    """§3.7: at 3 bits 67.7 % of all outputs (negatives included) are 0, then 4.7 … 1.5 %."""
    q = fit_wq_logquant(relu_hist, 8)
    b = np.arange(relu_hist.lo, relu_hist.hi + 1)
    # Levels are unions of whole bins, so a bin's centre carries the bin's level.
    level = q.quantize(np.sqrt(pow2_16(b) * pow2_16(b + 1)))
    counts = np.bincount(level, weights=relu_hist.counts, minlength=8)
    counts[0] += 1e6  # the 10^6 negatives of N(0, 1) quantize to 0
    percent = 100 * counts / counts.sum()
    assert_listed(percent, ["67.7", "4.7", "5.6", "6.2", "6.1", "5.1", "3.2", "1.5"])


def test_relu_normal_monte_carlo():
    """§3.7: a 2·10^6-sample N(0,1) run selects the same (FSR, step) as the expected counts."""
    x = np.random.default_rng(0).standard_normal(2_000_000)
    h = LogHistogram()
    h.update(np.maximum(x, 0.0))
    got = [(q.fsr, q.step) for q in (fit_wq_logquant(h, L) for L in (2, 4, 8, 16))]
    assert got == [(23, 32), (-5, 12), (-15, 6), (-31, 4)]


def test_search_matches_literal_pseudocode():
    """§8 ``wq_activation_calibrate`` written literally (scalar loops) on a random histogram."""
    rng = np.random.default_rng(11)
    h = LogHistogram()
    h.update(np.exp(rng.normal(-1.0, 1.5, 20000)))
    first, last = h.first_bin, h.last_bin
    cum = {b: int(c) for b, c in zip(range(h.lo, h.hi + 1), h.cumulative())}
    tot = h.positive_count

    def cum_at(b):
        return cum.get(b, 0) if b <= h.hi else tot

    for L in (2, 3, 4, 8):
        for mode in ("code", "robust"):
            best = (0.0, None)
            for hh in range(1, 17):
                lo = first - 1 + 40 if mode == "code" else first - hh + 1
                for fsr in range(lo, last - hh * (2 * L - 5) + 1):
                    S = 0.0
                    for n in range(1, L):
                        a = fsr + 2 * hh * (n - 1) - hh
                        e = fsr + 2 * hh * (n - 1) + hh
                        cnt = tot - cum_at(a - 1) if n == L - 1 else cum_at(e - 1) - cum_at(a - 1)
                        p = cnt / tot
                        if p > 0:
                            S -= 2 ** ((fsr + 2 * hh * (n - 1)) / 16) * p * math.log(p)
                    if S > best[0]:
                        best = (S, (fsr, 2 * hh))
            q = fit_wq_logquant(h, L, mode=mode)
            assert (q.fsr, q.step) == best[1], (L, mode)
            assert math.isclose(q.info["S"], best[0], rel_tol=1e-12)  # summation order only


def test_histogram_is_exact_sufficient_statistic():
    """S_act from the histogram equals S_act of the actual samples quantized with the result."""
    rng = np.random.default_rng(12)
    x = np.maximum(rng.standard_normal(50000), 0.0).astype(np.float32)
    h = LogHistogram()
    h.update(x)
    for L in (2, 4, 8, 16):
        q = fit_wq_logquant(h, L, mode="robust")
        lev = q.quantize(x[x > 0])
        p = np.bincount(lev, minlength=L)[1:] / lev.size
        S = -sum(v * pn * math.log(pn) for v, pn in zip(q.values[1:], p) if pn > 0)
        assert math.isclose(S, q.info["S"], rel_tol=1e-12)  # summation order only


# ---------------------------------------------------------------- §3.7 / §7.4 mapping


def test_levels_and_thresholds_l8():
    q = ActQuantizer.log(-15, 6, 8)
    assert_listed(q.values, ["0", "0.5221", "0.6771", "0.8781", "1.1388", "1.4768", "1.9152", "2.4837"])
    assert_listed(q.thresholds, ["0.4585", "0.5946", "0.7711", "1.0", "1.2968", "1.6818", "2.1810"])
    assert q.thresholds[3] == 1.0  # t = 0 exactly
    assert q.levels == 8 and (q.fsr, q.step) == (-15, 6)


def test_sample_values_l8():
    q = ActQuantizer.log(-15, 6, 8)
    x = np.array([0.45, 0.7, 1.0, 5.0, 0.4585, 0.46])
    assert q.quantize(x).tolist() == [0, 2, 4, 7, 0, 1]  # 1.0 is the tie, rounded up to level 4
    assert_listed(q(x), ["0", "0.6771", "1.1388", "2.4837", "0", "0.5221"])


def test_tie_conventions():
    q = ActQuantizer.log(-15, 6, 8)
    T = q.thresholds
    assert q.quantize(T[0]) == 0  # on the zero threshold: round(−0.5) = −1 → level 0
    assert q.quantize(np.nextafter(T[0], np.inf)) == 1
    for n in range(1, 7):
        assert q.quantize(T[n]) == n + 1  # on any other threshold: up
        assert q.quantize(np.nextafter(T[n], 0.0)) == n


def test_matches_code_rounding_formula():
    """Off the ties, level = clip(round_half_away((16·log2 a − FSR)/step) + 1, L−1), 0 if m < 0."""
    rng = np.random.default_rng(13)
    a = np.exp2(rng.uniform(-8, 8, 20000))
    for fsr, step, L in ((-15, 6, 8), (23, 32, 2), (-40, 2, 256), (7, 10, 5)):
        q = ActQuantizer.log(fsr, step, L)
        m = (16 * np.log2(a) - fsr) / step
        m = np.sign(m) * np.floor(np.abs(m) + 0.5)  # CUDA round: half away from zero
        expected = np.where(m < 0, 0, np.minimum(m, L - 2) + 1)
        assert np.array_equal(q.quantize(a), expected)


def test_nonpositive_nan_inf_mapping():
    q = ActQuantizer.log(-15, 6, 8)
    x = np.array([0.0, -0.0, -3.0, -np.inf, np.nan, np.inf])
    assert q.quantize(x).tolist() == [0, 0, 0, 0, 0, 7]
    assert q(x).tolist()[:5] == [0.0] * 5


@pytest.mark.parametrize("step", [0, 3, -2])
def test_log_rejects_odd_or_nonpositive_step(step):
    with pytest.raises(ValueError, match="step"):
        ActQuantizer.log(0, step, 8)


# ---------------------------------------------------------------- edge cases (§3.6)


def test_no_positive_activations(caplog):
    h = LogHistogram()
    h.update(-np.abs(np.random.default_rng(14).standard_normal(1000)))
    h.update(np.zeros(10))
    with caplog.at_level(logging.WARNING):
        q = fit_wq_logquant(h, 8, name="relu3")
    assert "relu3" in caplog.text and "no finite positive" in caplog.text
    assert q.method == "zero" and (q.fsr, q.step) == (0, 2)
    assert np.all(q(np.array([0.0, 1e-30, 1.0, 1e30, np.inf, np.nan])) == 0.0)
    assert q.values[0] == 0.0 and np.all(np.diff(q.values) > 0)


def test_narrow_distribution_fallback(caplog):
    h = LogHistogram()
    h.update(np.linspace(1.0, 1.2, 1000))  # spans 5 bins: no code-mode candidate for L = 8
    with caplog.at_level(logging.WARNING):
        q = fit_wq_logquant(h, 8, mode="code")
    assert "too narrow" in caplog.text
    assert q.info["fallback"] == "narrow" and q.info["candidates"] == 0
    assert (q.fsr, q.step) == (h.last_bin - (2 * 8 - 5), 2)


def test_robust_mode_handles_narrow_distribution():
    h = LogHistogram()
    h.update(np.linspace(1.0, 1.5, 1000))
    q = fit_wq_logquant(h, 2, mode="robust")
    assert q.info["fallback"] is None and q.info["S"] > 0
    assert q.fsr >= h.first_bin - 16 + 1


def test_single_bin_distribution_falls_back():
    h = LogHistogram()
    h.update(np.full(100, 3.0))  # every candidate puts all mass in one level: S = 0
    q = fit_wq_logquant(h, 4, mode="robust")
    assert q.info["fallback"] == "narrow"


def test_nan_and_inf_in_calibration(caplog):
    rng = np.random.default_rng(15)
    x = np.maximum(rng.standard_normal(20000), 0)
    h_clean = LogHistogram()
    h_clean.update(x)
    h = LogHistogram()
    h.update(np.concatenate((x, [np.nan, np.nan, np.inf])))
    assert (h.n_nan, h.n_posinf, h.positive_count) == (2, 1, h_clean.positive_count + 1)
    assert (h.first_bin, h.last_bin) == (h_clean.first_bin, h_clean.last_bin)  # +inf does not move the range
    with caplog.at_level(logging.WARNING):
        q = fit_wq_logquant(h, 8)
    assert "NaN" in caplog.text
    assert q.quantize(np.inf) == 7 and q.quantize(np.nan) == 0


def test_inf_counts_in_top_level():
    h_inf = LogHistogram.from_bin_counts(np.array([10, 10, 10, 10]), 0)
    h_inf.update(np.array([np.inf] * 40))
    # L = 2: S of the chosen candidate, recomputed from samples (bin centres stand for the counts).
    q = fit_wq_logquant(h_inf, 2, mode="robust")
    b = np.repeat(np.arange(4), 10)
    centres = np.sqrt(pow2_16(b) * pow2_16(b + 1))
    lev = q.quantize(np.concatenate((centres, np.full(40, np.inf))))
    assert np.all(lev[40:] == 1)
    p1 = np.count_nonzero(lev == 1) / 80
    assert math.isclose(q.info["S"], -q.values[1] * p1 * math.log(p1), rel_tol=1e-12)  # same formula, other evaluation order


# ---------------------------------------------------------------- histogram


def test_bin_edges_are_exact():
    k = np.arange(-2048, 2048)
    a = pow2_16(k)
    h = LogHistogram()
    h.update(a)
    assert np.all(h.counts == 1)  # 2^(k/16) lands in bin k
    below = np.nextafter(a[1:], 0.0)
    assert np.array_equal(log_histogram_module.log_bins(below), k[1:] - 1)
    assert np.array_equal(log_histogram_module.log_bins(a), k)


def test_float32_binning_matches_float64_edges():
    rng = np.random.default_rng(16)
    x = np.exp2(rng.uniform(-30, 30, 100000)).astype(np.float32)
    b = log_histogram_module.log_bins(x.astype(np.float64))
    xd = x.astype(np.float64)
    assert np.all(pow2_16(b) <= xd) and np.all(xd < pow2_16(b + 1))


def test_histogram_agrees_with_quantizer_thresholds():
    """Bin b is at or above threshold edge t exactly when the value is (the sufficient-statistic property)."""
    rng = np.random.default_rng(17)
    x = np.exp2(rng.uniform(-4, 4, 50000))
    x = np.concatenate((x, pow2_16(np.arange(-64, 64))))  # include exact edges
    q = ActQuantizer.log(-20, 4, 16)
    b = log_histogram_module.log_bins(x)
    edges_t = np.concatenate(([q.fsr - 2], q.fsr + np.arange(14) * 4 + 2))
    from_bins = (b[:, None] >= edges_t[None, :]).sum(axis=1)
    lev = q.quantize(x)
    on_t0 = x == q.thresholds[0]  # the one documented difference: strict zero threshold
    assert np.array_equal(lev[~on_t0], from_bins[~on_t0])
    assert np.all(lev[on_t0] == 0)


def test_histogram_counts_and_clamping():
    h = LogHistogram()
    tiny = np.array([1e-45, 1e-40], dtype=np.float32)  # float32 subnormals
    h.update(tiny)
    h.update(np.array([1e300, -1e300, -5.0, 0.0, -0.0, np.nan, np.inf, -np.inf, 3.0]))
    assert h.counts[0] == 2 and h.counts[-1] == 1
    assert (h.n_nonpositive, h.n_nan, h.n_posinf, h.total) == (5, 1, 1, 11)
    assert h.max_value == 1e300 and h.max_abs == 1e300
    assert h.positive_count == 5


def test_update_chunks_do_not_change_result(monkeypatch):
    x = np.random.default_rng(18).standard_normal(10007).astype(np.float32)
    ref = LogHistogram()
    ref.update(x)
    monkeypatch.setattr(log_histogram_module, "_CHUNK", 1000)
    h = LogHistogram()
    h.update(x.reshape(-1, 1))
    assert np.array_equal(h.counts, ref.counts) and h.to_dict().keys() == ref.to_dict().keys()
    assert all(np.array_equal(v, ref.to_dict()[k]) for k, v in h.to_dict().items())


def test_to_dict_roundtrip_npz(tmp_path):
    h = LogHistogram()
    h.update(np.array([0.5, 2.0, -1.0, np.nan, np.inf, 7.0]))
    np.savez(tmp_path / "h.npz", **h.to_dict())
    with np.load(tmp_path / "h.npz") as f:
        g = LogHistogram.from_dict(f)
    assert np.array_equal(g.counts, h.counts)
    for key in ("lo", "n_nonpositive", "n_nan", "n_posinf", "total", "max_value", "max_abs"):
        assert getattr(g, key) == getattr(h, key)
    assert np.array_equal(g.cumulative(), np.cumsum(h.counts))


def test_merge_rejects_different_grid():
    a, b = LogHistogram(), LogHistogram()
    b.counts = b.counts[:-1]
    with pytest.raises(ValueError, match="grid"):
        a.merge(b)
