"""Randomized bit-exact parity: every op through onnxruntime + libwq_ops against the numpy reference, for each
instruction-set path forced with WQCOMPILE_ISA (baseline, AVX2, AVX-512 where the CPU has it).

Operands come from tests.ops.cases.random_operands (accumulators up to the 2^30 bound, NaN/±Inf/tie inputs,
1..8-bit codebooks, Gc = 1 and Gc = M, float and level inputs), a shared codebook sometimes with a per-channel
row_scale. When the reference rejects a call the library must raise too.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.cases import random_operands
from tests.runtime.helpers import ISAS, cpu_has, model_of, run_ort, same_bits
from wqcompile.runtime_ops.qconv import qconv_reference
from wqcompile.runtime_ops.qdecode import qdecode_reference
from wqcompile.runtime_ops.qgemm import qgemm_reference
from wqcompile.runtime_ops.qrelu import qrelu_reference

pytestmark = [pytest.mark.requires_ops_lib,
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")]

ISA_PARAMS = [pytest.param(i, marks=pytest.mark.skipif(not cpu_has(i), reason=f"CPU lacks {i}")) for i in ISAS]
KERNELS = ((1, 1), (3, 3), (5, 3), (2, 2), (1, 3), (7, 7))
AUTO_PADS = ("NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
THRESHOLD_COUNTS = (1, 3, 15, 16, 17, 31, 63, 200, 255)


def _geometry_ok(h, w, kh, kw, strides, dilations, pads, auto_pad):
    eh, ew = (kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return True
    if auto_pad == "VALID":
        pads = (0, 0, 0, 0)
    return h + pads[0] + pads[2] >= eh and w + pads[1] + pads[3] >= ew


def _wide_level_table(rng, ops):
    """Sometimes replace a level table by a 256-entry one with the same max |X| (exercises every lookup quarter)."""
    if ops.x_table is None or rng.random() < 0.5:
        return
    top = int(np.abs(ops.x_table.astype(np.int64)).max())
    size = int(rng.choice([65, 129, 200, 256]))
    table = rng.integers(0, top + 1, size).astype(np.int16)
    table[0], table[-1] = 0, top
    ops.x_table = table
    ops.x = rng.integers(0, size, ops.x.shape).astype(np.uint8)


def _thresholds(rng, y_float, shifts, channel_axis, gc):
    """Non-decreasing int32 thresholds on, next to and between the accumulators of a float-output run."""
    count = int(rng.choice(THRESHOLD_COUNTS))
    acc = np.rint(np.ldexp(y_float.astype(np.float64), np.asarray(shifts).reshape(
        [-1 if a == channel_axis % y_float.ndim else 1 for a in range(y_float.ndim)])))
    acc = np.nan_to_num(acc, nan=0, posinf=2**30, neginf=-2**30)
    rows = []
    for g in range(gc):
        pool = (np.moveaxis(acc, channel_axis, 0)[g] if gc > 1 else acc).reshape(-1)
        pool = pool if pool.size else np.zeros(1)
        t = rng.choice(pool, count) + rng.integers(-1, 2, count)
        if rng.random() < 0.2:
            t[0], t[-1] = -2**30, 2**30
        rows.append(np.sort(np.clip(t, -2**30, 2**30)))
    return np.array(rows, dtype=np.int32)


def _row_scale(seed: int, rows: int, gc: int, force: bool) -> np.ndarray | None:
    """For a third of the shared-codebook cases (all with ``force``), a row_scale with the extremes 0, 1 and 2^22
    (own rng: the other operands of a seed stay what they were)."""
    rng = np.random.default_rng(5000 + seed)
    if gc != 1 or (rng.random() > 0.35 and not force):
        return None
    r = rng.integers(0, 2**22 + 1, rows)
    special = rng.random(rows)
    r[special < 0.15] = 2**22
    r[(special >= 0.15) & (special < 0.2)] = 0
    r[(special >= 0.2) & (special < 0.3)] = rng.integers(1, 64, int(np.sum((special >= 0.2) & (special < 0.3))))
    return r.astype(np.int32)


def conv_case(seed: int, row_scaled: bool = False) -> dict:
    rng = np.random.default_rng(1000 + seed)
    layout = ("dense", "grouped", "depthwise", "depthwise-multiplier", "pointwise")[seed % 5]
    kh, kw = KERNELS[seed % len(KERNELS)]
    if layout == "dense":
        group, cg, m = 1, int(rng.integers(1, 20)), int(rng.integers(1, 41))
    elif layout == "grouped":
        group = int(rng.choice([2, 3, 4]))
        cg, m = int(rng.integers(1, 6)), group * int(rng.integers(1, 6))
    elif layout == "depthwise":
        group = int(rng.integers(1, 24))
        cg, m = 1, group
    elif layout == "depthwise-multiplier":
        group = int(rng.integers(2, 5))
        cg, m = 1, 2 * group
    else:
        group, cg, m, kh, kw = 1, int(rng.integers(1, 40)), int(rng.integers(1, 40)), 1, 1
    auto_pad = AUTO_PADS[seed % len(AUTO_PADS)]
    while True:
        strides = [int(v) for v in rng.choice([1, 1, 2, 3], 2)]
        dilations = [int(v) for v in rng.choice([1, 1, 2], 2)]
        pads = [int(v) for v in rng.integers(0, 4, 4)] if auto_pad == "NOTSET" else [0, 0, 0, 0]
        h, w = (int(v) for v in rng.integers(1, 17, 2))
        if _geometry_ok(h, w, kh, kw, strides, dilations, pads, auto_pad):
            break
    n = int(rng.integers(1, 4))
    ops = random_operands(rng, (m, cg, kh, kw), (n, cg * group, h, w), cg * kh * kw, bits=1 + seed % 8,
                          gc=(1, m)[(seed // 8) % 2])
    _wide_level_table(rng, ops)
    attrs = dict(w_bits=ops.w_bits, w_shape=[m, cg, kh, kw], w_shift=ops.w_shift, x_shift=ops.x_shift,
                 x_max=ops.x_max, group=group, strides=strides, pads=pads, dilations=dilations, auto_pad=auto_pad)
    case = dict(op="QConv", x=ops.x, W=ops.packed, codebook=ops.codebook, x_table=ops.x_table, bias=ops.bias,
                thresholds=None, row_scale=_row_scale(seed, m, ops.codebook.shape[0], row_scaled), attrs=attrs)
    if rng.random() < 0.5:
        y = _reference(case)
        if not isinstance(y, Exception):
            case["thresholds"] = _thresholds(rng, y, ops.channel_shifts(), 1, ops.codebook.shape[0])
    return case


def gemm_case(seed: int, row_scaled: bool = False, k_range: tuple[int, int] = (1, 300)) -> dict:
    rng = np.random.default_rng(2000 + seed)
    k, rows_n = int(rng.integers(*k_range)), int(rng.integers(1, 100))
    lead = [list(), [int(rng.integers(1, 40))], [int(rng.integers(1, 4)), int(rng.integers(1, 12))]][seed % 3]
    ops = random_operands(rng, (rows_n, k), (*lead, k), k, bits=1 + seed % 8, gc=(1, rows_n)[(seed // 8) % 2])
    _wide_level_table(rng, ops)
    attrs = dict(w_bits=ops.w_bits, w_shape=[rows_n, k], w_shift=ops.w_shift, x_shift=ops.x_shift, x_max=ops.x_max)
    case = dict(op="QGemm", x=ops.x, W=ops.packed, codebook=ops.codebook, x_table=ops.x_table, bias=ops.bias,
                thresholds=None, row_scale=_row_scale(seed, rows_n, ops.codebook.shape[0], row_scaled), attrs=attrs)
    if rng.random() < 0.5:
        y = _reference(case)
        if not isinstance(y, Exception):
            case["thresholds"] = _thresholds(rng, y, ops.channel_shifts(), -1, ops.codebook.shape[0])
    return case


def _reference(case: dict):
    fn = qconv_reference if case["op"] == "QConv" else qgemm_reference
    try:
        return fn(case["x"], case["W"], case["codebook"], case["x_table"], case["bias"], case["thresholds"],
                  case.get("row_scale"), **case["attrs"])
    except ValueError as err:
        return err


def _check(case: dict, isa: str, *, as_inputs=False, threads=1):
    expected = _reference(case)
    out_dtype = np.uint8 if case["thresholds"] is not None else np.float32
    inputs = [("X", case["x"]), ("W", case["W"]), ("codebook", case["codebook"]), ("x_table", case["x_table"]),
              ("bias", case["bias"]), ("thresholds", case["thresholds"])]
    if case.get("row_scale") is not None:
        inputs.append(("row_scale", case["row_scale"]))
    model = model_of(case["op"], inputs, case["attrs"], out_dtype, as_inputs=as_inputs)
    feeds = {"X": case["x"]}
    if as_inputs:
        feeds.update({n: v for n, v in inputs[1:] if v is not None})
    if isinstance(expected, Exception):
        with pytest.raises(Exception):
            run_ort(model, feeds, isa, threads)
        return
    got = run_ort(model, feeds, isa, threads)
    assert same_bits(got, expected), f"{case['op']} {case['attrs']} differs on {np.sum(got != expected)} elements"


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(45))
def test_qconv_random(isa, seed, monkeypatch):
    if seed % 3 == 1:   # the GEMM path one image at a time (run_gemm's chunks of images)
        monkeypatch.setenv("WQCOMPILE_IMAGE_CHUNK_BYTES", "1")
    _check(conv_case(seed), isa, as_inputs=seed % 9 == 4, threads=1 + seed % 2)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(30))
def test_qgemm_random(isa, seed):
    _check(gemm_case(seed), isa, as_inputs=seed % 7 == 3, threads=1 + seed % 2)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(24))
def test_qgemm_long_k(isa, seed):
    """K of 512 to 1600 (test_qgemm_random's stop at 300): long int16 panels, nibble panels where the weights allow
    them, row tiles over many k-pairs."""
    _check(gemm_case(seed, k_range=(512, 1600)), isa, as_inputs=seed % 7 == 3, threads=1 + seed % 2)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", [s for s in range(48) if (s // 8) % 2 == 0])   # the seeds with one shared codebook
def test_row_scale_random(isa, seed):
    conv, gemm = conv_case(seed, row_scaled=True), gemm_case(seed, row_scaled=True)
    assert conv["row_scale"] is not None and gemm["row_scale"] is not None
    _check(conv, isa, as_inputs=seed % 5 == 2, threads=1 + seed % 2)
    _check(gemm, isa, as_inputs=seed % 5 == 3, threads=1 + seed % 2)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_qconv_wide_fan_in_spans_several_column_blocks(isa):
    """Fan-in 4608 (3x3 over 512 channels): packed column panels no longer fit one block; batch 2 columns."""
    rng = np.random.default_rng(7)
    ops = random_operands(rng, (20, 512, 3, 3), (2, 512, 9, 11), 512 * 9, bits=4, gc=1, kind="level")
    attrs = dict(w_bits=4, w_shape=[20, 512, 3, 3], w_shift=ops.w_shift, x_shift=ops.x_shift, x_max=ops.x_max,
                 pads=[1, 1, 1, 1])
    case = dict(op="QConv", x=ops.x, W=ops.packed, codebook=ops.codebook, x_table=ops.x_table, bias=ops.bias,
                thresholds=None, attrs=attrs)
    _check(case, isa, threads=2)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_qconv_accumulator_at_the_bound(isa):
    """Every weight at +C and every input at +x_max with |bias| filling the rest: acc = 2^30 - 1 exactly."""
    fan_in, x_max = 3 * 3 * 3, 32767
    c = (2**30 - 1 - 5) // (x_max * fan_in)
    bias = np.full(4, 2**30 - 1 - c * x_max * fan_in, np.int32)
    from tests.ops.oracles import pack_naive
    case = dict(op="QConv", x=np.full((1, 3, 5, 5), 1e9, np.float32), W=pack_naive(np.zeros(4 * fan_in, int), 2),
                codebook=np.array([[c, -c, 0, 1]], np.int16), x_table=None, bias=bias, thresholds=None,
                attrs=dict(w_bits=2, w_shape=[4, 3, 3, 3], w_shift=[0], x_shift=0, x_max=x_max))
    _check(case, isa)
    case["thresholds"] = np.array([[2**30 - 2, 2**30 - 1, 2**30]], np.int32)
    _check(case, isa)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("shift", [-140, -97, -98, 0, 126, 127, 149, 160])
def test_output_scale_extremes(isa, shift):
    """w_shift + x_shift outside float32's normal range takes the exact ldexp path (subnormal, overflow)."""
    rng = np.random.default_rng(shift + 500)
    ops = random_operands(rng, (6, 40), (3, 40), 40, bits=3, gc=1, kind="float")
    case = dict(op="QGemm", x=ops.x, W=ops.packed, codebook=ops.codebook, x_table=None, bias=ops.bias,
                thresholds=None, attrs=dict(w_bits=3, w_shape=[6, 40], w_shift=[shift], x_shift=0, x_max=ops.x_max))
    _check(case, isa)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("shift", [-97, -40, 0, 60, 125, 126, 127, 149])
def test_row_scaled_float_edge_extremes(isa, shift):
    """A row-scaled QConv with float output: float32(acc · r · 2^-22 + bias) · 2^-shift, vectorized in float64 on
    AVX-512 (the tile edge, and edge_float_scaled for tiles spanning images), bit for bit with ldexp, fractional
    values included (subnormal results at shift 126, 127: the one rounding either way); 19 channels (8-row tiles
    and a ragged one), 7x7 planes (48-column panels span images)."""
    rng = np.random.default_rng(shift + 1300)
    ops = random_operands(rng, (19, 24, 1, 1), (3, 24, 7, 7), 24, bits=4, gc=1, kind="level", with_bias=True)
    r = rng.integers(1, 2**22 + 1, 19).astype(np.int32)
    r[3] = 2**22
    x_shift = 0 if ops.x_shift > 0 else ops.x_shift
    case = dict(op="QConv", x=ops.x, W=ops.packed, codebook=ops.codebook, x_table=ops.x_table, bias=ops.bias,
                thresholds=None, row_scale=r,
                attrs=dict(w_bits=4, w_shape=[19, 24, 1, 1], w_shift=[shift - x_shift], x_shift=x_shift,
                           x_max=ops.x_max))
    _check(case, isa, threads=1 + shift % 2)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("x_shift", [-150, -126, -20, 0, 40, 127, 140])
def test_input_scale_extremes(isa, x_shift):
    rng = np.random.default_rng(x_shift + 900)
    ops = random_operands(rng, (5, 33), (4, 33), 33, bits=2, gc=5, kind="float")
    x = np.concatenate([ops.x.reshape(-1), np.float32([1e-45, -1e-45, 3.4e38, -3.4e38, 0.5, -0.5, 1.5, 2.5])])[:132]
    case = dict(op="QGemm", x=x.reshape(4, 33).astype(np.float32), W=ops.packed, codebook=ops.codebook,
                x_table=None, bias=None, thresholds=None,
                attrs=dict(w_bits=2, w_shape=[5, 33], w_shift=ops.w_shift, x_shift=x_shift, x_max=ops.x_max))
    _check(case, isa)


def qrelu_case(seed: int):
    rng = np.random.default_rng(3000 + seed)
    count = int(rng.choice(THRESHOLD_COUNTS))
    t = np.sort(rng.standard_normal(count).astype(np.float32) * 4)
    if seed % 3 == 0:
        t[rng.integers(0, count, max(1, count // 4))] = t[0]        # duplicates
        t = np.sort(t)
    if seed % 4 == 1:
        t[-1] = np.inf
    if seed % 5 == 2:
        t[0] = -np.inf
    shape = [(1000,), (3, 17, 5), (2, 4, 8, 8), (0, 3)][seed % 4]
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    flat = x.reshape(-1)
    if flat.size:
        picks = rng.integers(0, flat.size, min(flat.size, 200))
        flat[picks[:50]] = rng.choice(t, len(picks[:50]))                       # exactly on a threshold
        flat[picks[50:100]] = np.nextafter(rng.choice(t, len(picks[50:100])), np.float32(-np.inf))
        flat[picks[100:120]] = np.nan
        flat[picks[120:140]] = np.inf
        flat[picks[140:160]] = -np.inf
        flat[picks[160:]] = -0.0
    return x, t


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(12))
def test_qrelu_random(isa, seed):
    x, t = qrelu_case(seed)
    model = model_of("QRelu", [("X", x), ("thresholds", t)], {}, np.uint8, as_inputs=seed % 4 == 3)
    feeds = {"X": x} if seed % 4 != 3 else {"X": x, "thresholds": t}
    assert same_bits(run_ort(model, feeds, isa, threads=1 + seed % 2), qrelu_reference(x, t))


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(6))
def test_qdecode_random(isa, seed):
    rng = np.random.default_rng(4000 + seed)
    size = int(rng.choice([1, 2, 16, 33, 200, 256]))
    table = np.concatenate([[0], rng.standard_normal(size - 1) * 3]).astype(np.float32)
    x = rng.integers(0, size, [(70000,), (2, 3, 5, 5), (0,), (1, 1)][seed % 4]).astype(np.uint8)
    model = model_of("QDecode", [("X", x), ("table", table)], {}, np.float32)
    assert same_bits(run_ort(model, {"X": x}, isa, threads=2), qdecode_reference(x, table))


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_zero_batch(isa):
    rng = np.random.default_rng(11)
    ops = random_operands(rng, (4, 2, 3, 3), (0, 2, 6, 6), 18, bits=3, gc=1, kind="level")
    case = dict(op="QConv", x=ops.x, W=ops.packed, codebook=ops.codebook, x_table=ops.x_table, bias=ops.bias,
                thresholds=None, attrs=dict(w_bits=3, w_shape=[4, 2, 3, 3], w_shift=ops.w_shift, x_shift=ops.x_shift,
                                            x_max=ops.x_max))
    _check(case, isa)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("kernel,stride,hw,dilation", [((3, 3), 1, (57, 40), 1), ((3, 3), 2, (112, 30), 1),
                                                       ((5, 5), 1, (9, 70), 1), ((5, 5), 2, (33, 33), 1),
                                                       ((3, 3), 1, (7, 7), 1), ((1, 1), 1, (20, 20), 1),
                                                       ((3, 3), 1, (21, 19), 2), ((2, 4), 2, (17, 23), 1)])
def test_depthwise_planes(isa, kernel, stride, hw, dilation):
    """Large and odd planes for the depthwise kernels (whole-vector reads across row ends, even/odd halves)."""
    rng = np.random.default_rng(hash((kernel, stride, hw)) % 2**32)
    c = 5
    ops = random_operands(rng, (c, 1, *kernel), (2, c, *hw), kernel[0] * kernel[1], bits=4, gc=c, kind="level")
    pads = [kernel[0] // 2, kernel[1] // 2, kernel[0] // 2, kernel[1] // 2]
    attrs = dict(w_bits=4, w_shape=[c, 1, *kernel], w_shift=ops.w_shift, x_shift=ops.x_shift, x_max=ops.x_max,
                 group=c, strides=[stride, stride], pads=pads, dilations=[dilation, dilation])
    case = dict(op="QConv", x=ops.x, W=ops.packed, codebook=ops.codebook, x_table=ops.x_table, bias=ops.bias,
                thresholds=None, attrs=attrs)
    _check(case, isa, threads=2)
    y = _reference(case)
    case["thresholds"] = _thresholds(rng, y, ops.channel_shifts(), 1, c)
    _check(case, isa)


MAXPOOLS = [dict(kernel_shape=[2, 2], strides=[2, 2]), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
            dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), dict(kernel_shape=[3, 2], strides=[1, 2],
                                                                         pads=[0, 1, 2, 0], dilations=[2, 1]),
            dict(kernel_shape=[2, 3], auto_pad="SAME_UPPER", strides=[2, 2]),
            dict(kernel_shape=[3, 3], auto_pad="SAME_LOWER", strides=[2, 1]),
            dict(kernel_shape=[2, 2], auto_pad="VALID", strides=[3, 3]), dict(kernel_shape=[1, 1])]


@pytest.mark.parametrize("attrs", MAXPOOLS, ids=[str(i) for i in range(len(MAXPOOLS))])
def test_level_maxpool_equals_onnxruntime_maxpool(attrs):
    """The runtime-internal LevelMaxPool against onnxruntime's own uint8 MaxPool."""
    import onnxruntime as ort
    from onnx import helper

    from wqcompile import runtime

    rng = np.random.default_rng(len(str(attrs)))
    x = rng.integers(0, 256, (2, 3, 11, 14)).astype(np.uint8)
    node = helper.make_node("MaxPool", ["X"], ["Y"], **attrs)
    graph = helper.make_graph([node], "p", [helper.make_tensor_value_info("X", 2, list(x.shape))],
                              [helper.make_tensor_value_info("Y", 2, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    rewritten, changed = runtime.with_level_maxpool(model)
    assert changed == 1 and rewritten.graph.node[0].op_type == "LevelMaxPool"
    got = runtime.InferenceSession(rewritten).run(None, {"X": x})[0]
    assert same_bits(got, expected)
