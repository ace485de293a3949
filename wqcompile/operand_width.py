"""Which weight layers run on narrow operands: int8 codebook mantissas times uint8 level mantissas.

The runtime multiplies such a QConv with the u8×s8 dot product (AVX-512 VNNI ``vpdpbusd``: 64 multiply-accumulates
per instruction, twice its int16 rate), so the compiler gives a layer narrow mantissas (``lowering.NARROW_BITS``)
when ``QuantConfig.mantissa_width`` asks for it and the layer can take them: a convolution the runtime runs as a
GEMM (not depthwise), ≤ 5-bit weights (op-contract §4 keeps mw ≥ w_bits + 2) and a uint8 level input. ``"auto"``
also requires that the input's levels stay apart on the 8-bit grid (true for 4-bit Lloyd levels; a 4-bit LogQuant
set spanning 15 octaves would merge its small levels into 0, so it stays wide). The refinement snaps a narrow
layer's codebook to the 7-bit grid before its final GPTQ assignment, so the assignment compensates the values that
will actually run (docs/decisions.md).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from wqcompile.layers import linear_layer, node_kinds
from wqcompile.level_flow import level_tensors
from wqcompile.lowering import NARROW_BITS
from wqcompile.runtime_ops.fixed_point import mantissas, scale_shift


def levels_stay_apart(values: np.ndarray) -> bool:
    """The level values on the uint8 grid of their top level keep level 0 alone at 0 and every level distinct."""
    values = np.asarray(values, dtype=np.float64)
    table = mantissas(values, scale_shift(float(values.max(initial=0.0)), NARROW_BITS[1]))
    return table.size < 2 or bool(table[1] > 0 and np.all(np.diff(table[1:]) > 0))


def runs_narrow(width: str, gemm_conv: bool, weight_bits: int, input_levels: np.ndarray | None) -> bool:
    """The policy for one layer (``input_levels``: the real level values of a level input, else None)."""
    if width == "16" or not gemm_conv or input_levels is None or weight_bits + 2 > NARROW_BITS[0]:
        return False
    return width == "8" or levels_stay_apart(input_levels)


def narrow_layers(graph: gs.Graph, ctx) -> set[str]:
    """Names of the fitted weight layers that get narrow mantissas under ``ctx.config.mantissa_width``."""
    if ctx.config.mantissa_width == "16":
        return set()
    levels = level_tensors(graph, ctx)
    out = set()
    for node in graph.nodes:
        fitted = ctx.weights.get(node.name)
        if fitted is None or node.name not in ctx.weight_layers:
            continue
        gemm_conv = linear_layer(node).kind == "conv" and "depthwise" not in node_kinds(node)
        quantizer = levels.get(node.inputs[0].name)
        values = None if quantizer is None else np.asarray(quantizer.values, dtype=np.float64)
        if runs_narrow(ctx.config.mantissa_width, gemm_conv, fitted.bits, values):
            out.add(node.name)
    return out
