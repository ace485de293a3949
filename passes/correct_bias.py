"""CorrectBiasPass: remove the mean output shift that quantization causes, measured on calibration data.

For a layer ``y = W·x + b`` that will run as ``Ŵ·q(x) + b'``, the mean output shift per output channel is
``W·E[x] - Ŵ·E[q(x)]`` (first order, on the FP32 model's inputs: Nagel et al.'s empirical bias correction, extended to
the input's activation quantizer). ``b' = b + shift`` makes the compiled layer right on average. Per-channel input
means are streamed over the calibration data (memory: two vectors per layer). Conv taps share their channel's mean
(zero padding at the borders is ignored, as usual).
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import onnx_graphsurgeon as gs
from tqdm import tqdm

from wqcompile.calib.observers import ChannelMeanObserver
from wqcompile.calib.readers import open_calibration
from wqcompile.errors import PreconditionError
from wqcompile.graph import export_model
from wqcompile.layers import linear_layer
from wqcompile.level_flow import level_tensors
from wqcompile.pass_manager import Pass, PassResult
from wqcompile.passes.calibrate import augmented_session

logger = logging.getLogger(__name__)


def dequantized_weights(fitted) -> np.ndarray:
    m, k = fitted.matrix.shape
    if fitted.row_scale is not None:
        return fitted.codebooks[0].dequantize().reshape(m, k) * np.asarray(fitted.row_scale, dtype=np.float64)[:, None]
    if len(fitted.codebooks) == 1:
        return fitted.codebooks[0].dequantize().reshape(m, k)
    return np.stack([cb.dequantize().reshape(k) for cb in fitted.codebooks])


class CorrectBiasPass(Pass):
    """Fills ``ctx.bias_corrections`` (node → float64 [M]); the rewrite adds them to the layers' biases."""

    kind = "analysis"

    def requires(self, graph, ctx) -> None:
        for needed in ("FitWeightsPass", "FitActivationsPass"):
            if needed not in ctx.passes_run:
                raise PreconditionError(f"CorrectBiasPass needs the results of {needed}: run {needed} first")

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        ctx.bias_corrections.clear()
        if not ctx.config.bias_correction or not ctx.weight_layers:
            return PassResult(graph, False)
        nodes = {n.name: n for n in graph.nodes}
        levels = level_tensors(graph, ctx)
        layers = {name: linear_layer(nodes[name]) for name in ctx.weight_layers}
        inputs = {}                                   # input tensor → channel axis
        for name, wl in ctx.weight_layers.items():
            inputs[wl.input] = 1 if layers[name].kind == "conv" else (0 if layers[name].transpose_input else -1)
        mean_x = {t: ChannelMeanObserver(axis) for t, axis in inputs.items()}
        mean_q = {t: ChannelMeanObserver(axis) for t, axis in inputs.items() if t in levels}
        model = export_model(graph, ctx)
        names = list(inputs)
        session = augmented_session(model, names)
        stream = open_calibration(ctx.calibration, model, max_samples=ctx.config.max_calib_samples)
        for batch in tqdm(stream, desc="bias correction", unit="batch", disable=not ctx.config.progress,
                          file=sys.stderr, leave=False):
            for name, value in zip(names, session.run(names, batch)):
                mean_x[name].update(value)
                if name in mean_q:
                    mean_q[name].update(levels[name](value))
        for name, wl in ctx.weight_layers.items():
            layer, fitted = layers[name], ctx.weights[name]
            ex = mean_x[wl.input].mean
            eq = mean_q[wl.input].mean if wl.input in mean_q else ex
            if layer.kind == "conv":
                m, cg = layer.weight_shape[0], layer.weight_shape[1]
                taps = int(np.prod(layer.weight_shape[2:]))
                group = ex.size // cg
                rows = np.arange(m) // (m // group)                    # the group of each output channel
                ex = np.repeat(ex.reshape(group, cg), taps, axis=1)[rows]   # [M, cg·taps]
                eq = np.repeat(eq.reshape(group, cg), taps, axis=1)[rows]
                shift = (layer.matrix * ex).sum(1) - (dequantized_weights(fitted) * eq).sum(1)
            else:
                shift = layer.matrix @ ex - dequantized_weights(fitted) @ eq
            ctx.bias_corrections[name] = shift
        return PassResult(graph, False)
