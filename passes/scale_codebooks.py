"""ScaleCodebooksPass: per-channel scaling of one shared codebook (``--weight-granularity channel-scaled``).

Each output channel ``o`` is normalised by its RMS ``s_o``; ONE codebook ``c`` is fitted (with the configured
quantizer) on the pooled normalised weights, and channel ``o`` runs ``s_o · c[idx_o]``. The op stores it as one shared
codebook plus an int32 ``row_scale`` per channel (docs/op-contract.md §2.1): about 4 bytes per channel, against
``2^b`` mantissas and ``L - 1`` thresholds per channel for per-channel codebooks, because the output thresholds stay
shared. It is meant for depthwise layers (9 weights per channel), where a per-tensor codebook collapses on channels of
small range and a per-channel one overfits 9 values, and for per-channel ranges in general (like per-channel INT8).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from wqcompile.context import FittedWeights
from wqcompile.errors import PreconditionError, QuantizationError
from wqcompile.layers import linear_layer
from wqcompile.pass_manager import Pass, PassResult
from wqcompile.quant import WEIGHT_QUANTIZERS

def scaled_codebook(matrix: np.ndarray, bits: int, fit, **options) -> FittedWeights:
    """``s_o · c``: one codebook ``c`` fitted on the rows of ``matrix`` divided by their RMS ``s_o``."""
    scale = np.sqrt(np.mean(np.asarray(matrix, dtype=np.float64) ** 2, axis=1))
    norm = np.where(scale > 0, scale, 1.0)
    shared = fit((matrix / norm[:, None]).ravel(), 2**bits, **options)
    return FittedWeights([shared], bits, matrix, row_scale=scale)


class ScaleCodebooksPass(Pass):
    """Fits ``ctx.weights`` of the layers whose granularity is ``channel-scaled`` (``--weight-granularity`` or an
    override such as ``@depthwise=granularity:channel-scaled``); FitWeightsPass fits the others."""

    kind = "analysis"

    def requires(self, graph, ctx) -> None:
        if "FitWeightsPass" not in ctx.passes_run:
            raise PreconditionError("ScaleCodebooksPass runs after FitWeightsPass")

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        cfg = ctx.config
        fit = WEIGHT_QUANTIZERS[cfg.weight_quantizer]
        nodes = {n.name: n for n in graph.nodes}
        for name, layer in ctx.weight_layers.items():
            if layer.granularity != "channel-scaled":
                continue
            try:
                ctx.weights[name] = scaled_codebook(linear_layer(nodes[name]).matrix, layer.bits, fit,
                                                    mode=cfg.weight_mode, search=cfg.weight_search, name=layer.weight)
            except ValueError as err:
                raise QuantizationError(f"{layer.op_type} {name!r}: {err}") from None
        return PassResult(graph, False)
