"""QConv's u8 × s8 path (AVX-512 vpdpbusd on a quad image of u8 level mantissas and s8 weights) against the numpy
reference, bit for bit.

A QConv layer takes that path when the instruction set has it (AVX-512), its input is uint8 levels with every
x_table entry in 0..255, every decoded weight mantissa is in -128..127 and it is not depthwise. Every case here is
built to qualify and runs three ways on AVX-512:

* ``WQCOMPILE_REQUIRE_U8=1``: the kernel fails (creation, or the run for weights given as graph inputs) when a
  GEMM-path layer does not take the u8 path, so a passing run proves the u8 kernels computed the output;
* the same with ``WQCOMPILE_NO_VBMI=1`` (the quad image built without byte permutes);
* ``WQCOMPILE_NO_U8=1``: the int16 pair path, the A/B reference inside the library.

Cases cover dense, grouped and pointwise (1x1 stride 1: the image read in place) layers, channel counts that are
not multiples of 4, strides, dilations, pads and auto_pad, w_bits 1..8, Gc = 1 and Gc = M, float and fused level
outputs, bias and row_scale, batches whose column panels span images, levels 0 and Lx - 1, and the extreme
mantissas -128, 127 (weights) and 255 (levels).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.oracles import pack_naive
from tests.runtime.helpers import conv_maxpool_model, cpu_has, forced_isa, only_switches, run_layer_case, same_bits
from tests.runtime.test_parity import AUTO_PADS, _geometry_ok, _thresholds
from wqcompile import runtime
from wqcompile.runtime_ops.qconv import qconv_reference

pytestmark = [pytest.mark.requires_ops_lib,
              pytest.mark.skipif(not cpu_has("avx512"), reason="the u8 path needs AVX-512 VNNI")]

ACC_MAX = 2**30 - 1
KERNELS = ((1, 1), (3, 3), (5, 3), (2, 2), (1, 3), (3, 1))
CHANNELS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 16, 17, 31, 33)
MODES = {"u8": {"WQCOMPILE_REQUIRE_U8": "1"},
         # also one image per run_gemm chunk (WQCOMPILE_IMAGE_CHUNK_BYTES=1), so batches run image by image
         "u8-no-vbmi": {"WQCOMPILE_REQUIRE_U8": "1", "WQCOMPILE_NO_VBMI": "1", "WQCOMPILE_IMAGE_CHUNK_BYTES": "1"},
         "int16": {"WQCOMPILE_NO_U8": "1"}}
SWITCHES = ("WQCOMPILE_REQUIRE_U8", "WQCOMPILE_NO_U8", "WQCOMPILE_NO_VBMI", "WQCOMPILE_IMAGE_CHUNK_BYTES")


def u8_table(rng, size: int) -> np.ndarray:
    """A level table within 0..255: 0 first, often 255 last (the extreme u8 mantissa), log-like or arbitrary."""
    if size == 1:
        return np.zeros(1, np.int16)
    top = 255 if rng.random() < 0.7 else int(rng.integers(1, 256))
    if rng.random() < 0.5:
        rest = np.sort(rng.integers(0, top + 1, size - 1))
    else:   # LogQuant-like: rint(top · 2^(-(size-2-n)·step/16)), small levels rounding to 0, 1, ...
        step = 2 * int(rng.integers(1, 9))
        rest = np.rint(top * np.exp2((np.arange(size - 1) - (size - 2)) * step / 16))
    rest[-1] = top
    return np.concatenate([[0], rest]).astype(np.int16)


def u8_levels(rng, shape, size: int) -> np.ndarray:
    """Random levels with runs of 0 and of the top level Lx - 1."""
    x = rng.integers(0, size, shape).astype(np.uint8)
    flat = x.reshape(-1)
    if flat.size:
        flat[rng.random(flat.size) < 0.15] = size - 1
        flat[rng.random(flat.size) < 0.1] = 0
    return x


def s8_codebook(rng, gc: int, bits: int, fan_in: int, x_top: int, bias_budget: int) -> np.ndarray:
    """Codebook rows within -128..127 (with the extremes where the accumulator bound allows them)."""
    cmax = min(128, max(1, (ACC_MAX - bias_budget) // (max(1, x_top) * fan_in)))
    cb = rng.integers(-cmax, min(cmax, 127) + 1, (gc, 1 << bits))
    if cb.shape[1] >= 2 and rng.random() < 0.7:
        cb[:, 0], cb[:, 1] = -cmax, min(cmax, 127)
    return cb.astype(np.int16)


def u8_conv_case(seed: int, *, layout: str | None = None) -> dict:
    rng = np.random.default_rng(7000 + seed)
    layout = layout or ("dense", "grouped", "pointwise", "dense", "pointwise-batch")[seed % 5]
    kh, kw = KERNELS[seed % len(KERNELS)]
    auto_pad = AUTO_PADS[seed % len(AUTO_PADS)]
    group = 1
    if layout == "grouped":
        group = int(rng.choice([2, 3, 4]))
        cg, m = int(rng.choice(CHANNELS[:10])), group * int(rng.integers(1, 7))
    else:
        cg, m = int(rng.choice(CHANNELS)), int(rng.integers(1, 41))
    if layout.startswith("pointwise"):
        kh = kw = 1
        auto_pad = "NOTSET"
    while True:
        strides = [int(v) for v in rng.choice([1, 1, 2, 3], 2)]
        dilations = [int(v) for v in rng.choice([1, 1, 2], 2)]
        pads = [int(v) for v in rng.integers(0, 3, 4)] if auto_pad == "NOTSET" else [0, 0, 0, 0]
        if layout.startswith("pointwise"):
            strides, dilations, pads = [1, 1], [1, 1], [0, 0, 0, 0]
        h, w = (int(v) for v in rng.integers(1, 15, 2))
        if _geometry_ok(h, w, kh, kw, strides, dilations, pads, auto_pad):
            break
    # batches: columns run over (image, pixel), so panels of 48 columns often span two or more images
    n = int(rng.integers(2, 6)) if layout == "pointwise-batch" else int(rng.integers(1, 4))
    bits = 1 + seed % 8
    gc = (1, m)[(seed // 8) % 2]
    fan_in = cg * kh * kw
    table = u8_table(rng, int(rng.choice([1, 2, 3, 16, 17, 64, 65, 129, 200, 256])))
    x_top = int(table.max())
    with_bias = rng.random() < 0.6
    bias_budget = int(rng.choice([0, 2**10, 2**24, 2**29])) if with_bias else 0
    codebook = s8_codebook(rng, gc, bits, fan_in, x_top, bias_budget)
    idx = rng.integers(0, 1 << bits, (m, cg, kh, kw))
    room = ACC_MAX - x_top * fan_in * int(np.abs(codebook.astype(np.int64)).max())
    bias_budget = max(0, min(bias_budget, room))
    bias = rng.integers(-bias_budget, bias_budget + 1, m).astype(np.int32) if with_bias else None
    row_scale = None
    if gc == 1 and rng.random() < 0.35:
        row_scale = rng.integers(0, 2**22 + 1, m).astype(np.int32)
        row_scale[rng.random(m) < 0.2] = 2**22
    attrs = dict(w_bits=bits, w_shape=[m, cg, kh, kw], w_shift=[int(v) for v in rng.integers(-3, 12, gc)],
                 x_shift=int(rng.integers(-4, 9)), x_max=32767, group=group, strides=strides, pads=pads,
                 dilations=dilations, auto_pad=auto_pad)
    case = dict(x=u8_levels(rng, (n, cg * group, h, w), len(table)), W=pack_naive(idx, bits), codebook=codebook,
                x_table=table, bias=bias, thresholds=None, row_scale=row_scale, attrs=attrs)
    if rng.random() < 0.5:
        y = reference(case)
        case["thresholds"] = _thresholds(rng, y, [s + attrs["x_shift"] for s in attrs["w_shift"]], 1, gc)
    return case


def reference(case: dict) -> np.ndarray:
    return qconv_reference(case["x"], case["W"], case["codebook"], case["x_table"], case["bias"], case["thresholds"],
                           case["row_scale"], **case["attrs"])


def run_case(case: dict, env: dict, *, as_inputs=False, threads=1, isa="avx512") -> np.ndarray:
    with only_switches(SWITCHES, env):
        return run_layer_case("QConv", case, as_inputs=as_inputs, isa=isa, threads=threads)


def check_all_modes(case: dict, **kw) -> None:
    expected = reference(case)
    for mode, env in MODES.items():
        got = run_case(case, env, **kw)
        assert same_bits(got, expected), \
            f"{mode}: {case['attrs']} differs on {int(np.sum(got != expected))} of {expected.size} elements"


@pytest.mark.parametrize("seed", range(60))
def test_u8_path_random(seed):
    check_all_modes(u8_conv_case(seed), as_inputs=seed % 9 == 4, threads=1 + seed % 2)


@pytest.mark.parametrize("cg", [1, 2, 3, 4, 5, 7, 8, 9, 64, 67])
def test_u8_channel_tails_and_extremes(cg):
    """Every weight at -128 or 127 against levels at 255, channel counts around multiples of 4 (the zero bytes of
    the last quad), a pointwise and a padded 3x3 layer, both outputs."""
    rng = np.random.default_rng(cg)
    table = np.array([0, 1, 2, 127, 128, 254, 255], np.int16)
    for kh, pads in ((1, [0, 0, 0, 0]), (3, [1, 2, 0, 1])):
        m = 19
        idx = rng.integers(0, 4, (m, cg, kh, kh))
        codebook = np.array([[-128, 127, -1, 1]], np.int16)
        x = np.where(rng.random((3, cg, 9, 13)) < 0.6, 6, rng.integers(0, 7, (3, cg, 9, 13))).astype(np.uint8)
        attrs = dict(w_bits=2, w_shape=[m, cg, kh, kh], w_shift=[0], x_shift=0, x_max=32767, pads=pads)
        case = dict(x=x, W=pack_naive(idx, 2), codebook=codebook, x_table=table, bias=None, thresholds=None,
                    row_scale=None, attrs=attrs)
        check_all_modes(case, threads=2)
        y = reference(case)
        case["bias"] = rng.integers(-1000, 1000, m).astype(np.int32)
        case["thresholds"] = _thresholds(rng, y, [0], 1, 1)
        check_all_modes(case)


def test_u8_accumulator_at_the_bound():
    """Weights 127 (and -128) against levels 255 with the bias filling the rest: |acc| reaches 2^30 - 1."""
    cg, kh = 512, 3
    fan_in = cg * kh * kh
    per_tap = 255 * 128
    bias_abs = ACC_MAX - per_tap * fan_in
    for w, sign in ((1, -1), (0, 1)):   # codebook entry -128 with bias -B, entry 127 with bias +B
        idx = np.full((4, cg, kh, kh), w)
        case = dict(x=np.full((1, cg, 3, 5), 1, np.uint8), W=pack_naive(idx, 1),
                    codebook=np.array([[127, -128]], np.int16), x_table=np.array([0, 255], np.int16),
                    bias=np.full(4, sign * bias_abs, np.int32), thresholds=None, row_scale=None,
                    attrs=dict(w_bits=1, w_shape=[4, cg, kh, kh], w_shift=[0], x_shift=0, x_max=32767))
        check_all_modes(case, threads=2)
        case["thresholds"] = np.array([[-2**30, -(2**30 - 1), 2**30 - 2, 2**30 - 1, 2**30]], np.int32)
        check_all_modes(case)


@pytest.mark.parametrize("what,value", [("weight", 128), ("weight", -129), ("table", 256), ("table", -1)])
def test_u8_path_refused_outside_the_ranges(what, value):
    """One mantissa outside s8 (weights) or u8 (levels): the int16 path runs (still exact), and
    WQCOMPILE_REQUIRE_U8=1 reports why the layer does not take the u8 path."""
    rng = np.random.default_rng(3)
    cg, m = 6, 10
    codebook = np.array([[-128, 127, 5, -7]], np.int16)
    table = np.array([0, 3, 9, 255], np.int16)
    if what == "weight":
        codebook[0, 3] = value
    else:
        table[2] = value
    idx = rng.integers(0, 4, (m, cg, 3, 3))
    case = dict(x=rng.integers(0, 4, (2, cg, 7, 7)).astype(np.uint8), W=pack_naive(idx, 2), codebook=codebook,
                x_table=table, bias=None, thresholds=None, row_scale=None,
                attrs=dict(w_bits=2, w_shape=[m, cg, 3, 3], w_shift=[0], x_shift=0, x_max=32767, pads=[1, 1, 1, 1]))
    expected = reference(case)
    assert same_bits(run_case(case, {}), expected)
    with pytest.raises(Exception, match="outside"):
        run_case(case, {"WQCOMPILE_REQUIRE_U8": "1"})


def test_u8_unused_wide_codebook_entry_does_not_matter():
    """Only the codebook entries the weights use must fit s8."""
    rng = np.random.default_rng(4)
    idx = rng.integers(0, 3, (8, 5, 3, 3))   # entry 3 (= 1000) never used
    case = dict(x=rng.integers(0, 4, (1, 5, 6, 6)).astype(np.uint8), W=pack_naive(idx, 2),
                codebook=np.array([[-128, 127, 3, 1000]], np.int16), x_table=np.array([0, 1, 200, 255], np.int16),
                bias=None, thresholds=None, row_scale=None,
                attrs=dict(w_bits=2, w_shape=[8, 5, 3, 3], w_shift=[0], x_shift=0, x_max=32767))
    check_all_modes(case)


@pytest.mark.parametrize("isa", [pytest.param(i, marks=pytest.mark.skipif(not cpu_has(i), reason=f"CPU lacks {i}"))
                                 for i in ("baseline", "avx2")])
def test_u8_path_only_on_avx512(isa):
    """Instruction sets without the u8 entry points keep the int16 path (WQCOMPILE_REQUIRE_U8 says so)."""
    case = u8_conv_case(0, layout="dense")
    assert same_bits(run_case(case, {}, isa=isa), reference(case))
    with pytest.raises(Exception, match="no u8 path"):
        run_case(case, {"WQCOMPILE_REQUIRE_U8": "1"}, isa=isa)


def test_u8_require_ignores_depthwise_and_wide_float_input_is_refused():
    """Depthwise layers keep their own kernel (WQCOMPILE_REQUIRE_U8 does not apply to them); a float32 input
    whose mantissas do not fit an s8 (x_max above 127) does not take the u8 path."""
    rng = np.random.default_rng(5)
    c = 6
    case = dict(x=rng.integers(0, 4, (2, c, 8, 8)).astype(np.uint8), W=pack_naive(rng.integers(0, 4, (c, 1, 3, 3)), 2),
                codebook=np.array([[-128, 127, 3, 1]], np.int16), x_table=np.array([0, 1, 200, 255], np.int16),
                bias=None, thresholds=None, row_scale=None,
                attrs=dict(w_bits=2, w_shape=[c, 1, 3, 3], w_shift=[0], x_shift=0, x_max=32767, group=c,
                           pads=[1, 1, 1, 1]))
    check_all_modes(case)
    flt = dict(case, x=rng.standard_normal((2, c, 8, 8)).astype(np.float32), x_table=None,
               W=pack_naive(rng.integers(0, 4, (4, c, 3, 3)), 2),
               attrs=dict(case["attrs"], w_shape=[4, c, 3, 3], group=1, x_max=255))
    assert same_bits(run_case(flt, {}), reference(flt))
    with pytest.raises(Exception, match="x_max 255 is above 127"):
        run_case(flt, {"WQCOMPILE_REQUIRE_U8": "1"})


def float_input(rng, shape, x_shift: int, x_max: int) -> np.ndarray:
    """Float32 input around the s8 range of its mantissas: values that round to ±x_max, beyond it (clipped), ties
    (k + 0.5 mantissas, round half to even), zeros, NaN and ±inf."""
    unit = 2.0 ** -x_shift
    x = rng.standard_normal(shape) * (x_max / 3) * unit
    flat = x.reshape(-1)
    if flat.size:
        pick = rng.random(flat.size)
        flat[pick < 0.05] = (rng.integers(-x_max, x_max + 1, int(np.sum(pick < 0.05))) + 0.5) * unit
        flat[(pick >= 0.05) & (pick < 0.08)] = 0.0
        flat[(pick >= 0.08) & (pick < 0.1)] = np.sign(rng.standard_normal(int(np.sum((pick >= 0.08) & (pick < 0.1))))) * 3 * x_max * unit
        flat[(pick >= 0.1) & (pick < 0.11)] = np.nan
        flat[(pick >= 0.11) & (pick < 0.115)] = np.inf
        flat[(pick >= 0.115) & (pick < 0.12)] = -np.inf
    return x.astype(np.float32)


def float_conv_case(seed: int, *, layout: str | None = None) -> dict:
    """u8_conv_case with a float32 input whose mantissas are s8 (x_max ≤ 127): the quad image holds mantissa + 128
    and the kernel folds −128 · Σ C into the bias (padding is 128 too). No row scale: those keep the int16 path."""
    case = u8_conv_case(seed, layout=layout)
    rng = np.random.default_rng(9000 + seed)
    attrs = dict(case["attrs"])
    attrs["x_max"] = int(rng.choice([1, 2, 64, 100, 127, 127]))
    attrs["x_shift"] = int(rng.integers(-6, 12))
    m, cg, kh, kw = attrs["w_shape"]
    bits = attrs["w_bits"]
    gc = case["codebook"].shape[0]
    bias_budget = int(rng.choice([0, 2**10, 2**24, 2**29]))
    codebook = s8_codebook(rng, gc, bits, cg * kh * kw, attrs["x_max"], bias_budget)
    room = ACC_MAX - attrs["x_max"] * cg * kh * kw * int(np.abs(codebook.astype(np.int64)).max())
    bias_budget = max(0, min(bias_budget, room))
    bias = rng.integers(-bias_budget, bias_budget + 1, m).astype(np.int32) if rng.random() < 0.7 else None
    x = float_input(rng, case["x"].shape, attrs["x_shift"], attrs["x_max"])
    out = dict(case, x=x, x_table=None, codebook=codebook, bias=bias, row_scale=None, thresholds=None, attrs=attrs)
    if case["thresholds"] is not None:
        y = reference(out)
        out["thresholds"] = _thresholds(rng, y, [s + attrs["x_shift"] for s in attrs["w_shift"]], 1, gc)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_u8_path_float_input_random(seed):
    """Float32 input with s8 mantissas on the u8 path: every layout, pads (128 in the image), both outputs."""
    check_all_modes(float_conv_case(seed), as_inputs=seed % 9 == 4, threads=1 + seed % 2)


@pytest.mark.parametrize("cg", [1, 3, 4, 5, 64, 67])
def test_u8_float_input_extremes_and_bound(cg):
    """Every weight at -128 or 127 against inputs at ±127 (and beyond: clipped), a padded 3x3 layer whose padding
    must act as 0, and the bias filling the rest of the accumulator bound: |acc| reaches 2^30 - 1."""
    rng = np.random.default_rng(cg)
    kh, m = 3, 9
    fan_in = cg * kh * kh
    for w, sign in ((1, -1), (0, 1)):
        idx = np.full((m, cg, kh, kh), w)
        idx[:, :, 0, 0] = rng.integers(0, 2, (m, cg))
        x = np.where(rng.random((2, cg, 6, 7)) < 0.7, sign * 1e9, rng.integers(-127, 128, (2, cg, 6, 7)))
        bias_abs = ACC_MAX - 127 * 128 * fan_in
        case = dict(x=x.astype(np.float32), W=pack_naive(idx, 1), codebook=np.array([[127, -128]], np.int16),
                    x_table=None, bias=np.full(m, -sign * bias_abs, np.int32), thresholds=None, row_scale=None,
                    attrs=dict(w_bits=1, w_shape=[m, cg, kh, kh], w_shift=[0], x_shift=0, x_max=127,
                               pads=[1, 0, 2, 1]))
        check_all_modes(case, threads=2)
        case["thresholds"] = np.array([[-2**30, -(2**30 - 1), 0, 2**30 - 2, 2**30 - 1, 2**30]], np.int32)
        check_all_modes(case)


def test_u8_float_input_refused_when_row_scaled():
    """A row scale multiplies acc before the bias is added, so the offset cannot be folded: the int16 path runs."""
    case = float_conv_case(0, layout="dense")
    case["codebook"] = case["codebook"][:1]
    m = case["attrs"]["w_shape"][0]
    case["row_scale"] = np.random.default_rng(1).integers(0, 2**22 + 1, m).astype(np.int32)
    case["thresholds"] = None
    assert same_bits(run_case(case, {}), reference(case))
    with pytest.raises(Exception, match="row-scaled"):
        run_case(case, {"WQCOMPILE_REQUIRE_U8": "1"})


def _maxpool_ref(y: np.ndarray, k: int, s: int, pads: list[int]) -> np.ndarray:
    """MaxPool of uint8 levels (0 is the identity: no window lies entirely in the padding here)."""
    p = np.pad(y, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh, ow = (p.shape[2] - k) // s + 1, (p.shape[3] - k) // s + 1
    out = np.zeros(y.shape[:2] + (oh, ow), y.dtype)
    for dy in range(k):
        for dx in range(k):
            out = np.maximum(out, p[:, :, dy:dy + s * oh:s, dx:dx + s * ow:s])
    return out


@pytest.mark.parametrize("seed", range(8))
def test_u8_qconv_maxpool(seed):
    """QConvMaxPool (raw int32 tile edge, pooled, then quantized) on the u8 path."""
    k, s, pads = ((2, 2, [0, 0, 0, 0]), (3, 2, [1, 1, 1, 1]))[seed % 2]
    case = u8_conv_case(seed, layout=("dense", "grouped", "pointwise-batch")[seed % 3])
    case["row_scale"] = None   # QConvMaxPool is never formed over a row-scaled layer
    case["thresholds"] = None
    rng = np.random.default_rng(seed)
    y = reference(case)
    if min(y.shape[2:]) + pads[0] + pads[2] < k:
        pytest.skip("the pool does not fit this output")
    case["thresholds"] = _thresholds(rng, y, [v + case["attrs"]["x_shift"] for v in case["attrs"]["w_shift"]], 1,
                                     case["codebook"].shape[0])
    expected = _maxpool_ref(reference(case), k, s, pads)
    model, _ = conv_maxpool_model(case, dict(kernel_shape=[k, k], strides=[s, s], pads=pads))
    fused, count = runtime.with_qconv_maxpool(model)
    assert count == 1
    import onnxruntime as ort
    for mode, env in MODES.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1 + seed % 2
        with only_switches(SWITCHES, env), forced_isa("avx512"):
            got = runtime.InferenceSession(fused, so).run(None, {"X": case["x"]})[0]
        assert same_bits(got, expected), f"{mode}: differs on {int(np.sum(got != expected))} elements"
