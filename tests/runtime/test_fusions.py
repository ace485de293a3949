"""The runtime-internal fusions of wqcompile.runtime against the unfused graph on the same library
(``InferenceSession(rewrite=False)``: QConv, QRelu, QDecode kernels with onnxruntime's own MaxPool and Add), on
every instruction-set path: QConv (levels out) + MaxPool → QConvMaxPool (pooled accumulators, then the quantizer),
Add + QRelu → AddQRelu, QDecode + Add + QRelu → AddDecodeQRelu, a float QConv + either join → QConvAddQRelu /
QConvAddDecodeQRelu. Bit for bit, including NaN/Inf sums, broadcasting
and the cases the rewrite must leave alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.runtime.helpers import ISAS, conv_maxpool_model, cpu_has, forced_isa, same_bits
from tests.runtime.test_parity import _reference, conv_case
from wqcompile import runtime
from wqcompile.runtime_ops import DOMAIN

pytestmark = pytest.mark.requires_ops_lib

ISA_PARAMS = [pytest.param(i, marks=pytest.mark.skipif(not cpu_has(i), reason=f"CPU lacks {i}")) for i in ISAS]
POOLS = [dict(kernel_shape=[2, 2], strides=[2, 2]),
         dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]),
         dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
         dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
         dict(kernel_shape=[2, 3], strides=[1, 2]),
         dict(kernel_shape=[1, 1], strides=[1, 1]),
         dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="VALID")]
F, U8 = onnx.TensorProto.FLOAT, onnx.TensorProto.UINT8


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                             ir_version=8)


def _run(model, feeds, isa, threads=1, rewrite=True):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    with forced_isa(isa):
        return runtime.InferenceSession(model, so, rewrite=rewrite).run(None, feeds)


def _level_conv_case(seed):
    """A QConv case of test_parity with fused output thresholds whose reference runs."""
    s = seed
    while True:
        case = conv_case(s)
        if case["thresholds"] is not None and not isinstance(_reference(case), Exception):
            return case
        s += 1000


def _fits(shape, pool):
    k, pads = pool["kernel_shape"], pool.get("pads", [0, 0, 0, 0])
    return all(shape[2 + d] + pads[d] + pads[d + 2] >= k[d] for d in range(2))


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(30))
def test_qconv_maxpool(isa, seed, monkeypatch):
    if seed % 3 == 2:   # run_gemm in chunks of one image inside the pooled chunks
        monkeypatch.setenv("WQCOMPILE_IMAGE_CHUNK_BYTES", "1")
    case = _level_conv_case(seed)
    y = _reference(case)
    pools = [p for p in POOLS if _fits(y.shape, p)]
    pool = pools[seed % len(pools)]
    model, feeds = conv_maxpool_model(case, pool, as_inputs=seed % 7 == 3)
    fused, n = runtime.with_qconv_maxpool(model)
    assert n == 1 and [x.op_type for x in fused.graph.node] == ["QConvMaxPool"]
    threads = 1 + seed % 2
    want = _run(model, feeds, isa, threads, rewrite=False)[0]
    got = _run(model, feeds, isa, threads)[0]
    assert got.dtype == np.uint8 and same_bits(got, want), f"{case['attrs']} {pool}: {int((got != want).sum())} differ"


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("batch", [8, 9, 17, 35])
def test_qconv_maxpool_batches(isa, batch, monkeypatch):
    """Batches of ≥ 8 images run one task per chunk of images (conv, pool and quantizer in one thread); every image
    distinct (a permutation of a case's image), chunks that do not divide the batch."""
    if batch == 17:
        monkeypatch.setenv("WQCOMPILE_IMAGE_CHUNK_BYTES", "1")
    case = _level_conv_case(batch)
    rng = np.random.default_rng(batch)
    x0 = case["x"]
    x = np.stack([rng.permuted(x0[i % len(x0)].ravel()).reshape(x0.shape[1:]) for i in range(batch)])
    pool = POOLS[0] if _fits(_reference(case).shape, POOLS[0]) else POOLS[-2]
    model, _ = conv_maxpool_model(case, pool, x=x)
    want = _run(model, {"X": x}, isa, 2, rewrite=False)[0]
    for threads in (1, 2):
        got = _run(model, {"X": x}, isa, threads)[0]
        assert got.shape[0] == batch and same_bits(got, want), f"{threads} threads: {int((got != want).sum())} differ"


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed, batch, pool", [(25, 1, 0), (25, 3, 2), (50, 1, 1), (50, 6, 3), (4, 2, 4), (4, 7, 0)])
def test_qconv_maxpool_bands(isa, seed, batch, pool, monkeypatch):
    """Batches under 8 run one task per band of pooled rows (its conv rows, pool and quantizer in one thread) when the
    pool windows do not overlap: cases with 33-34 output channels and strides / dilations / pads on a 41 x 38 input
    (several bands per image, bands of unequal height), 1 and 2 threads; overlapping and padded windows and a batch
    that run_gemm would cut into one-image chunks (batch 3) keep the per-plane pool."""
    if batch == 3:
        monkeypatch.setenv("WQCOMPILE_IMAGE_CHUNK_BYTES", "1")
    case = _level_conv_case(seed)
    assert case["attrs"]["group"] == 1 and case["attrs"]["w_shape"][0] > 32
    rng = np.random.default_rng(seed)
    x0 = case["x"]
    x = rng.choice(x0.ravel(), size=(batch, x0.shape[1], 41, 38))   # values of the case's own input
    model, _ = conv_maxpool_model(case, POOLS[pool], x=x)
    want = _run(model, {"X": x}, isa, 2, rewrite=False)[0]
    assert want.shape[2] >= 6
    for threads in (1, 2):
        got = _run(model, {"X": x}, isa, threads)[0]
        assert same_bits(got, want), f"{threads} threads: {int((got != want).sum())} differ"


def test_qconv_maxpool_thread_hint():
    """wqcompile.runtime tells the fused kernel the session's intra-op thread count (speed only: the same outputs
    either way, test_qconv_maxpool_bands); a negative count is refused by name."""
    case = _level_conv_case(0)
    model, _ = conv_maxpool_model(case, dict(kernel_shape=[2, 2], strides=[2, 2]))
    fused = runtime.with_qconv_maxpool(model)[0]
    hinted, changed = runtime.with_intra_op_threads(fused, 3)
    assert changed == 1 and {a.name: a.i for a in hinted.graph.node[0].attribute}.get("intra_op_threads") == 3
    assert runtime.with_intra_op_threads(fused, 0) == (fused, 0)
    assert "intra_op_threads" not in {a.name for a in fused.graph.node[0].attribute}   # the input is not modified
    bad = runtime.with_intra_op_threads(fused, 1)[0]
    next(a for a in bad.graph.node[0].attribute if a.name == "intra_op_threads").i = -2
    with pytest.raises(Exception, match="intra_op_threads must be within"):
        _run(bad, {"X": case["x"]}, "baseline", 1, rewrite=False)


def test_qconv_maxpool_left_alone():
    """A second consumer of the levels, a graph output, ceil_mode, dilation or pads ≥ kernel: no fusion."""
    case = _level_conv_case(0)
    names = ["X", "W", "codebook", "x_table", "bias", "thresholds"]
    values = [case["x"], case["W"], case["codebook"], case["x_table"], case["bias"], case["thresholds"]]
    inits = [numpy_helper.from_array(v, n) for n, v in zip(names[1:], values[1:]) if v is not None]
    conv = helper.make_node("QConv", [n if v is not None else "" for n, v in zip(names, values)], ["L"], domain=DOMAIN,
                            **case["attrs"])
    x_in = [helper.make_tensor_value_info("X", helper.np_dtype_to_tensor_dtype(case["x"].dtype), list(case["x"].shape))]
    out = helper.make_tensor_value_info("Y", U8, None)
    for extra in [dict(ceil_mode=1), dict(dilations=[2, 2]), dict(pads=[2, 2, 2, 2]), dict(auto_pad="SAME_UPPER")]:
        mp = helper.make_node("MaxPool", ["L"], ["Y"], **dict(dict(kernel_shape=[2, 2], strides=[2, 2]), **extra))
        assert runtime.with_qconv_maxpool(_model([conv, mp], x_in, [out], inits))[1] == 0, extra
    mp = helper.make_node("MaxPool", ["L"], ["Y"], kernel_shape=[2, 2], strides=[2, 2])
    ident = helper.make_node("Identity", ["L"], ["Z"])
    two = _model([conv, mp, ident], x_in, [out, helper.make_tensor_value_info("Z", U8, None)], inits)
    assert runtime.with_qconv_maxpool(two)[1] == 0
    as_output = _model([conv, mp], x_in, [out, helper.make_tensor_value_info("L", U8, None)], inits)
    assert runtime.with_qconv_maxpool(as_output)[1] == 0


def _thresholds(rng, count):
    kind = int(rng.integers(0, 3))
    if kind == 0:      # WQ-like log-spaced (the packed index)
        t = np.exp2(np.arange(count) * float(rng.choice([1, 2, 4])) / 16 - 6).astype(np.float32)
    elif kind == 1:         # negatives, duplicates, -Inf / +Inf at the ends (the search)
        t = np.sort(rng.choice(np.float32([-3, -1, -0.5, 0, 0.25, 1, 2, 7]), count)).astype(np.float32)
        t[0], t[-1] = -np.inf, np.inf
    else:                   # few (≤ 15: one register)
        t = np.sort(rng.standard_normal(min(count, 15))).astype(np.float32)
    return t


def _specials(rng, x):
    flat = x.reshape(-1)
    picks = rng.integers(0, flat.size, max(1, flat.size // 10))
    flat[picks] = rng.choice(np.float32([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, 3e38]), picks.size)
    return x


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(16))
def test_add_qrelu(isa, seed):
    rng = np.random.default_rng(9700 + seed)
    decode = seed % 2 == 0
    shape = [(2, 8, 9, 11), (1, 3, 40, 40), (3, 1000), (1, 16, 33, 35)][seed % 4]
    shape_b = list(shape)
    if seed % 8 in (5, 7):   # broadcasting in either direction
        shape_b = [1] * (len(shape) - 1) + [shape[-1]] if seed % 8 == 5 else [shape[0], 1] + list(shape[2:])
    a = _specials(rng, (rng.standard_normal(shape) * 4).astype(np.float32))
    t = _thresholds(rng, int(rng.choice([16, 100, 255])))
    inits = [numpy_helper.from_array(t, "T")]
    nodes = []
    if decode:
        size = int(rng.choice([16, 32, 33, 256]))
        table = np.concatenate([[0], np.sort(np.exp2(rng.uniform(-8, 4, size - 1)))]).astype(np.float32)
        lv = rng.integers(0, size, shape_b).astype(np.uint8)
        inits.append(numpy_helper.from_array(table, "D"))
        nodes.append(helper.make_node("QDecode", ["B", "D"], ["Bf"], domain=DOMAIN))
        b_name, b_info, feeds = "Bf", helper.make_tensor_value_info("B", U8, shape_b), {"A": a, "B": lv}
    else:
        b = _specials(rng, (rng.standard_normal(shape_b) * 4).astype(np.float32))
        b_name, b_info, feeds = "B", helper.make_tensor_value_info("B", F, shape_b), {"A": a, "B": b}
    ins = ["A", b_name] if seed % 3 else [b_name, "A"]
    nodes += [helper.make_node("Add", ins, ["S"]), helper.make_node("QRelu", ["S", "T"], ["Y"], domain=DOMAIN)]
    model = _model(nodes, [helper.make_tensor_value_info("A", F, shape), b_info],
                   [helper.make_tensor_value_info("Y", U8, None)], inits)
    fused, n = runtime.with_add_qrelu(model)
    assert n == 1 and [x.op_type for x in fused.graph.node] == ["AddDecodeQRelu" if decode else "AddQRelu"]
    threads = 1 + seed % 2
    want = _run(model, feeds, isa, threads, rewrite=False)[0]
    got = _run(model, feeds, isa, threads)[0]
    assert got.dtype == np.uint8 and same_bits(got, want), f"{int((got != want).sum())} levels differ"


def test_add_qrelu_left_alone_and_level_check():
    """The sum used elsewhere or a QDecode with another reader stays unfused (the QDecode is kept); a level past
    the decode table is an error, as QDecode's."""
    t = numpy_helper.from_array(np.float32([0.5, 1, 2]), "T")
    d = numpy_helper.from_array(np.float32([0, 1, 2]), "D")
    a_in = helper.make_tensor_value_info("A", F, [4])
    b_in = helper.make_tensor_value_info("B", U8, [4])
    y = helper.make_tensor_value_info("Y", U8, None)
    dec = helper.make_node("QDecode", ["B", "D"], ["Bf"], domain=DOMAIN)
    add = helper.make_node("Add", ["A", "Bf"], ["S"])
    q = helper.make_node("QRelu", ["S", "T"], ["Y"], domain=DOMAIN)
    used = _model([dec, add, q], [a_in, b_in], [y, helper.make_tensor_value_info("S", F, None)], [t, d])
    assert runtime.with_add_qrelu(used)[1] == 0
    shared = _model([dec, add, q, helper.make_node("Identity", ["Bf"], ["Z"])], [a_in, b_in],
                    [y, helper.make_tensor_value_info("Z", F, None)], [t, d])
    fused, n = runtime.with_add_qrelu(shared)
    assert n == 1 and [x.op_type for x in fused.graph.node] == ["QDecode", "AddQRelu", "Identity"]
    plain = _model([dec, add, q], [a_in, b_in], [y], [t, d])
    sess = runtime.InferenceSession(plain)
    assert [x.op_type for x in runtime.with_add_qrelu(plain)[0].graph.node] == ["AddDecodeQRelu"]
    with pytest.raises(Exception, match="out of range"):
        sess.run(None, {"A": np.zeros(4, np.float32), "B": np.uint8([0, 1, 3, 2])})


def _join_thresholds(rng, s):
    """QRelu thresholds for sums s: log-spaced up to about the largest sum (the packed / octave index), quantiles of
    the sums with -Inf / +Inf at the ends (the search), or ≤ 15 quantiles (one register)."""
    top = float(np.max(np.abs(s[np.isfinite(s)]), initial=1.0)) or 1.0
    kind = int(rng.integers(0, 3))
    if kind == 0:
        count, step = int(rng.choice([16, 100, 255])), float(rng.choice([1, 2, 4]))
        t = (top * np.exp2((np.arange(count) - count) * step / 16)).astype(np.float32)
    elif kind == 1:
        t = np.sort(np.quantile(s[np.isfinite(s)], rng.uniform(0, 1, int(rng.choice([16, 100]))))).astype(np.float32)
        t[0], t[-1] = -np.inf, np.inf
    else:
        t = np.sort(np.quantile(s[np.isfinite(s)], rng.uniform(0, 1, 15))).astype(np.float32)
    return t


def _float_conv_case(seed, row_scaled=False):
    """A float-output QConv case of test_parity on the GEMM path (not depthwise) whose reference runs."""
    s = seed
    while True:
        case = conv_case(s, row_scaled)
        m, cg = case["attrs"]["w_shape"][:2]
        depthwise = cg == 1 and m == case["attrs"]["group"]
        if not depthwise:
            case["thresholds"] = None
            y = _reference(case)
            if not isinstance(y, Exception):
                return case, y
        s += 1001   # another layout (seed % 5), other operands


def _join_model(rng, case, y, decode, b_shape=None, state_shapes=True):
    """QConv(float out) → Add(A, B) (B float, or QDecode of levels) → QRelu, B a graph input with specials."""
    b_shape = list(y.shape) if b_shape is None else b_shape
    names = ["X", "W", "codebook", "x_table", "bias", "thresholds", "row_scale"]
    values = [case["x"], case["W"], case["codebook"], case["x_table"], case["bias"], None, case.get("row_scale")]
    inits = [numpy_helper.from_array(v, n) for n, v in zip(names[1:], values[1:]) if v is not None]
    used = [n if v is not None else "" for n, v in zip(names, values)]
    while used and not used[-1]:
        used.pop()
    nodes = [helper.make_node("QConv", used, ["A"], domain=DOMAIN, name="conv", **case["attrs"])]
    scale = float(np.std(y)) or 1.0
    if decode:
        size = int(rng.choice([16, 32, 33, 256]))
        table = np.concatenate([[0], np.sort(scale * np.exp2(rng.uniform(-4, 2, size - 1)))]).astype(np.float32)
        lv = rng.integers(0, size, b_shape).astype(np.uint8)
        inits.append(numpy_helper.from_array(table, "D"))
        nodes.append(helper.make_node("QDecode", ["B", "D"], ["Bf"], domain=DOMAIN))
        b_name, b_info, bv, b_vals = "Bf", helper.make_tensor_value_info("B", U8, b_shape), lv, table[lv]
    else:
        bv = _specials(rng, (rng.standard_normal(b_shape) * scale).astype(np.float32))
        b_name, b_info, b_vals = "B", helper.make_tensor_value_info("B", F, b_shape), bv
    if decode and rng.random() < 0.5:   # NaN / Inf sums through the decode table too
        table[-1] = rng.choice(np.float32([np.nan, np.inf, -np.inf]))
        inits[-1] = numpy_helper.from_array(table, "D")
        b_vals = table[bv]
    with np.errstate(invalid="ignore", over="ignore"):
        inits.append(numpy_helper.from_array(_join_thresholds(rng, (y + b_vals).astype(np.float32)), "T"))
    ins = ["A", b_name] if rng.random() < 0.5 else [b_name, "A"]
    nodes += [helper.make_node("Add", ins, ["S"]), helper.make_node("QRelu", ["S", "T"], ["Y"], domain=DOMAIN)]
    x = case["x"]
    graph_inputs = [helper.make_tensor_value_info("X", helper.np_dtype_to_tensor_dtype(x.dtype), list(x.shape)), b_info]
    model = _model(nodes, graph_inputs, [helper.make_tensor_value_info("Y", U8, None)], inits)
    if state_shapes:
        model.graph.value_info.append(helper.make_tensor_value_info("A", F, list(y.shape)))
    return model, {"X": x, "B": bv}


def _fused_join(model, decode):
    fused, n = runtime.with_qconv_add_qrelu(runtime.with_add_qrelu(model)[0])
    assert n == 1 and [x.op_type for x in fused.graph.node] == ["QConvAddDecodeQRelu" if decode else "QConvAddQRelu"]
    return fused


def _fused_and_unfused(rng, case, y, decode, isa, threads):
    """The join model of ``case`` (checked to fuse into one node) run with and without the session rewrite."""
    model, feeds = _join_model(rng, case, y, decode)
    _fused_join(model, decode)
    return _run(model, feeds, isa, threads)[0], _run(model, feeds, isa, threads, rewrite=False)[0]


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("vbmi", [True, False])
@pytest.mark.parametrize("seed", range(24))
def test_qconv_add_qrelu(isa, vbmi, seed, monkeypatch):
    """QConv (float out) + Add + QRelu → QConvAddQRelu / QConvAddDecodeQRelu, bit for bit with the unfused graph:
    dense, grouped and pointwise layers, float or level input (the u8 path), row scales, panels spanning images.
    Odd seeds join on the tile edge whatever B's size (WQCOMPILE_JOIN_MIN_BYTES=0), even ones keep the default
    (these small B: convolution, then the AddQRelu pass)."""
    if seed % 2:
        monkeypatch.setenv("WQCOMPILE_JOIN_MIN_BYTES", "0")
    if not vbmi:
        if isa != "avx512":
            pytest.skip("VBMI only changes the AVX-512 paths")
        monkeypatch.setenv("WQCOMPILE_NO_VBMI", "1")
    rng = np.random.default_rng(9800 + seed)
    case, y = _float_conv_case(seed, row_scaled=seed % 6 == 5)
    decode = seed % 4 < 2
    got, want = _fused_and_unfused(rng, case, y, decode, isa, threads=1 + seed % 2)
    assert got.dtype == np.uint8 and same_bits(got, want), f"{case['attrs']}: {int((got != want).sum())} differ"


def _residual_block_case(rng, n, c, m, hw, levels_in, row_scaled=False, kh=None):
    """A 1x1 (or 3x3) ResNet-like layer big enough for whole 8 × 48 tiles and panels that span images."""
    from tests.runtime.test_parity import random_operands
    kh = int(rng.choice([1, 3])) if kh is None else kh
    ops = random_operands(rng, (m, c, kh, kh), (n, c, hw, hw), c * kh * kh, bits=4, gc=1,
                          kind="level" if levels_in else "float")
    codebook = ops.codebook if levels_in else np.clip(ops.codebook, -128, 127)   # s8 weights: the u8 path can run
    attrs = dict(w_bits=ops.w_bits, w_shape=[m, c, kh, kh], w_shift=ops.w_shift, x_shift=ops.x_shift,
                 x_max=ops.x_max, group=1, strides=[1, 1], pads=[kh // 2] * 4, dilations=[1, 1], auto_pad="NOTSET")
    r = rng.integers(1, 2**22 + 1, m).astype(np.int32) if row_scaled else None
    return dict(op="QConv", x=ops.x, W=ops.packed, codebook=codebook, x_table=ops.x_table, bias=ops.bias,
                thresholds=None, row_scale=r, attrs=attrs)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(10))
def test_qconv_add_qrelu_blocks(isa, seed, monkeypatch):
    """Residual-join shapes: batch 3, 24..72 output channels (8-row tiles and a ragged last one), 7x7 and 5x5
    planes (a 48-column panel spans images), 1 and 2 threads; seeds 8, 9: a B over 2 MiB (the row-tile-major
    order of run_gemm, `streamed`); all on the tile edge (WQCOMPILE_JOIN_MIN_BYTES=0); seeds 1, 2, 5, 6 and 9 one
    image per run_gemm chunk (B and the levels offset per chunk; seed 9 still streamed: decided on the whole batch)."""
    monkeypatch.setenv("WQCOMPILE_JOIN_MIN_BYTES", "0")
    if seed % 4 in (1, 2) or seed == 9:
        monkeypatch.setenv("WQCOMPILE_IMAGE_CHUNK_BYTES", "1")
    rng = np.random.default_rng(9900 + seed)
    if seed >= 8:
        case = _residual_block_case(rng, 8, 8, 72, 63, levels_in=True, row_scaled=seed == 9, kh=1)
    else:
        case = _residual_block_case(rng, 3, int(rng.choice([16, 35])), int(rng.choice([24, 43, 72])),
                                    7 - 2 * (seed % 2), levels_in=seed % 3 != 2, row_scaled=seed % 4 == 3)
    if seed % 2:
        case["codebook"] = np.clip(case["codebook"], -128, 127)   # s8 weights: the u8 path when x_table fits u8
    y = _reference(case)
    assert not isinstance(y, Exception), y
    decode = seed % 2 == 0
    got, want = _fused_and_unfused(rng, case, y, decode, isa, threads=1 + seed % 2)
    assert got.dtype == np.uint8 and same_bits(got, want), f"{int((got != want).sum())} levels differ"


def _conv_model(case):
    """The case's QConv alone (its thresholds, when it has them: levels out; else float)."""
    names = ["X", "W", "codebook", "x_table", "bias", "thresholds", "row_scale"]
    values = [case["x"], case["W"], case["codebook"], case["x_table"], case["bias"], case["thresholds"],
              case.get("row_scale")]
    inits = [numpy_helper.from_array(v, n) for n, v in zip(names[1:], values[1:]) if v is not None]
    used = [n if v is not None else "" for n, v in zip(names, values)]
    while used and not used[-1]:
        used.pop()
    conv = helper.make_node("QConv", used, ["Y"], domain=DOMAIN, name="conv", **case["attrs"])
    x = case["x"]
    out = helper.make_tensor_value_info("Y", U8 if case["thresholds"] is not None else F, None)
    return _model([conv], [helper.make_tensor_value_info("X", helper.np_dtype_to_tensor_dtype(x.dtype), list(x.shape))],
                  [out], inits)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(12))
def test_qconv_row_bands_at_batch_1(isa, seed):
    """One image with 2 threads. A GEMM-path convolution of at least 2 x 8 panels runs one band of output rows per
    thread, each building the input rows it reads (halos included), packing and writing its own rows (seeds 0-7);
    a smaller one with at least 2 row tiles of output channels runs one task per thread over every column and its
    share of the channels, each building the whole image and packing every panel (seeds 8-11: 7x7 to 14x14
    outputs, 24-43 channels, so the shares are unequal and one ends in a ragged tile). 1x1 and 3x3 (padded),
    strides 1 and 2, float and level input (int16 and u8 operands), float and level output; seeds 0-3 and 8-11
    also through a residual join (QConvAddQRelu on the tile edge, against the unfused graph). Against the
    reference and against 1 thread."""
    rng = np.random.default_rng(7700 + seed)
    small = seed >= 8
    if seed < 4 or small:
        stride = 1 + seed % 2
        hw = int(rng.choice([7, 13, 14])) * stride if small else (64 if stride == 2 else 40)
        case = _residual_block_case(rng, 1, int(rng.choice([16, 35])), int(rng.choice([24, 43])), hw,
                                    levels_in=seed % 4 != 1, kh=1 + 2 * (seed % 4 // 2))
        case["attrs"]["strides"] = [stride, stride]
    else:
        case = next(c for c in map(_level_conv_case, range(seed, 10**4, 7)) if c["attrs"]["group"] == 1)
        x0 = case["x"]
        case = dict(case, x=rng.choice(x0.ravel(), size=(1, x0.shape[1], 80, 76)))
    y = _reference(case)
    assert not isinstance(y, Exception), y
    # bands of at least 8 panels, or (small) fewer
    assert y.shape[0] == 1 and (y.shape[2] * y.shape[3] < 2 * 8 * 48) == small, y.shape
    model = _conv_model(case)
    got2, got1 = _run(model, {"X": case["x"]}, isa, 2)[0], _run(model, {"X": case["x"]}, isa, 1)[0]
    assert same_bits(got2, y) and same_bits(got1, y), f"{int((got2 != y).sum())} differ at 2 threads"
    if seed < 4 or small:
        got, want = _fused_and_unfused(rng, case, y, seed % 2 == 0, isa, threads=2)
        assert same_bits(got, want), f"{int((got != want).sum())} levels differ"


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_qconv_add_qrelu_broadcast_fallback(isa):
    """When the graph does not state the shapes, a broadcasting B is fused too and the kernel runs the convolution
    and then the AddQRelu pass: still bit for bit."""
    for seed, decode in [(0, False), (1, True)]:
        rng = np.random.default_rng(9950 + seed)
        case, y = _float_conv_case(seed * 5)
        model, feeds = _join_model(rng, case, y, decode, b_shape=[1, y.shape[1], 1, 1], state_shapes=False)
        _fused_join(model, decode)
        want = _run(model, feeds, isa, rewrite=False)[0]
        got = _run(model, feeds, isa)[0]
        assert got.shape == want.shape and same_bits(got, want)


def test_qconv_add_qrelu_left_alone():
    """Levels out, a depthwise layer, a second reader of A, A as a graph output, stated shapes that broadcast, or
    WQCOMPILE_NO_FUSION: no QConvAddQRelu."""
    rng = np.random.default_rng(9990)
    case, y = _float_conv_case(0)
    model, _ = _join_model(rng, case, y, decode=False)
    two = onnx.ModelProto()
    two.CopyFrom(model)
    two.graph.node.append(helper.make_node("Identity", ["A"], ["Z"]))
    two.graph.output.append(helper.make_tensor_value_info("Z", F, None))
    assert runtime.with_qconv_add_qrelu(runtime.with_add_qrelu(two)[0])[1] == 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.append(helper.make_tensor_value_info("A", F, None))
    assert runtime.with_qconv_add_qrelu(runtime.with_add_qrelu(out)[0])[1] == 0
    bc, _ = _join_model(rng, case, y, decode=False, b_shape=[1, y.shape[1], 1, 1])
    assert runtime.with_qconv_add_qrelu(runtime.with_add_qrelu(bc)[0])[1] == 0
    dw = onnx.ModelProto()
    dw.CopyFrom(model)
    conv = dw.graph.node[0]
    for a in conv.attribute:
        if a.name == "w_shape":
            del a.ints[:]
            a.ints.extend([4, 1, 3, 3])
        if a.name == "group":
            a.i = 4
    assert runtime.with_qconv_add_qrelu(runtime.with_add_qrelu(dw)[0])[1] == 0
    lv = onnx.ModelProto()
    lv.CopyFrom(model)
    lv.graph.node[0].input.extend([""] * (6 - len(lv.graph.node[0].input)))
    lv.graph.node[0].input[5] = "T"
    assert runtime.with_qconv_add_qrelu(runtime.with_add_qrelu(lv)[0])[1] == 0
