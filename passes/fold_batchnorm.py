"""FoldBatchNormPass: Conv → BatchNormalization with constant statistics becomes one Conv."""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from wqcompile.graph import constant_value
from wqcompile.pass_manager import Pass, PassResult

logger = logging.getLogger(__name__)


class FoldBatchNormPass(Pass):
    """Replaces ``BatchNormalization(Conv(x, W, b))`` by ``Conv(x, W·s, (b-μ)·s+β)``, ``s = γ/√(σ²+ε)``."""

    kind = "transform"

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        folded = 0
        for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
            conv_out = bn.inputs[0]
            conv = conv_out.inputs[0] if conv_out.inputs else None
            if conv is None or conv.op != "Conv" or len(conv_out.outputs) != 1 or len(bn.outputs) != 1:
                continue
            if conv_out in graph.outputs:
                continue
            params = [constant_value(t) for t in bn.inputs[1:5]]
            weight = constant_value(conv.inputs[1])
            bias = constant_value(conv.inputs[2]) if len(conv.inputs) > 2 else None
            if weight is None or any(p is None for p in params) or (len(conv.inputs) > 2 and bias is None):
                logger.debug("FoldBatchNorm: %s skipped: parameters are not constant", bn.name)
                continue
            gamma, beta, mean, var = (p.astype(np.float64) for p in params)
            eps = float(bn.attrs.get("epsilon", 1e-5))
            scale = gamma / np.sqrt(var + eps)
            b = bias.astype(np.float64) if bias is not None else np.zeros_like(mean)
            new_w = (weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))).astype(weight.dtype)
            new_b = ((b - mean) * scale + beta).astype(weight.dtype)
            conv.inputs[1] = gs.Constant(f"{conv.name}.W_bnfold", new_w)
            b_const = gs.Constant(f"{conv.name}.B_bnfold", new_b)
            if len(conv.inputs) > 2:
                conv.inputs[2] = b_const
            else:
                conv.inputs.append(b_const)
            # the Conv now produces what the BN produced
            out = bn.outputs[0]
            bn.outputs.clear()
            bn.inputs.clear()
            conv.outputs[0] = out
            folded += 1
        if folded:
            graph.cleanup().toposort()
        logger.info("folded %d BatchNormalization nodes into Conv", folded)
        return PassResult(graph, folded > 0)
