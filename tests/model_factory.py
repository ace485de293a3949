"""Small deterministic ONNX models built with onnx.helper for tests (IR version set explicitly for onnxruntime)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8


def _init(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def make_model(nodes, inputs, outputs, initializers, opset: int = 17, ir_version: int = IR_VERSION) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="wqcompile-tests")
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def tiny_cnn(seed: int = 0, *, clip: bool = False, opset: int = 17) -> onnx.ModelProto:
    """Conv-Relu-MaxPool-Conv(group 2)-Relu(or Clip 0..6)-Flatten-Gemm-Relu-Gemm on [N, 3, 12, 12]."""
    rng = np.random.default_rng(seed)
    f = lambda *s: (rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:]))).astype(np.float32)  # noqa: E731
    inits = [
        _init("w1", f(8, 3, 3, 3)), _init("b1", rng.standard_normal(8).astype(np.float32) * 0.1),
        _init("w2", f(8, 4, 3, 3)), _init("b2", rng.standard_normal(8).astype(np.float32) * 0.1),
        _init("w3", f(32, 8 * 6 * 6).T.copy()), _init("b3", rng.standard_normal(32).astype(np.float32) * 0.1),
        _init("w4", f(10, 32)), _init("b4", np.zeros(10, np.float32)),
    ]
    act2 = [helper.make_node("Relu", ["c2"], ["r2"], name="relu2")]
    if clip:
        inits += [_init("zero", np.array(0, np.float32)), _init("six", np.array(6, np.float32))]
        act2 = [helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], name="clip2")]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], group=2),
        *act2,
        helper.make_node("Flatten", ["r2"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["g3"], name="fc1"),
        helper.make_node("Relu", ["g3"], ["r3"], name="relu3"),
        helper.make_node("Gemm", ["r3", "w4", "b4"], ["logits"], name="fc2", transB=1),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits, opset=opset,
    )


def calib_data(n: int = 64, seed: int = 1, shape=(3, 12, 12), name: str = "input") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((n, *shape)).astype(np.float32)}


def residual_cnn(seed: int = 0) -> onnx.ModelProto:
    """A MobileNetV2-like float residual stream on [N, 3, 12, 12]: conv0 (no activation) → expand (1x1, Clip 0..6)
    → project (1x1) → Add(conv0) → expand2 (1x1, Relu) → GlobalAveragePool → Flatten → Gemm. ``expand`` and
    ``expand2`` read float tensors computed by weight layers; ``conv0`` reads the model's input."""
    rng = np.random.default_rng(seed)
    f = lambda *s: (rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:]))).astype(np.float32)  # noqa: E731
    b = lambda n: (rng.standard_normal(n) * 0.1).astype(np.float32)  # noqa: E731
    inits = [
        _init("w0", f(8, 3, 3, 3)), _init("b0", b(8)), _init("we", f(16, 8, 1, 1)), _init("be", b(16)),
        _init("wp", f(8, 16, 1, 1)), _init("bp", b(8)), _init("we2", f(16, 8, 1, 1)), _init("be2", b(16)),
        _init("wfc", f(10, 16)), _init("bfc", np.zeros(10, np.float32)),
        _init("zero", np.array(0, np.float32)), _init("six", np.array(6, np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["y0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["y0", "we", "be"], ["e"], name="expand"),
        helper.make_node("Clip", ["e", "zero", "six"], ["e6"], name="clip"),
        helper.make_node("Conv", ["e6", "wp", "bp"], ["p"], name="project"),
        helper.make_node("Add", ["p", "y0"], ["r"], name="add"),
        helper.make_node("Conv", ["r", "we2", "be2"], ["e2"], name="expand2"),
        helper.make_node("Relu", ["e2"], ["e2r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["e2r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wfc", "bfc"], ["logits"], name="fc", transB=1),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
