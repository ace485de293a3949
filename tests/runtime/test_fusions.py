"""The runtime-internal fusions of wqcompile.runtime against the unfused graph on the same library
(``InferenceSession(rewrite=False)``: QConv, QRelu, QDecode kernels with onnxruntime's own MaxPool and Add), on
every instruction-set path: QConv (levels out) + MaxPool → QConvMaxPool (pooled accumulators, then the quantizer),
Add + QRelu → AddQRelu, QDecode + Add + QRelu → AddDecodeQRelu. Bit for bit, including NaN/Inf sums, broadcasting
and the cases the rewrite must leave alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.runtime.helpers import ISAS, cpu_has, forced_isa, same_bits
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
def test_qconv_maxpool(isa, seed):
    case = _level_conv_case(seed)
    y = _reference(case)
    pools = [p for p in POOLS if _fits(y.shape, p)]
    pool = pools[seed % len(pools)]
    as_inputs = seed % 7 == 3
    names = ["X", "W", "codebook", "x_table", "bias", "thresholds"]
    values = [case["x"], case["W"], case["codebook"], case["x_table"], case["bias"], case["thresholds"]]
    inits = [numpy_helper.from_array(v, n) for n, v in zip(names[1:], values[1:]) if v is not None and not as_inputs]
    graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
                    for i, (n, v) in enumerate(zip(names, values)) if v is not None and (i == 0 or as_inputs)]
    conv = helper.make_node("QConv", [n if v is not None else "" for n, v in zip(names, values)], ["L"], domain=DOMAIN,
                            name="conv", **case["attrs"])
    mp = helper.make_node("MaxPool", ["L"], ["Y"], name="pool", **pool)
    model = _model([conv, mp], graph_inputs, [helper.make_tensor_value_info("Y", U8, None)], inits)
    fused, n = runtime.with_qconv_maxpool(model)
    assert n == 1 and [x.op_type for x in fused.graph.node] == ["QConvMaxPool"]
    feeds = {n: v for n, v in zip(names, values) if v is not None and (n == "X" or as_inputs)}
    threads = 1 + seed % 2
    want = _run(model, feeds, isa, threads, rewrite=False)[0]
    got = _run(model, feeds, isa, threads)[0]
    assert got.dtype == np.uint8 and same_bits(got, want), f"{case['attrs']} {pool}: {int((got != want).sum())} differ"


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
