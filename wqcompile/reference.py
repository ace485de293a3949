"""Run a compiled model with the numpy reference kernels (the oracle; works without the C++ library).

Example::

    from wqcompile.reference import ReferenceSession
    sess = ReferenceSession("model.wq.onnx")
    (logits,) = sess.run(None, {"input": x})      # same call shape as onnxruntime.InferenceSession.run
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from wqcompile.errors import ModelLoadError
from wqcompile.fast_standard_ops import STANDARD_OPS
from wqcompile.runtime_ops import REFERENCE_OPS, register_schemas


@dataclass(frozen=True)
class NodeArg:
    """Mirrors onnxruntime's ``NodeArg``: name, shape (None for dynamic dims) and type string."""

    name: str
    shape: list[Any]
    type: str


def _args(values: Sequence[onnx.ValueInfoProto], skip: set[str] = frozenset()) -> list[NodeArg]:
    out = []
    for vi in values:
        if vi.name in skip:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        out.append(NodeArg(vi.name, shape, f"tensor({onnx.helper.tensor_dtype_to_string(tt.elem_type).split('.')[-1].lower()})"))
    return out


class ReferenceSession:
    """``onnx.reference.ReferenceEvaluator`` with the ``ai.wqcompile`` ops, behind onnxruntime's session API."""

    def __init__(self, path_or_model: str | os.PathLike | onnx.ModelProto | bytes) -> None:
        register_schemas()
        if isinstance(path_or_model, onnx.ModelProto):
            model = path_or_model
        elif isinstance(path_or_model, bytes):
            model = onnx.load_model_from_string(path_or_model)
        else:
            try:
                model = onnx.load(os.fspath(path_or_model))
            except Exception as err:
                raise ModelLoadError(f"{path_or_model}: cannot load model ({type(err).__name__})") from None
        self.model = model
        self._evaluator = ReferenceEvaluator(model, new_ops=[*REFERENCE_OPS, *STANDARD_OPS])
        inits = {i.name for i in model.graph.initializer}
        self._inputs = _args(model.graph.input, inits)
        self._outputs = _args(model.graph.output)

    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray], run_options: Any = None) -> list[np.ndarray]:
        """Compute ``output_names`` (all outputs if None) for ``input_feed``; returns a list like onnxruntime."""
        names = list(output_names) if output_names else [o.name for o in self._outputs]
        return list(self._evaluator.run(names, dict(input_feed)))

    def run_all(self, input_feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every intermediate result by tensor name (for per-layer comparisons)."""
        return dict(self._evaluator.run(None, dict(input_feed), intermediate=True))
