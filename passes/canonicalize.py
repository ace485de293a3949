"""CanonicalizePass: name every node, turn Constant nodes into initializers, infer shapes."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from wqcompile.graph import ensure_node_names, export_model, import_graph
from wqcompile.pass_manager import Pass, PassResult

logger = logging.getLogger(__name__)


class CanonicalizePass(Pass):
    """Gives unnamed nodes stable names, folds ``Constant`` nodes into initializers and runs shape inference.

    Every op we do not handle is left as it is.
    """

    kind = "transform"

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        ensure_node_names(graph)
        folded = 0
        for node in list(graph.nodes):
            if node.op == "Constant" and node.domain in (None, "", "ai.onnx") and "value" in node.attrs and len(node.outputs) == 1:
                out = node.outputs[0]
                value = node.attrs["value"]
                values = value.values if isinstance(value, gs.Constant) else np.asarray(value)
                const = gs.Constant(out.name, np.asarray(values))
                for consumer in list(out.outputs):
                    consumer.inputs[:] = [const if t is out else t for t in consumer.inputs]
                graph.outputs = [const if t is out else t for t in graph.outputs]
                node.outputs.clear()
                folded += 1
        graph.cleanup().toposort()
        model = export_model(graph, ctx)
        try:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception as err:  # shape inference is a help, never a requirement
            logger.warning("shape inference failed (%s); continuing without inferred shapes", err)
        new_graph = import_graph(model)
        logger.debug("canonicalize: folded %d Constant nodes", folded)
        return PassResult(new_graph, True)
