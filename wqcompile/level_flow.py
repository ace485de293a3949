"""Which tensors will travel as uint8 level indices after the rewrite, and with which quantizer.

Quantized Relu / Clip outputs are level tensors; so is the output of a pass-through op (``MaxPool``, ``Flatten``,
``Reshape``, ...) whose data input is one, because the quantizer is monotone (max commutes with it) and the others
only move elements. The rewrite and the analyses that must predict it (bias correction) share this one answer.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

# op → first default-domain opset in which onnxruntime runs it on uint8 tensors
LEVEL_PASSTHROUGH = {"MaxPool": 12, "Flatten": 9, "Reshape": 5, "Transpose": 1, "Squeeze": 1, "Unsqueeze": 1, "Identity": 1}


def passes_levels(node: gs.Node, graph: gs.Graph, level_inputs) -> bool:
    """True when ``node`` can run on the level tensor feeding its first input."""
    outputs = {t.name for t in graph.outputs}
    return (node.op in LEVEL_PASSTHROUGH and node.domain in (None, "", "ai.onnx") and bool(node.inputs)
            and node.inputs[0].name in level_inputs and (graph.opset or 13) >= LEVEL_PASSTHROUGH[node.op]
            and all(not t.outputs and t.name not in outputs for t in node.outputs[1:]))


def level_tensors(graph: gs.Graph, ctx) -> dict[str, object]:
    """Tensor name → the ActQuantizer of every tensor that will be carried as levels (graph in topological order)."""
    by_node = {a.node: a for a in ctx.act_layers.values()}
    levels: dict[str, object] = {}
    for node in graph.nodes:
        if node.name in by_node:
            act = by_node[node.name]
            levels[act.output] = ctx.activations[act.output]
        elif passes_levels(node, graph, levels):
            levels[node.outputs[0].name] = levels[node.inputs[0].name]
    return levels
