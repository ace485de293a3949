"""FitActivationsPass: (fsr, step) per quantized activation tensor from its log2 histogram (wq-algorithm.md §3)."""

from __future__ import annotations

import logging

import onnx_graphsurgeon as gs

from wqcompile.errors import PreconditionError
from wqcompile.pass_manager import Pass, PassResult
from wqcompile.quant import ACT_QUANTIZERS

logger = logging.getLogger(__name__)


class FitActivationsPass(Pass):
    """Fills ``ctx.activations`` with one :class:`ActQuantizer` per quantized Relu / Clip output."""

    kind = "analysis"

    def requires(self, graph, ctx) -> None:
        missing = [a.output for a in ctx.act_layers.values() if a.output not in ctx.stats]
        if missing:
            raise PreconditionError(f"FitActivationsPass needs histograms of {missing[:3]}: run CalibratePass first")

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        cfg = ctx.config
        fit = ACT_QUANTIZERS[cfg.act_quantizer]
        ctx.activations.clear()
        for layer in ctx.act_layers.values():
            ctx.activations[layer.output] = fit(ctx.stats[layer.output], 2**layer.bits, mode=cfg.act_search, name=layer.output)
        return PassResult(graph, False)
