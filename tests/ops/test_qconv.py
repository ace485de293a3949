"""QConv's numpy reference against a naive int64 convolution written from the ONNX Conv spec (op-contract §2-§3, §6).

Every comparison is bit-exact: uint8 levels with ``array_equal``, float outputs as float32 bit patterns.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.cases import Operands, float_input, random_operands, thresholds_from
from tests.ops.onnx_models import check_and_run, one_node_model
from tests.ops.oracles import (
    ACC_MAX, bits_equal, conv_acc_naive, conv_geometry, float_edge_naive, input_mantissas_naive, level_edge_naive,
    pack_naive,
)
from wqcompile.runtime_ops.qconv import qconv_reference

# float inputs far beyond x_max overflow x · 2^x_shift to inf inside the kernel before saturating: intended
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in ldexp:RuntimeWarning")

KERNELS = ((1, 1), (3, 3), (5, 3), (2, 2), (1, 3))
AUTO_PADS = ("NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


class ConvCase:
    """A QConv call: geometry + operands, with the naive oracle's answer."""

    def __init__(self, ops: Operands, *, group=1, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                 auto_pad="NOTSET", fused=False, rng=None):
        self.ops, self.group, self.auto_pad = ops, group, auto_pad
        self.strides, self.pads, self.dilations = list(strides), list(pads), list(dilations)
        self.tags = set(ops.tags) | {auto_pad, "kernel=%dx%d" % ops.idx.shape[2:]}
        c, m = ops.x.shape[1], ops.idx.shape[0]
        if group == c == m and group > 1:
            self.tags.add("depthwise")
        if fused:
            ops.thresholds = thresholds_from(rng, self.acc(), 1, ops.codebook.shape[0])
        self.tags.add("fused" if ops.thresholds is not None else "float-out")

    @property
    def w_shape(self):
        return list(self.ops.idx.shape)

    def attrs(self) -> dict:
        o = self.ops
        return dict(w_bits=o.w_bits, w_shape=self.w_shape, w_shift=o.w_shift, x_shift=o.x_shift, x_max=o.x_max,
                    group=self.group, strides=self.strides, pads=self.pads, dilations=self.dilations,
                    auto_pad=self.auto_pad)

    def run(self, node="QConv", **override):
        o = self.ops
        args = dict(x=o.x, w=o.packed, codebook=o.codebook, x_table=o.x_table, bias=o.bias, thresholds=o.thresholds)
        kwargs = self.attrs()
        for key, value in override.items():
            (args if key in args else kwargs)[key] = value
        return qconv_reference(*args.values(), node=node, **kwargs)

    def acc(self) -> np.ndarray:
        o = self.ops
        xm = input_mantissas_naive(o.x, o.x_table, o.x_shift, o.x_max)
        return conv_acc_naive(xm, o.weight_mantissas(), o.bias, group=self.group, strides=self.strides,
                              dilations=self.dilations, pads=self.pads, auto_pad=self.auto_pad)

    def expected(self) -> np.ndarray:
        acc = self.acc()
        assert np.abs(acc).max(initial=0) <= ACC_MAX
        if self.ops.thresholds is not None:
            return level_edge_naive(acc, 1, self.ops.row_of, self.ops.thresholds)
        return float_edge_naive(acc, 1, self.ops.channel_shifts())


def random_case(seed: int) -> ConvCase:
    rng = np.random.default_rng(seed)
    layout = ("dense", "grouped", "depthwise", "depthwise-multiplier")[seed % 4]
    if layout == "dense":
        group, cg, m = 1, int(rng.integers(1, 4)), int(rng.integers(1, 6))
    elif layout == "grouped":
        group = int(rng.choice([2, 3]))
        cg, m = int(rng.integers(1, 3)), group * int(rng.integers(1, 3))
    elif layout == "depthwise":
        group = cg_total = int(rng.integers(2, 5))
        cg, m = 1, cg_total
    else:
        group = int(rng.integers(2, 4))
        cg, m = 1, 2 * group
    kh, kw = KERNELS[(seed // 4) % len(KERNELS)]
    auto_pad = AUTO_PADS[seed % len(AUTO_PADS)]
    while True:
        strides = [int(v) for v in rng.choice([1, 1, 2, 3], 2)]
        dilations = [int(v) for v in rng.integers(1, 3, 2)]
        pads = [int(v) for v in rng.integers(0, 3, 4)] if auto_pad == "NOTSET" else [0, 0, 0, 0]
        h, w = (int(v) for v in rng.integers(1, 13, 2))
        geo = [conv_geometry(size, k, s, d, pb, pe, auto_pad)
               for size, k, s, d, pb, pe in ((h, kh, strides[0], dilations[0], pads[0], pads[2]),
                                             (w, kw, strides[1], dilations[1], pads[1], pads[3]))]
        if min(g[0] for g in geo) >= 1:
            break
    n = int(rng.integers(1, 3))
    ops = random_operands(rng, (m, cg, kh, kw), (n, cg * group, h, w), cg * kh * kw,
                          bits=1 + seed % 8, gc=(1, m)[(seed // 8) % 2])
    return ConvCase(ops, group=group, strides=strides, pads=pads, dilations=dilations, auto_pad=auto_pad,
                    fused=bool(rng.random() < 0.5), rng=rng)


SEEDS = range(160)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_case_bit_exact(seed):
    case = random_case(seed)
    got = case.run()
    assert bits_equal(got, case.expected())


def test_random_cases_cover_the_brief():
    tags = set().union(*(random_case(s).tags for s in SEEDS))
    need = {"depthwise", "SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET", "Gc=1", "Gc=M", "float", "level", "bias",
            "no-bias", "fused", "float-out", "tight"}
    need |= {f"bits={b}" for b in range(1, 9)} | {"kernel=%dx%d" % k for k in KERNELS}
    assert need <= tags, need - tags


# --- hand-picked geometry ---------------------------------------------------------------------------------------


def _fixed_case(seed, *, c, m, group, kernel, h, w, n=1, kind=None, **geometry) -> ConvCase:
    rng = np.random.default_rng(seed)
    ops = random_operands(rng, (m, c // group, *kernel), (n, c, h, w), c // group * kernel[0] * kernel[1], kind=kind)
    return ConvCase(ops, group=group, **geometry)


FIXED = {
    "depthwise-3x3-s2-same-upper": dict(c=4, m=4, group=4, kernel=(3, 3), h=7, w=6, strides=(2, 2), auto_pad="SAME_UPPER"),
    "depthwise-3x3-s2-same-lower": dict(c=4, m=4, group=4, kernel=(3, 3), h=7, w=6, strides=(2, 2), auto_pad="SAME_LOWER"),
    "same-lower-even-kernel": dict(c=2, m=3, group=1, kernel=(2, 2), h=5, w=5, auto_pad="SAME_LOWER"),
    "same-upper-dilated-strided": dict(c=2, m=2, group=2, kernel=(3, 3), h=9, w=8, strides=(3, 2), dilations=(2, 2),
                                       auto_pad="SAME_UPPER"),
    "5x3-dilated-asymmetric-pads": dict(c=3, m=2, group=1, kernel=(5, 3), h=8, w=6, dilations=(2, 1), pads=(0, 2, 3, 0)),
    "valid-stride-3": dict(c=2, m=4, group=2, kernel=(3, 3), h=10, w=11, strides=(3, 3), auto_pad="VALID"),
    "1x1-stride-2-padded": dict(c=3, m=5, group=1, kernel=(1, 1), h=5, w=4, strides=(2, 2), pads=(1, 0, 0, 2)),
    "kernel-equals-padded-input": dict(c=1, m=1, group=1, kernel=(5, 3), h=3, w=1, pads=(1, 1, 1, 1)),
    "batch-3": dict(c=2, m=2, group=1, kernel=(3, 3), h=4, w=4, n=3, pads=(1, 1, 1, 1)),
}


@pytest.mark.parametrize("name", FIXED)
def test_fixed_geometry_bit_exact(name):
    case = _fixed_case(sorted(FIXED).index(name), **FIXED[name])
    assert bits_equal(case.run(), case.expected())


def test_same_upper_and_lower_differ_when_the_total_pad_is_odd():
    upper = _fixed_case(3, **FIXED["depthwise-3x3-s2-same-upper"])
    lower = ConvCase(upper.ops, group=4, strides=(2, 2), auto_pad="SAME_LOWER")
    assert conv_geometry(7, 3, 2, 1, 0, 0, "SAME_UPPER")[1:] == (1, 1)
    assert conv_geometry(6, 3, 2, 1, 0, 0, "SAME_UPPER")[1:] == (0, 1)
    assert conv_geometry(6, 3, 2, 1, 0, 0, "SAME_LOWER")[1:] == (1, 0)
    assert not bits_equal(upper.run(), lower.run())
    assert bits_equal(lower.run(), lower.expected())


def test_im2col_blocking_does_not_change_the_result(monkeypatch):
    import wqcompile.runtime_ops.qconv as qconv_module
    case = _fixed_case(8, **FIXED["batch-3"])
    whole = case.run()
    monkeypatch.setattr(qconv_module, "_IM2COL_BLOCK", 1)           # one sample per block
    assert bits_equal(case.run(), whole)
    assert bits_equal(whole, case.expected())


def test_auto_pad_ignores_explicit_pads():
    case = _fixed_case(5, **FIXED["same-lower-even-kernel"])
    assert bits_equal(case.run(pads=[2, 2, 2, 2]), case.expected())


# --- extreme values ---------------------------------------------------------------------------------------------


def _bound_case(bias_extra: int = 0, x=None) -> ConvCase:
    """1x1 conv whose bound |bias| + x_max·Σ|C| is exactly 2^30 - 1 (+ bias_extra)."""
    x_max, c = 32767, 32767
    bias0 = ACC_MAX - x_max * c + bias_extra                       # 65534
    codebook = np.array([[c, -c]], dtype=np.int16)
    idx = np.array([0, 1]).reshape(2, 1, 1, 1)
    if x is None:
        x = np.array([np.inf, -np.inf, 1e30, -1e30, np.nan, 0.0, 32766.5, -32767.49], np.float32).reshape(1, 1, 2, 4)
    ops = Operands(x=x, idx=idx, packed=pack_naive(idx, 1), codebook=codebook, w_shift=[0], x_table=None,
                   bias=np.array([bias0, -bias0], np.int32), x_shift=0, x_max=x_max, w_bits=1)
    return ConvCase(ops)


def test_accumulator_exactly_at_the_bound():
    case = _bound_case()
    acc = case.acc()
    assert acc[0, 0, 0, 0] == ACC_MAX and acc[0, 1, 0, 0] == -ACC_MAX
    got = case.run()
    assert bits_equal(got, case.expected())
    # float32(2^30 - 1) rounds to nearest even: 2^30
    assert got[0, 0, 0, 0] == np.float32(2**30) and got[0, 1, 0, 0] == np.float32(-2**30)
    # fused: the top threshold 2^30 is never met, 2^30 - 1 is, -2^30 always is
    case.ops.thresholds = np.array([[-2**30, ACC_MAX - 1, ACC_MAX, 2**30]], dtype=np.int32)
    levels = case.run()
    assert bits_equal(levels, case.expected())
    assert levels[0, 0, 0, 0] == 3 and levels[0, 1, 0, 0] == 1


def test_accumulator_one_above_the_bound_is_rejected():
    with pytest.raises(ValueError, match=r"^QConv 'n1': .*accumulator"):
        _bound_case(bias_extra=1).run(node="n1")


def test_near_bound_with_a_wide_fan_in():
    rng = np.random.default_rng(42)
    c, k, x_max = 4, (3, 3), 32767
    fan_in = c * 9
    cmax = ACC_MAX // (x_max * fan_in)
    idx = np.zeros((2, c, *k), dtype=np.int64)
    codebook = np.array([[cmax, -cmax, 1, 0]], dtype=np.int16)
    idx[1] = 1
    bias = np.array([ACC_MAX - cmax * fan_in * x_max, 0], np.int32)
    x = np.full((1, c, 3, 3), np.inf, np.float32)
    x[0, 0, 0, 0] = -np.inf
    ops = Operands(x=x, idx=idx, packed=pack_naive(idx, 2), codebook=codebook, w_shift=[5], x_table=None, bias=bias,
                   x_shift=-2, x_max=x_max, w_bits=2)
    case = ConvCase(ops, pads=(1, 1, 1, 1))
    assert bits_equal(case.run(), case.expected())
    x[0, 0, 0, 0] = np.inf
    assert case.acc()[0, 0, 1, 1] == ACC_MAX
    assert bits_equal(case.run(), case.expected())
    # the same layer fed levels whose table top exceeds x_max overflows the bound: rejected
    ops.x, ops.x_table = np.zeros((1, c, 3, 3), np.uint8), np.array([0, 32767, 32767], np.int16)
    assert bits_equal(case.run(), case.expected())
    ops.x_table = np.array([0, 100, -32768], np.int16)            # |min| counts: the bound uses max|X|
    with pytest.raises(ValueError, match="accumulator"):
        case.run()


@pytest.mark.parametrize("x_shift", (-3, 0, 7, 15))
def test_saturating_and_non_finite_inputs(x_shift):
    rng = np.random.default_rng(x_shift + 10)
    case = _fixed_case(x_shift + 100, kind="float", **FIXED["5x3-dilated-asymmetric-pads"])
    o = case.ops
    unit = 2.0 ** -x_shift
    specials = np.array([np.nan, np.inf, -np.inf, 1e38, -1e38, (o.x_max + 0.5) * unit, -(o.x_max + 0.5) * unit,
                         (o.x_max - 0.5) * unit, 0.5 * unit, -0.5 * unit, 1.5 * unit], np.float32)
    o.x_shift = x_shift
    o.x = rng.choice(specials, o.x.shape).astype(np.float32)
    assert bits_equal(case.run(), case.expected())


def test_nan_input_contributes_zero():
    case = _fixed_case(7, c=2, m=2, group=1, kernel=(3, 3), h=4, w=4, pads=(1, 1, 1, 1))
    case.ops.x, case.ops.x_table = float_input(np.random.default_rng(1), (1, 2, 4, 4), 0, 127), None
    case.ops.x_max = 127
    case.ops.codebook = np.clip(case.ops.codebook, -100, 100).astype(np.int16)
    nan_x = case.ops.x.copy()
    nan_x[0, 0, 1, 2] = np.nan
    zero_x = nan_x.copy()
    zero_x[0, 0, 1, 2] = 0.0
    assert bits_equal(case.run(x=nan_x), case.run(x=zero_x))
    case.ops.x = nan_x
    assert bits_equal(case.run(), case.expected())


def test_float_output_is_float32_of_acc_times_a_power_of_two():
    case = _fixed_case(11, c=2, m=3, group=1, kernel=(3, 3), h=5, w=5)
    case.ops.thresholds = None
    acc = case.acc()
    y = case.run()
    for o in range(3):
        s = case.ops.channel_shifts()[o]
        want = np.ldexp(acc[:, o].astype(np.float32), np.int32(-s))   # float32(acc) first, then the exact scale
        assert bits_equal(y[:, o], want)


# --- through onnx -----------------------------------------------------------------------------------------------


def _onnx_model(case: ConvCase, node_name: str, expected=None):
    o = case.ops
    attrs = case.attrs()
    if case.auto_pad != "NOTSET":
        del attrs["pads"]                      # ONNX Conv: pads and auto_pad are exclusive
    expected = case.expected() if expected is None else expected
    others = [("W", o.packed), ("codebook", o.codebook), ("x_table", o.x_table), ("bias", o.bias),
              ("thresholds", o.thresholds)]
    return one_node_model("QConv", node_name, o.x, others, attrs, expected.dtype, expected.shape), expected


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 6, 9, 13, 22, 27, 38])
def test_through_onnx_reference_session(seed):
    case = random_case(seed)
    model, expected = _onnx_model(case, f"conv_{seed}")
    got = check_and_run(model, case.ops.x)
    assert bits_equal(got, expected)
    assert bits_equal(got, case.run())


def test_through_onnx_at_the_bound():
    case = _bound_case()
    model, expected = _onnx_model(case, "bound")
    assert bits_equal(check_and_run(model, case.ops.x), expected)


def test_through_onnx_errors_name_the_node():
    case = _bound_case(bias_extra=1)
    model, _ = _onnx_model(case, "too_wide", expected=np.zeros((1, 2, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"QConv 'too_wide': .*accumulator"):
        check_and_run(model, case.ops.x)


# --- validation (op-contract §6) --------------------------------------------------------------------------------


def _base(kind="float") -> ConvCase:
    """A valid grouped 3-bit QConv with |C| = 3000, fan-in 18: bound 4095·18·3000 ≈ 2^27.7 (float input)."""
    rng = np.random.default_rng(2024)
    ops = random_operands(rng, (4, 2, 3, 3), (1, 4, 5, 5), 18, bits=3, gc=1, kind=kind, with_bias=True, x_max=4095)
    ops.codebook = np.array([[3000, -3000] * 4], np.int16)
    ops.bias = np.arange(4, dtype=np.int32) * 100
    if kind == "level":
        ops.x, ops.x_table = np.full(ops.x.shape, 63, np.uint8), np.arange(64, dtype=np.int16)
    case = ConvCase(ops, group=2, pads=(1, 1, 1, 1))
    case.ops.thresholds = np.array([[-5, 0, 7]], np.int32)
    assert case.run().dtype == np.uint8                              # the base case itself is valid
    return case


def _idx_bytes(bits):
    return pack_naive(np.zeros(4 * 2 * 9, dtype=np.int64), bits)


ERRORS = {
    "truncated packed buffer": (dict(w=_idx_bytes(3)[:-1]), "expected"),
    "packed buffer too long": (dict(w=np.concatenate([_idx_bytes(3), [0]]).astype(np.uint8)), "expected"),
    "packed buffer not uint8": (dict(w=_idx_bytes(3).astype(np.int8)), "uint8"),
    "codebook too narrow": (dict(codebook=np.zeros((1, 7), np.int16)), "codebook"),
    "codebook of another width": (dict(codebook=np.zeros((1, 16), np.int16)), "codebook"),
    "codebook not int16": (dict(codebook=np.zeros((1, 8), np.int32)), "codebook"),
    "codebook 1-D": (dict(codebook=np.zeros(8, np.int16)), "codebook"),
    "codebook rows neither 1 nor M": (dict(codebook=np.zeros((2, 8), np.int16), w_shift=[0, 0]), "codebook"),
    "w_shift length": (dict(w_shift=[0, 1]), "w_shift"),
    "w_bits 0": (dict(w_bits=0), "w_bits"),
    "w_bits 9": (dict(w_bits=9), "w_bits"),
    "x_table given for float input": (dict(x_table=np.array([0, 1], np.int16)), "x_table"),
    "float64 input": (dict(x=np.zeros((1, 4, 5, 5))), "float32"),
    "x_max 0": (dict(x_max=0), "x_max"),
    "x_max above int16": (dict(x_max=32768), "x_max"),
    "channel mismatch": (dict(x=np.zeros((1, 5, 5, 5), np.float32)), "channels"),
    "M not divisible by group": (dict(group=3, w_shape=[4, 2, 3, 3], x=np.zeros((1, 6, 5, 5), np.float32)),
                                 "multiple of group"),
    "group 0": (dict(group=0), "group"),
    "input not 4-D": (dict(x=np.zeros((4, 5, 5), np.float32)), "4-D"),
    "w_shape of rank 3": (dict(w_shape=[4, 2, 9]), "w_shape"),
    "accumulator bound": (dict(codebook=np.full((1, 8), 32767, np.int16)), "accumulator"),
    "bias overflows the bound": (dict(bias=np.full(4, 2**30 - 1, np.int32)), "accumulator"),
    "bias wrong length": (dict(bias=np.zeros(3, np.int32)), "bias"),
    "bias not int32": (dict(bias=np.zeros(4, np.int64)), "bias"),
    "non-monotone thresholds": (dict(thresholds=np.array([[0, 5, 4]], np.int32)), "non-decreasing"),
    "thresholds not int32": (dict(thresholds=np.array([[0, 5]], np.float32)), "thresholds"),
    "thresholds rows ≠ Gc": (dict(thresholds=np.zeros((4, 3), np.int32)), "thresholds"),
    "thresholds 1-D": (dict(thresholds=np.zeros(3, np.int32)), "thresholds"),
    "more than 256 output levels": (dict(thresholds=np.zeros((1, 256), np.int32)), "thresholds"),
    "kernel larger than the padded input": (dict(x=np.zeros((1, 4, 1, 5), np.float32), pads=[0, 0, 0, 0]), "fit"),
    "zero stride": (dict(strides=[0, 1]), "strides"),
    "negative pad": (dict(pads=[0, -1, 0, 0]), "pads"),
    "zero dilation": (dict(dilations=[1, 0]), "dilations"),
    "strides of rank 1": (dict(strides=[1]), "strides"),
    "unknown auto_pad": (dict(auto_pad="SAME"), "auto_pad"),
}

LEVEL_ERRORS = {
    "x_table missing for uint8 input": (dict(x_table=None), "x_table"),
    "x_table empty for uint8 input": (dict(x_table=np.zeros(0, np.int16)), "x_table"),
    "x_table not int16": (dict(x_table=np.zeros(4, np.int32)), "x_table"),
    "level ≥ len(x_table)": (dict(x_table=np.array([0, 1], np.int16)), "out of range"),
    "level table overflows the bound": (dict(x_table=np.full(64, 32767, np.int16)), "accumulator"),
}


@pytest.mark.parametrize("name", ERRORS)
def test_invalid_float_input_call_names_op_and_node(name):
    override, needle = ERRORS[name]
    with pytest.raises(ValueError, match=r"^QConv 'conv/bad': ") as info:
        _base("float").run(node="conv/bad", **override)
    assert needle in str(info.value)


@pytest.mark.parametrize("name", LEVEL_ERRORS)
def test_invalid_level_input_call_names_op_and_node(name):
    case = _base("level")
    override, needle = LEVEL_ERRORS[name]
    with pytest.raises(ValueError, match=r"^QConv 'conv/bad': ") as info:
        case.run(node="conv/bad", **override)
    assert needle in str(info.value)
