"""Lloyd-Max activation levels: never worse than the MSE-optimal log or uniform grid it starts from."""

from __future__ import annotations

import numpy as np
import pytest

from wqcompile.quant import LogHistogram, fit_linear_act, fit_lloyd_act, fit_logquant_mse


def _hist(x: np.ndarray) -> LogHistogram:
    h = LogHistogram()
    h.update(x.astype(np.float32))
    return h


def _mse(q, x: np.ndarray) -> float:
    return float(((q(x) - x.astype(np.float64)) ** 2).mean())


SAMPLES = {
    "relu_normal": np.maximum(np.random.default_rng(0).standard_normal(100_000), 0),
    "relu6": np.clip(np.random.default_rng(1).normal(0.5, 1.5, 100_000), 0, 6),
    "lognormal": np.random.default_rng(2).lognormal(0.0, 1.5, 100_000),
}


@pytest.mark.parametrize("levels", [2, 4, 16, 64])
@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_lloyd_is_no_worse_than_its_starting_grids(kind, levels):
    x = SAMPLES[kind]
    h = _hist(x)
    q = fit_lloyd_act(h, levels)
    assert q.method == "lloyd" and q.levels == levels and q.values[0] == 0.0
    assert np.all(np.diff(q.values) > 0)
    np.testing.assert_allclose(q.thresholds, 0.5 * (q.values[1:] + q.values[:-1]))
    best_start = min(_mse(fit_logquant_mse(h, levels), x), _mse(fit_linear_act(h, levels), x))
    # the fit sees bin centres (±2.2 % inside a 1/16-octave bin), so allow that much on the real samples
    assert _mse(q, x) <= best_start * 1.02


def test_lloyd_clearly_beats_both_grids_on_a_relu6_tensor():
    x = SAMPLES["relu6"]
    h = _hist(x)
    q = fit_lloyd_act(h, 16)
    assert _mse(q, x) < 0.95 * min(_mse(fit_logquant_mse(h, 16), x), _mse(fit_linear_act(h, 16), x))


def test_lloyd_is_deterministic_and_exact_on_few_values():
    x = np.repeat([0.0, 0.25, 1.0, 3.0], 1000)
    h = _hist(x)
    a, b = fit_lloyd_act(h, 4), fit_lloyd_act(h, 4)
    np.testing.assert_array_equal(a.values, b.values)
    # three positive values, three non-zero levels: each value sits in its own cell
    assert len(np.unique(a.quantize(x))) == 4


def test_no_positive_activations_give_the_zero_quantizer():
    h = _hist(-np.ones(10))
    q = fit_lloyd_act(h, 16)
    assert np.all(q(np.array([0.5, 3.0])) == 0)
