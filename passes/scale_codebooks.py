"""ScaleCodebooksPass: per-channel scaling of one shared codebook (``--weight-granularity channel-scaled``).

Each output channel ``o`` is normalised by its RMS ``s_o``; ONE codebook is fitted (with the configured quantizer) on
the pooled normalised weights, and channel ``o`` uses ``s_o · shared``. The contract already stores one codebook per
output channel (``[M, 2^b]``, docs/op-contract.md), so this needs no new op: it is the per-channel codebook with the
degrees of freedom of a per-tensor one plus one scale per channel. It is meant for depthwise layers (9 weights per
channel), where a per-tensor codebook collapses on channels of small range and a per-channel one overfits 9 values.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from wqcompile.context import FittedWeights
from wqcompile.errors import PreconditionError, QuantizationError
from wqcompile.pass_manager import Pass, PassResult
from wqcompile.quant import WEIGHT_QUANTIZERS, WeightCodebook

logger = logging.getLogger(__name__)


def scaled_codebooks(matrix: np.ndarray, bits: int, fit, **options) -> list[WeightCodebook]:
    """One codebook per row of ``matrix``: ``s_o · c`` with ``c`` fitted on the rows divided by their RMS ``s_o``."""
    scale = np.sqrt(np.mean(matrix**2, axis=1))
    scale = np.where(scale > 0, scale, 1.0)
    shared = fit((matrix / scale[:, None]).ravel(), 2**bits, **options)
    idx = np.asarray(shared.indices).reshape(matrix.shape)
    out = []
    for o, s in enumerate(scale):
        info = dict(shared.info, shared_scale=float(s))
        edges = None if shared.edges is None else s * np.asarray(shared.edges)
        out.append(WeightCodebook(values=s * np.asarray(shared.values), indices=idx[o], method=shared.method,
                                  info=info, edges=edges, strict=shared.strict))
    return out


class ScaleCodebooksPass(Pass):
    """Replaces ``ctx.weights`` by scaled shared codebooks when ``weight_granularity == "channel-scaled"``."""

    kind = "analysis"

    def requires(self, graph, ctx) -> None:
        if "FitWeightsPass" not in ctx.passes_run:
            raise PreconditionError("ScaleCodebooksPass runs after FitWeightsPass")

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        cfg = ctx.config
        if cfg.weight_granularity != "channel-scaled":
            return PassResult(graph, False)
        fit = WEIGHT_QUANTIZERS[cfg.weight_quantizer]
        for name, fitted in ctx.weights.items():
            try:
                cbs = scaled_codebooks(fitted.matrix, fitted.bits, fit, mode=cfg.weight_mode, search=cfg.weight_search,
                                       name=ctx.weight_layers[name].weight)
            except ValueError as err:
                raise QuantizationError(f"{ctx.weight_layers[name].op_type} {name!r}: {err}") from None
            ctx.weights[name] = FittedWeights(cbs, fitted.bits, fitted.matrix)
        return PassResult(graph, False)
