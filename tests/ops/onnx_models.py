"""One-node ``ai.wqcompile`` models for the op tests, and a runner on the numpy reference kernels."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

import wqcompile.runtime_ops as runtime_ops

try:
    from wqcompile.reference import ReferenceSession
except ImportError:                      # the session wrapper is optional for these tests
    ReferenceSession = None

_ELEM = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.uint8): onnx.TensorProto.UINT8}


def one_node_model(op_type: str, node_name: str, x: np.ndarray, others: list[tuple[str, np.ndarray | None]],
                   attrs: dict, out_dtype, out_shape) -> onnx.ModelProto:
    """``Y = op(X, *others)``: X is the graph input, the others are initializers; ``None`` → omitted input ("")."""
    names, inits = ["X"], []
    for name, value in others:
        if value is None:
            names.append("")
        else:
            names.append(name)
            inits.append(numpy_helper.from_array(value, name))
    while names and names[-1] == "":
        names.pop()
    node = helper.make_node(op_type, names, ["Y"], domain=runtime_ops.DOMAIN, name=node_name, **attrs)
    graph = helper.make_graph(
        [node], f"{op_type}_test",
        [helper.make_tensor_value_info("X", _ELEM[np.dtype(x.dtype)], list(x.shape))],
        [helper.make_tensor_value_info("Y", _ELEM[np.dtype(out_dtype)], list(out_shape))],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(runtime_ops.DOMAIN, 1)],
                             ir_version=8)


def check_and_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Run onnx's checker against the registered schemas, then the model on the reference kernels."""
    runtime_ops.register_schemas()
    onnx.checker.check_model(model, check_custom_domain=True)
    if ReferenceSession is not None:
        (y,) = ReferenceSession(model).run(None, {"X": x})
    else:
        from onnx.reference import ReferenceEvaluator
        (y,) = ReferenceEvaluator(model, new_ops=list(runtime_ops.REFERENCE_OPS)).run(None, {"X": x})
    return y
