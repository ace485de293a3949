"""SelectLayersPass: choose the weight layers and activation tensors to quantize, with their bit widths."""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from wqcompile.context import ActLayer, WeightLayer
from wqcompile.errors import QuantizationError
from wqcompile.graph import constant_value
from wqcompile.layers import WEIGHT_OPS, Skip, linear_layer, node_kinds, relu_like
from wqcompile.pass_manager import Pass, PassResult

logger = logging.getLogger(__name__)


def check_finite_parameters(node: gs.Node) -> None:
    """NaN/Inf in a layer's constant weight or bias is an error naming the node and the tensor."""
    for tensor in node.inputs[1:]:
        value = constant_value(tensor)
        if value is not None and np.issubdtype(value.dtype, np.floating):
            with np.errstate(invalid="ignore"):
                finite = np.isfinite(value).all()
            if not finite:
                raise QuantizationError(f"{node.op} {node.name!r}: tensor {tensor.name!r} contains NaN or Inf")


class SelectLayersPass(Pass):
    """Fills ``ctx.weight_layers`` and ``ctx.act_layers``; records why any candidate was skipped."""

    kind = "analysis"

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        cfg = ctx.config
        ctx.weight_layers.clear()
        ctx.act_layers.clear()
        for node in graph.nodes:
            if node.op in WEIGHT_OPS and node.domain in (None, "", "ai.onnx"):
                check_finite_parameters(node)          # every weight layer, quantized or not
                kinds = node_kinds(node)
                if cfg.is_excluded(node.name, node.op, kinds):
                    ctx.skipped[node.name] = "excluded by the configuration"
                    continue
                bits = cfg.weight_bits_for(node.name, node.op, kinds)
                if bits is None:
                    ctx.skipped[node.name] = "weights kept in full precision"
                    continue
                layer = linear_layer(node)
                if isinstance(layer, Skip):
                    ctx.skipped[node.name] = layer.reason
                    continue
                ctx.weight_layers[node.name] = WeightLayer(node.name, node.op, node.inputs[1].name, node.inputs[0].name, bits,
                                                           cfg.granularity_for(node.name, node.op, kinds))
            elif node.op in ("Relu", "Clip") and node.domain in (None, "", "ai.onnx"):
                clip = relu_like(node)
                if isinstance(clip, Skip):
                    ctx.skipped[node.name] = clip.reason
                    continue
                kinds = node_kinds(node)
                if cfg.is_excluded(node.name, node.op, kinds):
                    ctx.skipped[node.name] = "excluded by the configuration"
                    continue
                bits = cfg.act_bits_for(node.name, node.op, kinds)
                if bits is None:
                    ctx.skipped[node.name] = "activations kept in full precision"
                    continue
                ctx.act_layers[node.name] = ActLayer(node.name, node.outputs[0].name, node.inputs[0].name, bits, clip)
        logger.info("selected %d weight layers and %d activation layers", len(ctx.weight_layers), len(ctx.act_layers))
        return PassResult(graph, False)
