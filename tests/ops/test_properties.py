"""Hypothesis properties of the integer contract: the reference kernels equal naive exact arithmetic for any operands
the compile-time bound admits. Derandomized (fixed seed, no example database) like every other test here."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tests.ops.oracles import (
    ACC_MAX, bits_equal, conv_acc_naive, float_edge_naive, gemm_acc_naive, input_mantissas_naive, level_edge_naive,
    pack_naive, real_level,
)
from wqcompile.runtime_ops.fixed_point import int_thresholds, quantize_float_input
from wqcompile.runtime_ops.packing import pack_indices, unpack_indices
from wqcompile.runtime_ops.qconv import qconv_reference
from wqcompile.runtime_ops.qgemm import qgemm_reference

# float inputs far beyond x_max overflow x · 2^x_shift to inf inside the kernel before saturating: intended
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in ldexp:RuntimeWarning")

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=400,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ANY_FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)


@st.composite
def operands(draw, w_shape, x_shape, fan_in):
    """Packed weights, codebook, input (float32 or levels), bias and w_shift within the §2 accumulator bound."""
    m = w_shape[0]
    bits = draw(st.integers(1, 8))
    gc = draw(st.sampled_from([1, m]))
    idx = draw(arrays(np.int64, w_shape, elements=st.integers(0, (1 << bits) - 1)))
    x_shift = draw(st.integers(-8, 24))
    if draw(st.booleans()):
        x_max = draw(st.integers(1, 32767))
        x = draw(arrays(np.float32, x_shape, elements=ANY_FLOAT32))
        x_table, x_bound = None, x_max
    else:
        x_max = 32767
        x_table = draw(arrays(np.int16, draw(st.integers(1, 20)), elements=st.integers(0, 32767)))
        x_table[0] = 0
        x_bound = max(1, int(x_table.max()))
        x = draw(arrays(np.uint8, x_shape, elements=st.integers(0, x_table.size - 1)))
    bias_budget = draw(st.sampled_from([0, 1000, 2**28]))
    cmax = max(1, min(32767, (ACC_MAX - bias_budget) // (x_bound * fan_in)))
    codebook = draw(arrays(np.int16, (gc, 1 << bits), elements=st.integers(-cmax, cmax)))
    bias = None
    if draw(st.booleans()):
        bias = draw(arrays(np.int32, (m,), elements=st.integers(-bias_budget, bias_budget)))
    w_shift = draw(st.lists(st.integers(-20, 30), min_size=gc, max_size=gc))
    return dict(x=x, idx=idx, bits=bits, codebook=codebook, x_table=x_table, bias=bias, w_shift=w_shift,
                x_shift=x_shift, x_max=x_max)


def weight_mantissas(op) -> tuple[np.ndarray, np.ndarray]:
    m = op["idx"].shape[0]
    row_of = np.zeros(m, np.int64) if op["codebook"].shape[0] == 1 else np.arange(m)
    wm = np.stack([op["codebook"][row_of[o]].astype(np.int64)[op["idx"][o]] for o in range(m)])
    return wm, row_of


@st.composite
def gemm_problem(draw):
    n_out, k = draw(st.integers(1, 6)), draw(st.integers(1, 12))
    batch = draw(st.sampled_from([(), (0,), (1,), (3,), (2, 2)]))
    op = draw(operands((n_out, k), (*batch, k), k))
    return op


@given(op=gemm_problem(), data=st.data())
@PROPERTY
def test_qgemm_equals_naive_int64(op, data):
    wm, row_of = weight_mantissas(op)
    acc = gemm_acc_naive(input_mantissas_naive(op["x"], op["x_table"], op["x_shift"], op["x_max"]), wm, op["bias"])
    thresholds = None
    if data.draw(st.booleans()):
        lm1 = data.draw(st.integers(1, 8))
        thresholds = np.sort(data.draw(arrays(np.int32, (op["codebook"].shape[0], lm1),
                                              elements=st.integers(-2**30, 2**30))), axis=1)
    got = qgemm_reference(op["x"], pack_naive(op["idx"], op["bits"]), op["codebook"], op["x_table"], op["bias"],
                          thresholds, w_bits=op["bits"], w_shape=list(op["idx"].shape), w_shift=op["w_shift"],
                          x_shift=op["x_shift"], x_max=op["x_max"])
    if thresholds is None:
        want = float_edge_naive(acc, acc.ndim - 1, [op["w_shift"][g] + op["x_shift"] for g in row_of])
    else:
        want = level_edge_naive(acc, acc.ndim - 1, row_of, thresholds)
    assert bits_equal(got, want)


@st.composite
def conv_problem(draw):
    c, m = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    strides = draw(st.lists(st.integers(1, 2), min_size=2, max_size=2))
    dilations = draw(st.lists(st.integers(1, 2), min_size=2, max_size=2))
    pads = draw(st.lists(st.integers(0, 2), min_size=4, max_size=4))
    h = draw(st.integers(max(1, (kh - 1) * dilations[0] + 1 - pads[0] - pads[2]), 6))
    w = draw(st.integers(max(1, (kw - 1) * dilations[1] + 1 - pads[1] - pads[3]), 6))
    op = draw(operands((m, c, kh, kw), (1, c, h, w), c * kh * kw))
    return op, dict(strides=strides, dilations=dilations, pads=pads)


@given(problem=conv_problem())
@PROPERTY
def test_qconv_float_output_is_float32_acc_times_two_to_minus_s(problem):
    """y = float32(acc) · 2^-(w_shift[g(o)] + x_shift), checked as an exact rational identity."""
    op, geo = problem
    wm, row_of = weight_mantissas(op)
    xm = input_mantissas_naive(op["x"], op["x_table"], op["x_shift"], op["x_max"])
    acc = conv_acc_naive(xm, wm, op["bias"], group=1, auto_pad="NOTSET", **geo)
    y = qconv_reference(op["x"], pack_naive(op["idx"], op["bits"]), op["codebook"], op["x_table"], op["bias"],
                        w_bits=op["bits"], w_shape=list(op["idx"].shape), w_shift=op["w_shift"], x_shift=op["x_shift"],
                        x_max=op["x_max"], **geo)
    assert y.dtype == np.float32 and y.shape == acc.shape
    for pos, a in np.ndenumerate(acc):
        s = op["w_shift"][row_of[pos[1]]] + op["x_shift"]
        # |s| ≤ 54 and |acc| < 2^30: the product is a normal float32, so the identity is exact
        assert Fraction(float(y[pos])) == Fraction(float(np.float32(a))) * Fraction(2) ** -s


@given(
    real=st.lists(st.floats(1e-12, 1e12), min_size=1, max_size=12, unique=True).map(sorted),
    shift=st.integers(-40, 60),
    clip=st.none() | st.floats(1e-6, 1e6),
    data=st.data(),
)
@PROPERTY
def test_fused_edge_equals_the_real_quantizer_on_exact_y(real, shift, clip, data):
    """int_thresholds stored in a QGemm give WQ's level of y = acc·2^-s (after Clip(0, m)) for every accumulator."""
    real = np.array(real)
    near = [math.floor(Fraction(t) * Fraction(2) ** shift) + d for t in real for d in (-1, 0, 1)]
    near = [a for a in near if -ACC_MAX + 2 <= a <= ACC_MAX]
    accs = data.draw(st.lists(st.integers(-ACC_MAX + 2, ACC_MAX) | st.sampled_from(near or [0]), min_size=1,
                              max_size=24))
    # one output channel per accumulator: X = x_table[1] = 1, weight mantissa 1, bias = acc - 1
    n = len(accs)
    bias = np.array([a - 1 for a in accs], np.int32)
    levels = qgemm_reference(np.ones(1, np.uint8), pack_naive(np.ones(n, np.int64), 1), np.array([[0, 1]], np.int16),
                             np.array([0, 1], np.int16), bias, int_thresholds(real, shift, clip).reshape(1, -1),
                             w_bits=1, w_shape=[n, 1], w_shift=[shift], x_shift=0)
    for a, level in zip(accs, levels.tolist()):
        y = Fraction(a) * Fraction(2) ** -shift
        if clip is not None:
            y = min(max(y, Fraction(0)), Fraction(clip))
        assert level == real_level(y, real), (a, shift, clip)


@given(indices=st.lists(st.integers(0, 255), max_size=300), bits=st.integers(1, 8))
@PROPERTY
def test_pack_unpack_roundtrip(indices, bits):
    idx = np.array(indices, dtype=np.int64) % (1 << bits)
    packed = pack_indices(idx, bits)
    assert packed.size == math.ceil(idx.size * bits / 8)
    np.testing.assert_array_equal(packed, pack_naive(idx, bits))
    np.testing.assert_array_equal(unpack_indices(packed, bits, idx.size), idx)


@given(x=arrays(np.float32, st.integers(0, 64), elements=ANY_FLOAT32), x_shift=st.integers(-40, 60),
       x_max=st.integers(1, 32767))
@PROPERTY
def test_quantize_float_input_is_exact_round_half_even_then_clip(x, x_shift, x_max):
    with np.errstate(over="ignore"):
        got = quantize_float_input(x, x_shift, x_max)
    for v, g in zip(x.tolist(), got.tolist()):
        if math.isnan(v):
            want = 0
        elif math.isinf(v):
            want = x_max if v > 0 else -x_max
        else:
            want = max(-x_max, min(x_max, round(Fraction(v) * Fraction(2) ** x_shift)))   # round(): half to even
        assert g == want, (v, x_shift, x_max)
