"""GPTQ codebook assignment: exact nearest search, equal to rounding without correlations, better with them."""

from __future__ import annotations

import numpy as np
import pytest

from wqcompile.quant.gptq import damped, gptq_assign, nearest_index


def _error(w, h, values, idx):
    d = np.take_along_axis(values, idx, axis=2) - w
    return float(np.einsum("gok,gkl,gol->", d, h, d))


def _rounded(w, values):
    g, og, k = w.shape
    flat = values.reshape(g * og, -1)
    return np.stack([nearest_index(w.reshape(-1, k)[:, i], flat) for i in range(k)], axis=1).reshape(g, og, k)


@pytest.mark.parametrize("levels", [2, 3, 16, 256])
def test_nearest_index_matches_brute_force(levels):
    rng = np.random.default_rng(levels)
    values = rng.standard_normal((50, levels))              # unsorted rows
    x = rng.standard_normal(50) * 2
    got = nearest_index(x, values)
    want = np.abs(values - x[:, None]).argmin(axis=1)
    np.testing.assert_array_equal(values[np.arange(50), got], values[np.arange(50), want])


def test_without_correlations_gptq_is_nearest_rounding():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 5, 12))
    h = np.stack([np.diag(rng.uniform(0.5, 2.0, 12)) for _ in range(2)])   # independent inputs: nothing to feed back
    values = np.sort(rng.standard_normal((2, 5, 8)), axis=2)
    np.testing.assert_array_equal(gptq_assign(w, h, values), _rounded(w, values))


@pytest.mark.parametrize("groups,rows,k,levels", [(1, 32, 200, 16), (3, 4, 9, 4), (2, 8, 300, 8)])
def test_gptq_lowers_the_output_error_on_correlated_inputs(groups, rows, k, levels):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((groups, 2000, k)) @ rng.standard_normal((groups, k, k)) * 0.3 + rng.standard_normal((groups, 2000, k))
    h = np.matmul(x.transpose(0, 2, 1), x)
    w = rng.standard_normal((groups, rows, k))
    values = np.broadcast_to(np.linspace(-2, 2, levels), (groups, rows, levels)).copy()
    idx = gptq_assign(w, h, values, block=64)          # several blocks for k > 64
    assert idx.shape == w.shape and idx.min() >= 0 and idx.max() < levels
    assert _error(w, h, values, idx) < 0.95 * _error(w, h, values, _rounded(w, values))


def test_damping_handles_dead_inputs():
    h = np.zeros((1, 3, 3))
    h[0, 0, 0] = 4.0
    d = damped(h)
    assert np.all(np.linalg.eigvalsh(d) > 0)
    w, values = np.array([[[0.4, -0.9, 2.0]]]), np.array([[[-1.0, 0.0, 1.0]]])
    # a diagonal moment (after damping) correlates nothing: plain nearest rounding
    assert gptq_assign(w, h, values).tolist() == _rounded(w, values).tolist() == [[[1, 0, 2]]]
