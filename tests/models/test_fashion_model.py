"""The shipped Fashion-MNIST model and calibration file are valid and as accurate as recorded."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import datasets
from models.evaluate import accuracy, make_runner
from models.fashion_mnist.calib import load_calib

HERE = Path(datasets.__file__).resolve().parent / "fashion_mnist"
MODEL = HERE / "fashion_cnn.onnx"
CALIB = HERE / "calib.npz"


def _recorded_accuracy(model: onnx.ModelProto) -> float:
    """Reads the ``test_accuracy: 0.xxxx`` line that train.py writes into the doc_string."""
    match = re.search(r"^test_accuracy: ([0-9.]+)", model.doc_string, re.MULTILINE)
    assert match, f"no test_accuracy line in the doc_string of {MODEL}"
    return float(match.group(1))


def test_model_is_valid_and_small():
    assert MODEL.stat().st_size < 1_000_000
    model = onnx.load(MODEL)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8 and model.producer_name == "wqcompile-models"
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert "seed: 20261122" in model.doc_string and "train split" in model.doc_string
    weights = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.name.endswith("weight"))
    biases = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.name.endswith("bias"))
    assert biases < 0.01 * weights  # weight packing must dominate the file size


def test_accuracy_matches_doc_string():
    if not (datasets.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
    recorded = _recorded_accuracy(onnx.load(MODEL))
    x, y = datasets.load_fashion_mnist("test")
    acc = accuracy(make_runner(MODEL, "ort"), datasets.fashion_normalize(x), y)
    assert abs(acc - recorded) <= 0.005
    assert acc >= 0.89


def test_calibration_file():
    calib = load_calib(CALIB)
    assert list(calib) == ["input"]
    x = calib["input"]
    assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == (1, 28, 28)
    assert x.shape[0] >= 256
    # Normalised pixels: 0 and 255 map to -0.81 and 2.02.
    assert -0.82 < x.min() < -0.80 and 2.0 < x.max() < 2.03


def test_calibration_samples_come_from_train_split():
    if not (datasets.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
    from models.fashion_mnist.calib import draw_calib
    from models.fashion_mnist.train import SEED

    x = load_calib(CALIB)["input"]
    expected, idx = draw_calib(len(x), SEED)
    np.testing.assert_array_equal(x, expected)
    assert len(np.unique(idx)) == len(x)
