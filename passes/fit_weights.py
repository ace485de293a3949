"""FitWeightsPass: one codebook per weight tensor (or per output channel) with the configured quantizer."""

from __future__ import annotations

import logging
import sys

import onnx_graphsurgeon as gs
from tqdm import tqdm

from wqcompile.context import FittedWeights
from wqcompile.errors import PreconditionError, QuantizationError
from wqcompile.layers import linear_layer
from wqcompile.pass_manager import Pass, PassResult
from wqcompile.quant import WEIGHT_QUANTIZERS

logger = logging.getLogger(__name__)


class FitWeightsPass(Pass):
    """Fills ``ctx.weights``: weighted-entropy codebooks by default (wq-algorithm.md §2), or a baseline."""

    kind = "analysis"

    def requires(self, graph, ctx) -> None:
        if "SelectLayersPass" not in ctx.passes_run:
            raise PreconditionError("FitWeightsPass needs the layers chosen: run SelectLayersPass first")

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        cfg = ctx.config
        fit = WEIGHT_QUANTIZERS[cfg.weight_quantizer]
        nodes = {n.name: n for n in graph.nodes}
        ctx.weights.clear()
        bar = tqdm(ctx.weight_layers.values(), desc="fit weights", unit="layer", disable=not cfg.progress,
                   file=sys.stderr, leave=False)
        for layer in bar:
            if layer.granularity == "channel-scaled":
                continue                                  # ScaleCodebooksPass fits these
            matrix = linear_layer(nodes[layer.node]).matrix
            rows = [matrix] if layer.granularity == "tensor" else list(matrix)
            try:
                codebooks = [fit(r, 2**layer.bits, mode=cfg.weight_mode, search=cfg.weight_search, name=layer.weight)
                             for r in rows]
            except ValueError as err:
                raise QuantizationError(f"{layer.op_type} {layer.node!r}: {err}") from None
            ctx.weights[layer.node] = FittedWeights(codebooks, layer.bits, matrix)
        bar.close()
        return PassResult(graph, False)
