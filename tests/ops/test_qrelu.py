"""QRelu: ``level = Σ_j [x ≥ T_j]`` on float32 (op-contract §5), NaN → 0, +Inf → top level."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.onnx_models import check_and_run, one_node_model
from tests.ops.oracles import bits_equal
from wqcompile.runtime_ops.fixed_point import float32_thresholds
from wqcompile.runtime_ops.qrelu import qrelu_reference

F32 = np.float32


def levels_naive(x: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    out = np.zeros(x.shape, dtype=np.int64)
    for t in thresholds:
        out += x >= t                     # float32 comparisons; NaN compares false
    return out.astype(np.uint8)


def test_closed_form_levels_and_ties():
    t = np.array([0.5, 1.0, 2.0, 4.0], F32)
    x = np.array([-1, 0, 0.49, 0.5, 0.75, 1, 1.99, 2, 4, 100, np.nan, np.inf, -np.inf, -0.0], F32)
    got = qrelu_reference(x, t)
    assert got.dtype == np.uint8
    assert got.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 4, 4, 0, 4, 0, 0]


def test_ties_at_every_threshold_go_up_and_one_ulp_below_stays():
    t = np.sort(np.random.default_rng(0).uniform(-3, 50, 31)).astype(F32)
    below = np.nextafter(t, F32(-np.inf))
    assert qrelu_reference(t, t).tolist() == list(range(1, 32))
    assert qrelu_reference(below, t).tolist() == list(range(0, 31))


def test_signed_zero_threshold():
    t = np.array([0.0, 1.0], F32)
    assert qrelu_reference(np.array([-0.0, 0.0, -1e-45], F32), t).tolist() == [1, 1, 0]


@pytest.mark.parametrize("seed", range(12))
def test_random_thresholds_and_inputs(seed):
    rng = np.random.default_rng(seed)
    count = int(rng.choice([1, 2, 7, 63, 127, 255]))
    t = np.sort(rng.standard_normal(count) * 4).astype(F32)
    if count > 3:
        t[1] = t[2]                          # equal neighbours are allowed (non-decreasing)
    if seed % 3 == 0:
        t[-1] = np.inf                       # only +Inf reaches it
    if seed % 4 == 0:
        t[0] = -np.inf                       # always met, even by -Inf
    x = (rng.standard_normal((3, 50, 7)) * 5).astype(F32)
    flat = x.reshape(-1)
    flat[: count] = t[rng.integers(0, count, min(count, flat.size))]    # exact ties
    flat[-4:] = [np.nan, np.inf, -np.inf, -0.0]
    got = qrelu_reference(x, t)
    assert got.shape == x.shape
    assert bits_equal(got, levels_naive(x, t))
    assert got.reshape(-1)[-4] == 0 and got.reshape(-1)[-3] == count


def test_stored_thresholds_reproduce_the_real_wq_quantizer():
    """float32_thresholds → QRelu equals ``[x > t0] + Σ[x ≥ tj]`` in float64 on every tested float32 input."""
    rng = np.random.default_rng(5)
    real = np.exp2((np.array([-37.0] + [-34.0 + 6 * n + 3 for n in range(14)])) / 16)   # WQ: FSR=-34, step=6, L=16
    stored = float32_thresholds(real)
    x = np.concatenate([rng.standard_normal(100_000).astype(F32) * F32(3),
                        np.array([np.nan, np.inf, -np.inf], F32),
                        np.array([np.nextafter(F32(t), F32(d)) for t in real for d in (np.inf, -np.inf)], F32),
                        real.astype(F32)])
    with np.errstate(invalid="ignore"):
        x64 = x.astype(np.float64)
        want = (x64 > real[0]).astype(np.int64) + (x64[:, None] >= real[None, 1:]).sum(axis=1)
    got = qrelu_reference(x, stored)
    np.testing.assert_array_equal(got, want)
    assert got[100_000:100_003].tolist() == [0, 15, 0]


def test_shapes_are_preserved():
    t = np.array([0.0], F32)
    assert qrelu_reference(np.float32(1.0).reshape(()), t).shape == ()
    assert qrelu_reference(np.zeros((2, 0, 3), F32), t).shape == (2, 0, 3)


def test_through_onnx():
    t = float32_thresholds(np.array([0.1, 0.3, 0.9, 2.7]))
    # float32(0.1) > 0.1, float32(0.3) > 0.3, float32(0.9) < 0.9, float32(2.7) > 2.7
    x = np.array([[np.nan, np.inf, -np.inf, 0.1, 0.3, 0.9, 2.7, 5.0]], F32)
    model = one_node_model("QRelu", "act1", x, [("thresholds", t)], {}, np.uint8, x.shape)
    got = check_and_run(model, x)
    assert got.dtype == np.uint8
    assert got.tolist() == [[0, 4, 0, 1, 2, 2, 4, 4]]


def test_scalar_input_through_onnx():
    x = np.float32(1.0).reshape(())
    model = one_node_model("QRelu", "act0", x, [("thresholds", np.array([0.5, 1.0, 1.5], F32))], {}, np.uint8, ())
    assert int(check_and_run(model, x)) == 2


ERRORS = {
    "float64 input": (np.zeros(3), np.array([1.0], F32), "input must be float32"),
    "float64 thresholds": (np.zeros(3, F32), np.array([1.0]), "thresholds"),
    "2-D thresholds": (np.zeros(3, F32), np.zeros((1, 2), F32), "thresholds"),
    "no thresholds": (np.zeros(3, F32), np.zeros(0, F32), "thresholds"),
    "256 thresholds": (np.zeros(3, F32), np.arange(256, dtype=F32), "L ≤ 256"),
    "NaN threshold": (np.zeros(3, F32), np.array([0.0, np.nan], F32), "NaN"),
    "decreasing thresholds": (np.zeros(3, F32), np.array([0.0, 2.0, 1.0], F32), "non-decreasing"),
}


@pytest.mark.parametrize("name", ERRORS)
def test_invalid_inputs_name_op_and_node(name):
    x, t, needle = ERRORS[name]
    with pytest.raises(ValueError, match=r"^QRelu 'relu_7': ") as info:
        qrelu_reference(x, t, node="relu_7")
    assert needle in str(info.value)


def test_255_thresholds_reach_level_255():
    t = np.arange(255, dtype=F32)
    assert qrelu_reference(np.array([1e9, 254.0, 253.5], F32), t).tolist() == [255, 255, 254]
