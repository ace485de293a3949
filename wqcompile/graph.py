"""Small helpers over onnx-graphsurgeon: import/export, constants, producers and consumers, checking."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from wqcompile.errors import PostconditionError

if TYPE_CHECKING:
    from wqcompile.context import CompileContext

logger = logging.getLogger(__name__)

# onnxruntime 1.17+ reads IR ≤ 9 everywhere; 1.31 rejects IR > 13 (assets.md). We never raise a model's IR version
# above what it had, and write at most this.
MAX_IR_VERSION = 10


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    return gs.import_onnx(model)


def export_model(graph: gs.Graph, ctx: "CompileContext | None" = None) -> onnx.ModelProto:
    """Export a graph, adding our domain's opset import when our ops are present."""
    from wqcompile.runtime_ops import DOMAIN, OPSET

    uses_ours = any(n.domain == DOMAIN for n in graph.nodes)
    if uses_ours:
        graph.import_domains = [d for d in (graph.import_domains or []) if d.domain != DOMAIN]
        graph.import_domains.append(onnx.helper.make_opsetid(DOMAIN, OPSET))
    model = gs.export_onnx(graph, do_type_check=False)
    source = ctx.source_model if ctx is not None else None
    if source is not None:
        model.ir_version = min(source.ir_version, MAX_IR_VERSION) if source.ir_version else MAX_IR_VERSION
        model.producer_name = source.producer_name
        model.producer_version = source.producer_version
        model.doc_string = source.doc_string
        model.model_version = source.model_version
        del model.metadata_props[:]
        model.metadata_props.extend(source.metadata_props)
    else:
        model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    return model


def check_graph(graph_or_model: gs.Graph | onnx.ModelProto, *, what: str = "the graph") -> None:
    """``onnx.checker`` with our op schemas registered; raises PostconditionError naming ``what``."""
    from wqcompile.runtime_ops import register_schemas

    register_schemas()
    model = graph_or_model if isinstance(graph_or_model, onnx.ModelProto) else export_model(graph_or_model)
    try:
        onnx.checker.check_model(model, check_custom_domain=True)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PostconditionError(f"{what} fails onnx.checker: {first}") from err


def constant_value(tensor: gs.Tensor | None) -> np.ndarray | None:
    """The value of a constant tensor (initializer), or None if it is computed at run time."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    return None


def producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def consumers(tensor: gs.Tensor) -> list[gs.Node]:
    return list(tensor.outputs)


def is_graph_output(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(t is tensor for t in graph.outputs)


def node_label(node: gs.Node) -> str:
    """How errors and reports name a node: its name, or its op type and first output when unnamed."""
    if node.name:
        return node.name
    out = node.outputs[0].name if node.outputs else "?"
    return f"{node.op}->{out}"


def ensure_node_names(graph: gs.Graph) -> None:
    """Give every unnamed node a stable, unique name so reports, overrides and errors can refer to it."""
    taken = {n.name for n in graph.nodes if n.name}
    for node in graph.nodes:
        if node.name:
            continue
        base = f"{node.op}_{node.outputs[0].name}" if node.outputs else node.op
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        node.name = name
        taken.add(name)
