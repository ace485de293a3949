"""The minimum-MSE LogQuant parameter search: same level family as WQ, lower histogram error."""

from __future__ import annotations

import numpy as np
import pytest

from wqcompile.quant import LogHistogram, fit_logquant_mse, fit_wq_logquant


def _relu_normal_hist(n: int = 200_000, seed: int = 0) -> tuple[LogHistogram, np.ndarray]:
    x = np.maximum(np.random.default_rng(seed).standard_normal(n), 0).astype(np.float32)
    h = LogHistogram()
    h.update(x)
    return h, x


def _mse(q, x: np.ndarray) -> float:
    return float(((q(x).astype(np.float64) - x) ** 2).mean())


@pytest.mark.parametrize("levels", [2, 4, 8, 16])
def test_mse_search_beats_weighted_entropy_on_mse(levels):
    h, x = _relu_normal_hist()
    ours, wq = fit_logquant_mse(h, levels), fit_wq_logquant(h, levels)
    assert ours.step in range(2, 33, 2) and ours.method == wq.method          # the same LogQuant family
    assert _mse(ours, x) <= _mse(wq, x) * 1.001   # bin-centre approximation: ±2.2 % within a bin, tiny on the total


def test_mse_search_is_the_exhaustive_minimum_on_a_small_histogram():
    h, x = _relu_normal_hist(20_000, 1)
    got = fit_logquant_mse(h, 4)
    centre_x = np.exp2((np.floor(16 * np.log2(x[x > 0])) + 0.5) / 16)    # what the search sees: bin centres
    from wqcompile.quant import ActQuantizer

    best = min(((float(((ActQuantizer.log(f, 2 * hh, 4)(centre_x) - centre_x) ** 2).sum()), f, 2 * hh)
                for hh in range(1, 17) for f in range(h.first_bin - 2 * hh * 2, h.last_bin + 2 * hh)),
               key=lambda t: t[0])
    assert (got.fsr, got.step) == (best[1], best[2]) or np.isclose(
        float(((got(centre_x) - centre_x) ** 2).sum()), best[0], rtol=1e-12)


def test_no_positive_activations_give_the_zero_quantizer():
    h = LogHistogram()
    h.update(-np.ones(10, np.float32))
    q = fit_logquant_mse(h, 16)
    assert np.all(q(np.array([0.5, 3.0], np.float32)) == 0)
