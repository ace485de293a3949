"""QGemm's numpy reference against a naive Python-integer matrix product (op-contract §2-§3, §6), bit-exact."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.cases import Operands, random_operands, thresholds_from
from tests.ops.onnx_models import check_and_run, one_node_model
from tests.ops.oracles import (
    ACC_MAX, bits_equal, float_edge_naive, gemm_acc_naive, input_mantissas_naive, level_edge_naive, pack_naive,
)
from wqcompile.runtime_ops.qgemm import qgemm_reference

# float inputs far beyond x_max overflow x · 2^x_shift to inf inside the kernel before saturating: intended
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in ldexp:RuntimeWarning")

BATCH_SHAPES = ((), (1,), (5,), (2, 3), (1, 1, 2), (0,), (3, 0))


class GemmCase:
    def __init__(self, ops: Operands, *, fused=False, rng=None):
        self.ops = ops
        self.tags = set(ops.tags) | {f"rank={ops.x.ndim}"}
        if fused:
            acc = self.acc()
            ops.thresholds = thresholds_from(rng, acc if acc.size else np.zeros((1, acc.shape[-1]), np.int64), -1,
                                             ops.codebook.shape[0])
        self.tags.add("fused" if ops.thresholds is not None else "float-out")

    def attrs(self) -> dict:
        o = self.ops
        return dict(w_bits=o.w_bits, w_shape=list(o.idx.shape), w_shift=o.w_shift, x_shift=o.x_shift, x_max=o.x_max)

    def run(self, node="QGemm", **override):
        o = self.ops
        args = dict(x=o.x, w=o.packed, codebook=o.codebook, x_table=o.x_table, bias=o.bias, thresholds=o.thresholds)
        kwargs = self.attrs()
        for key, value in override.items():
            (args if key in args else kwargs)[key] = value
        return qgemm_reference(*args.values(), node=node, **kwargs)

    def acc(self) -> np.ndarray:
        o = self.ops
        return gemm_acc_naive(input_mantissas_naive(o.x, o.x_table, o.x_shift, o.x_max), o.weight_mantissas(), o.bias)

    def expected(self) -> np.ndarray:
        acc = self.acc()
        assert np.abs(acc).max(initial=0) <= ACC_MAX
        if self.ops.thresholds is not None:
            return level_edge_naive(acc, acc.ndim - 1, self.ops.row_of, self.ops.thresholds)
        return float_edge_naive(acc, acc.ndim - 1, self.ops.channel_shifts())


def random_case(seed: int) -> GemmCase:
    rng = np.random.default_rng(seed + 10_000)
    n_out, k = int(rng.integers(1, 9)), int(rng.integers(1, 48))
    batch = BATCH_SHAPES[seed % len(BATCH_SHAPES)]
    ops = random_operands(rng, (n_out, k), (*batch, k), k, bits=1 + seed % 8, gc=(1, n_out)[(seed // 8) % 2])
    return GemmCase(ops, fused=bool(rng.random() < 0.5), rng=rng)


SEEDS = range(120)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_case_bit_exact(seed):
    case = random_case(seed)
    got = case.run()
    want = case.expected()
    assert got.shape == (*case.ops.x.shape[:-1], case.ops.idx.shape[0])
    assert bits_equal(got, want)


def test_random_cases_cover_the_brief():
    tags = set().union(*(random_case(s).tags for s in SEEDS))
    need = {"Gc=1", "Gc=M", "float", "level", "bias", "no-bias", "fused", "float-out", "tight"}
    need |= {f"bits={b}" for b in range(1, 9)} | {f"rank={r}" for r in (1, 2, 3, 4)}
    assert need <= tags, need - tags


def test_one_dimensional_input_is_a_single_row():
    case = random_case(0)
    x2 = case.ops.x.reshape(1, -1)
    assert case.ops.x.ndim == 1
    assert bits_equal(case.run(), case.run(x=x2)[0])


def test_channel_axis_is_last_for_per_channel_codebooks():
    """Gc = N with distinct shifts: the wrong broadcast axis would scale rows, not columns."""
    rng = np.random.default_rng(3)
    ops = random_operands(rng, (3, 5), (4, 3, 5), 5, bits=2, gc=3, kind="float")
    ops.w_shift = [0, 5, 11]
    case = GemmCase(ops)
    assert bits_equal(case.run(), case.expected())
    ops.thresholds = np.array([[0, 10], [-10, 0], [5, 5]], np.int32)
    assert bits_equal(case.run(), case.expected())


def _bound_case(bias_extra=0) -> GemmCase:
    """K = 3, x_max = 32767, |C| = 10922: 3·10922·32767 + bias = 2^30 - 1 (+ bias_extra)."""
    c, k, x_max = 10922, 3, 32767
    idx = np.array([[0, 0, 0], [1, 1, 1]])
    bias0 = ACC_MAX - k * c * x_max + bias_extra
    x = np.array([[np.inf] * 3, [-np.inf] * 3, [1e9, -1e9, np.nan]], np.float32)
    ops = Operands(x=x, idx=idx, packed=pack_naive(idx, 1), codebook=np.array([[c, -c]], np.int16), w_shift=[0],
                   x_table=None, bias=np.array([bias0, -bias0], np.int32), x_shift=0, x_max=x_max, w_bits=1)
    return GemmCase(ops)


def test_accumulator_at_the_bound():
    case = _bound_case()
    acc = case.acc()
    assert acc[0].tolist() == [ACC_MAX, -ACC_MAX]
    assert bits_equal(case.run(), case.expected())
    case.ops.thresholds = np.array([[-2**30, ACC_MAX, 2**30]], np.int32)
    levels = case.run()
    assert bits_equal(levels, case.expected())
    assert levels[0].tolist() == [2, 1]


def test_accumulator_one_above_the_bound_is_rejected():
    with pytest.raises(ValueError, match=r"^QGemm 'fc9': .*accumulator"):
        _bound_case(1).run(node="fc9")


# --- through onnx -----------------------------------------------------------------------------------------------


def _onnx_model(case: GemmCase, node_name: str):
    o = case.ops
    expected = case.expected()
    others = [("W", o.packed), ("codebook", o.codebook), ("x_table", o.x_table), ("bias", o.bias),
              ("thresholds", o.thresholds)]
    return one_node_model("QGemm", node_name, o.x, others, case.attrs(), expected.dtype, expected.shape), expected


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 8, 9, 10, 11, 17, 30])
def test_through_onnx_reference_session(seed):
    case = random_case(seed)
    model, expected = _onnx_model(case, f"fc_{seed}")
    got = check_and_run(model, case.ops.x)
    assert bits_equal(got, expected)
    assert bits_equal(got, case.run())


def test_through_onnx_at_the_bound_with_fused_output():
    case = _bound_case()
    case.ops.thresholds = np.array([[-2**30, 0, ACC_MAX]], np.int32)
    model, expected = _onnx_model(case, "fc_bound")
    assert bits_equal(check_and_run(model, case.ops.x), expected)


# --- validation -------------------------------------------------------------------------------------------------


def _base(kind="float") -> GemmCase:
    """A valid 4-bit QGemm, K = 10, |C| = 4000, x_max = 4095: bound 4095·10·4000 ≈ 2^27.3."""
    rng = np.random.default_rng(77)
    ops = random_operands(rng, (6, 10), (2, 10), 10, bits=4, gc=6, kind=kind, with_bias=True, x_max=4095)
    ops.codebook = np.array([[4000, -4000] * 8] * 6, np.int16)
    ops.bias = np.arange(6, dtype=np.int32)
    if kind == "level":
        ops.x, ops.x_table = np.full((2, 10), 15, np.uint8), np.arange(16, dtype=np.int16) * 10
    case = GemmCase(ops)
    case.ops.thresholds = np.zeros((6, 3), np.int32)
    assert case.run().dtype == np.uint8
    return case


ERRORS = {
    "input does not end in K": (dict(x=np.zeros((2, 9), np.float32)), "K = 10"),
    "0-D input": (dict(x=np.float32(1.0).reshape(())), "K = 10"),
    "w_shape of rank 1": (dict(w_shape=[60]), "w_shape"),
    "w_shape of rank 3": (dict(w_shape=[6, 10, 1]), "w_shape"),
    "w_shape with a zero": (dict(w_shape=[0, 10]), "w_shape"),
    "truncated packed buffer": (dict(w=pack_naive(np.zeros(60, np.int64), 4)[:-1]), "expected"),
    "packed for other bits": (dict(w=pack_naive(np.zeros(60, np.int64), 3)), "expected"),
    "codebook of wrong width": (dict(codebook=np.zeros((6, 8), np.int16)), "codebook"),
    "codebook rows neither 1 nor N": (dict(codebook=np.zeros((3, 16), np.int16), w_shift=[0] * 3), "codebook"),
    "w_shift length": (dict(w_shift=[0]), "w_shift"),
    "x_table given for float input": (dict(x_table=np.arange(3, dtype=np.int16)), "x_table"),
    "int32 input": (dict(x=np.zeros((2, 10), np.int32)), "float32"),
    "accumulator bound": (dict(x_max=32767, codebook=np.full((6, 16), 32767, np.int16)), "accumulator"),
    "bias wrong length": (dict(bias=np.zeros(5, np.int32)), "bias"),
    "non-monotone thresholds": (dict(thresholds=np.array([[0, 2, 1]] * 6, np.int32)), "non-decreasing"),
    "thresholds rows ≠ Gc": (dict(thresholds=np.zeros((1, 3), np.int32)), "thresholds"),
    "thresholds not int32": (dict(thresholds=np.zeros((6, 3), np.int64)), "thresholds"),
    "more than 256 output levels": (dict(thresholds=np.zeros((6, 256), np.int32)), "thresholds"),
}

LEVEL_ERRORS = {
    "x_table missing for uint8 input": (dict(x_table=None), "x_table"),
    "x_table 2-D": (dict(x_table=np.zeros((2, 16), np.int16)), "x_table"),
    "level ≥ len(x_table)": (dict(x_table=np.arange(15, dtype=np.int16)), "out of range"),
    "level table overflows the bound": (dict(x_table=np.full(16, 32767, np.int16)), "accumulator"),
}


@pytest.mark.parametrize("name", ERRORS)
def test_invalid_float_input_call_names_op_and_node(name):
    override, needle = ERRORS[name]
    with pytest.raises(ValueError, match=r"^QGemm 'head/fc': ") as info:
        _base().run(node="head/fc", **override)
    assert needle in str(info.value)


@pytest.mark.parametrize("name", LEVEL_ERRORS)
def test_invalid_level_input_call_names_op_and_node(name):
    override, needle = LEVEL_ERRORS[name]
    with pytest.raises(ValueError, match=r"^QGemm 'head/fc': ") as info:
        _base("level").run(node="head/fc", **override)
    assert needle in str(info.value)


@pytest.mark.parametrize("seed", range(40))
def test_row_scale_against_exact_rationals(seed):
    """op-contract §2.1/§3: a row-scaled channel's level is Σ_j [acc · r / 2^22 + bias ≥ T_j] in exact rationals (the
    kernel's floor is exact), and its float output is the real value rounded once to float64, then to float32."""
    from fractions import Fraction

    rng = np.random.default_rng(7000 + seed)
    n, k = int(rng.integers(1, 12)), int(rng.integers(1, 40))
    ops = random_operands(rng, (n, k), (int(rng.integers(1, 6)), k), k, gc=1, with_bias=True)
    r = rng.integers(0, 2**22 + 1, n).astype(np.int32)
    r[rng.random(n) < 0.2] = 2**22
    wm = ops.codebook[0].astype(np.int64)[ops.idx]
    acc = gemm_acc_naive(input_mantissas_naive(ops.x, ops.x_table, ops.x_shift, ops.x_max), wm, None)
    real = [[Fraction(int(a) * int(r[o]), 2**22) + int(ops.bias[o]) for o, a in enumerate(row)] for row in acc]
    args = dict(w_bits=ops.w_bits, w_shape=[n, k], w_shift=ops.w_shift, x_shift=ops.x_shift, x_max=ops.x_max)
    y = qgemm_reference(ops.x, ops.packed, ops.codebook, ops.x_table, ops.bias, None, r, **args)
    s = ops.w_shift[0] + ops.x_shift
    want = np.array([[np.ldexp(np.float32(float(v)), -s) for v in row] for row in real], dtype=np.float32)
    assert bits_equal(y, want)
    t = np.sort(rng.choice(np.array([int(v) for row in real for v in row]) + rng.integers(-1, 2, acc.size), 7))
    t = np.clip(t, -2**30, 2**30).astype(np.int32)[None]
    levels = qgemm_reference(ops.x, ops.packed, ops.codebook, ops.x_table, ops.bias, t, r, **args)
    want = np.array([[sum(v >= int(tj) for tj in t[0]) for v in row] for row in real], dtype=np.uint8)
    np.testing.assert_array_equal(levels, want)


def test_row_scale_is_rejected_with_per_channel_codebooks_or_out_of_range():
    rng = np.random.default_rng(3)
    ops = random_operands(rng, (4, 6), (2, 6), 6, gc=4, kind="float")
    args = dict(w_bits=ops.w_bits, w_shape=[4, 6], w_shift=ops.w_shift, x_shift=ops.x_shift, x_max=ops.x_max)
    with pytest.raises(ValueError, match="QGemm 'QGemm': row_scale scales one shared codebook"):
        qgemm_reference(ops.x, ops.packed, ops.codebook, None, None, None, np.ones(4, np.int32), **args)
    ops = random_operands(rng, (4, 6), (2, 6), 6, gc=1, kind="float")
    args.update(w_bits=ops.w_bits, w_shift=ops.w_shift, x_shift=ops.x_shift, x_max=ops.x_max)
    for bad in (np.full(4, 2**22 + 1, np.int32), np.array([1, -1, 1, 1], np.int32)):
        with pytest.raises(ValueError, match=r"row_scale values must be in 0\.\.2\^22"):
            qgemm_reference(ops.x, ops.packed, ops.codebook, None, None, None, bad, **args)
    with pytest.raises(ValueError, match=r"row_scale must be int32 \[4\]"):
        qgemm_reference(ops.x, ops.packed, ops.codebook, None, None, None, np.ones(3, np.int32), **args)
