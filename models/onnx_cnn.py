"""Builds the small Conv-Relu-MaxPool / Gemm CNNs of ``models/`` as ONNX with ``onnx.helper``.

Both the ccexam MNIST network and our Fashion-MNIST network have this shape:
``[Conv(k x k, pad k//2) -> Relu -> MaxPool(2x2)] * n -> Flatten -> [Gemm -> Relu] * m -> Gemm``.
Weights are numpy arrays in torch layout (Conv ``[O, I, kH, kW]``, Linear ``[out, in]``, so Gemm
uses ``transB=1``). The output is byte-for-byte deterministic for the same weights and strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["OPSET", "IR_VERSION", "PRODUCER", "build_cnn", "save_model"]

OPSET = 17
IR_VERSION = 8  # onnx 1.23 writes IR 14 by default; onnxruntime 1.31 rejects IR > 13
PRODUCER = "wqcompile-models"

Layer = tuple[np.ndarray, np.ndarray]


def _check_layers(convs: Sequence[Layer], fcs: Sequence[Layer], input_shape: tuple[int, int, int]) -> None:
    """Raises ValueError if consecutive layer shapes do not chain."""
    channels, h, w = input_shape
    for i, (weight, bias) in enumerate(convs, 1):
        if weight.ndim != 4 or weight.shape[1] != channels or bias.shape != (weight.shape[0],):
            raise ValueError(f"conv{i}: weight {weight.shape} / bias {bias.shape} do not take {channels} channels")
        if weight.shape[2] % 2 == 0 or weight.shape[2] != weight.shape[3]:
            raise ValueError(f"conv{i}: only odd square kernels are supported, got {weight.shape[2:]}")
        channels, h, w = weight.shape[0], h // 2, w // 2
    features = channels * h * w
    for i, (weight, bias) in enumerate(fcs, 1):
        if weight.ndim != 2 or weight.shape[1] != features or bias.shape != (weight.shape[0],):
            raise ValueError(f"fc{i}: weight {weight.shape} / bias {bias.shape} do not take {features} features")
        features = weight.shape[0]


def build_cnn(
    convs: Sequence[Layer],
    fcs: Sequence[Layer],
    *,
    graph_name: str,
    doc_string: str = "",
    input_shape: tuple[int, int, int] = (1, 28, 28),
) -> onnx.ModelProto:
    """Returns the checked ONNX model (opset 17, IR 8) for the given conv and fully connected layers.

    Args:
        convs: ``(weight [O, I, k, k], bias [O])`` per conv block (Conv, Relu, MaxPool 2x2).
        fcs: ``(weight [out, in], bias [out])`` per Gemm; all but the last are followed by Relu.
        graph_name: the ONNX graph name.
        doc_string: provenance text stored as the model's ``doc_string``.
        input_shape: ``(C, H, W)`` of one sample; the batch dimension is symbolic ``N``.

    Returns:
        A model with input ``input`` float32 [N, C, H, W] and output ``logits`` float32 [N, classes].
    """
    _check_layers(convs, fcs, input_shape)
    nodes, inits = [], []
    x = "input"
    for i, (weight, bias) in enumerate(convs, 1):
        pad = weight.shape[2] // 2
        inits += [numpy_helper.from_array(weight.astype(np.float32), f"conv{i}.weight"),
                  numpy_helper.from_array(bias.astype(np.float32), f"conv{i}.bias")]
        nodes += [
            helper.make_node("Conv", [x, f"conv{i}.weight", f"conv{i}.bias"], [f"conv{i}"], name=f"conv{i}",
                             kernel_shape=list(weight.shape[2:]), pads=[pad] * 4, strides=[1, 1]),
            helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"),
            helper.make_node("MaxPool", [f"relu{i}"], [f"pool{i}"], name=f"pool{i}",
                             kernel_shape=[2, 2], strides=[2, 2]),
        ]
        x = f"pool{i}"
    nodes.append(helper.make_node("Flatten", [x], ["flatten"], name="flatten", axis=1))
    x = "flatten"
    for i, (weight, bias) in enumerate(fcs, 1):
        last = i == len(fcs)
        out = "logits" if last else f"fc{i}"
        inits += [numpy_helper.from_array(weight.astype(np.float32), f"fc{i}.weight"),
                  numpy_helper.from_array(bias.astype(np.float32), f"fc{i}.bias")]
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [out], name=f"fc{i}",
                                      transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"fc{i}_relu"], name=f"fc{i}_relu"))
            x = f"fc{i}_relu"
    classes = fcs[-1][0].shape[0]
    graph = helper.make_graph(
        nodes, graph_name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER, doc_string=doc_string)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    """Writes ``model`` to ``path`` (creating parent directories) and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path
