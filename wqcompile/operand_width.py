"""Which weight layers run on narrow operands: int8 codebook mantissas times uint8 level mantissas.

The runtime multiplies such a QConv with the u8×s8 dot product (AVX-512 VNNI ``vpdpbusd``: 64 multiply-accumulates
per instruction, twice its int16 rate), so the compiler gives a layer narrow mantissas (``lowering.narrow_bits``)
when ``QuantConfig.mantissa_width`` asks for it and the layer can take them: a convolution the runtime runs as a
GEMM (not depthwise), ≤ 5-bit weights (op-contract §4 keeps mw ≥ w_bits + 2) and either a uint8 level input
(``mx = 8``: uint8 ``x_table``) or a float input (``mx = 7``: s8 mantissas, which the runtime offsets by 128 into
u8; MobileNetV2's expansion convs read the float residual stream; a float input no weight layer computed, the
model's input, stays wide). ``"auto"``
also asks that the error the narrow grid adds to the input (level values moved to ``x_table / 2^x_shift``; float
values rounded to the step ``2^-x_shift`` of 127 mantissas, judged on the positive half of the calibration
histogram, the grid being symmetric) be small next to the error the layer already has from its ≤ 5-bit weights: relative to
the input's power at most ``SNAP_ERROR_BUDGET`` times the weights' ``‖W − Ŵ‖² / ‖W‖²`` (so the layer's output error
grows by ≤ 5 %, ~0.2 dB), and it needs the refinement's GPTQ, which assigns against the 7-bit codebook grid (without
it the paper pipeline lost up to 1.2 dB: a per-element error budget misses that a grid moves every occurrence of a
value the same way). 4-bit Lloyd levels pass with a wide margin; a 255-level set merges neighbours on
256 integers, which costs about a uniform 8-bit quantizer's error, still far below 4-bit weights' (measured:
Fashion-MNIST (4,8) 27.2 dB wide, 27.4 dB narrow). Decided once per layer (``ctx.narrow_operands``), the first time
a pass asks, so the refinement and the rewrite always agree. A narrow float input's grid is part of the simulation
the later passes fit on (``s8_input_nodes``, ``simulated_input``): its rounding is tiny next to 4-bit weights (~35 dB
on a Gaussian), but the refinement's GPTQ and the downstream fits compensate the exact error pattern they see, and
unseen it cost the tiny test CNN 1.1–3.4 dB of output SQNR. The refinement snaps a narrow layer's codebook to the
7-bit grid before its final GPTQ assignment, so the assignment compensates the values that will actually run
(docs/decisions.md).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from wqcompile.layers import linear_layer, node_kinds
from wqcompile.level_flow import level_tensors
from wqcompile.lowering import NARROW_BITS, NARROW_FLOAT_BITS
from wqcompile.quant.lloyd_act import SUBPOINTS   # each bin spread as the Lloyd fit spreads it
from wqcompile.quant.log_histogram import LogHistogram
from wqcompile.runtime_ops.fixed_point import MAX_MANTISSA_BITS, mantissas, scale_shift


SNAP_ERROR_BUDGET = 0.05   # the grid may add ≤ 5 % to the layer's relative weight error (~0.2 dB at its output)


def narrow_level_values(values: np.ndarray) -> np.ndarray:
    """The level values as a uint8 ``x_table`` represents them (``lower_layer`` at ``mx = 8``)."""
    values = np.asarray(values, dtype=np.float64)
    shift = scale_shift(float(values.max(initial=0.0)), NARROW_BITS[1])
    return np.ldexp(mantissas(values, shift).astype(np.float64), -shift)


def snap_error(quantizer, hist: LogHistogram) -> float:
    """Extra mean squared error of the narrow level values over the calibration histogram, relative to the mean
    square of the input (non-positive values are level 0 = 0 either way: no error, no power)."""
    points, weights = hist.spread_points(SUBPOINTS)
    if points.size == 0:
        return 0.0
    level = quantizer.quantize(points)
    own = np.sum(weights * (points - quantizer.values[level]) ** 2)
    snapped = np.sum(weights * (points - narrow_level_values(quantizer.values)[level]) ** 2)
    return float(max(snapped - own, 0.0) / np.sum(weights * points**2))


def float_snap_error(hist: LogHistogram) -> float:
    """Extra mean squared error of a float input's narrow mantissas (``rint(x · 2^s)`` with ``s`` such that
    ``max|x| · 2^s ≤ 127``) over the wide ones (``mx = 15``), relative to the mean square of the input, on the
    calibration histogram's positive values (the grid is symmetric, so the negative half is taken to behave alike)."""
    points, weights = hist.spread_points(SUBPOINTS)
    if points.size == 0 or not hist.max_abs > 0:
        return 0.0
    points = np.minimum(points, hist.max_abs)   # a bin's spread points may pass the largest value seen

    def error(bits: int) -> float:
        shift = scale_shift(hist.max_abs, bits)
        return float(np.sum(weights * (np.ldexp(np.rint(np.ldexp(points, shift)), -shift) - points) ** 2))

    return max(error(NARROW_FLOAT_BITS[1]) - error(MAX_MANTISSA_BITS), 0.0) / float(np.sum(weights * points**2))


def relative_weight_error(fitted) -> float:
    """``‖W − Ŵ‖² / ‖W‖²`` of a fitted layer."""
    from wqcompile.passes.correct_bias import dequantized_weights

    power = float(np.sum(fitted.matrix.astype(np.float64) ** 2))
    return float(np.sum((fitted.matrix - dequantized_weights(fitted)) ** 2)) / power if power > 0 else 0.0


def runs_narrow(width: str, gemm_conv: bool, fitted, input_quantizer, hist: LogHistogram | None,
                reassigned: bool = True) -> bool:
    """The policy for one layer (``input_quantizer``: the ActQuantizer of a level input, else None for a float
    input; ``hist``: the input's calibration histogram, needed by "auto" (and, for a float input, to lower it at
    all); ``reassigned``: the refinement's GPTQ runs, so it can assign against the 7-bit grid)."""
    if width == "16" or not gemm_conv or (input_quantizer is None and hist is None):
        return False
    if width == "8":   # asked for: 6..8-bit weights too (their codebook entries may share grid points)
        return True
    if fitted.bits + 2 > NARROW_BITS[0]:
        return False
    # without GPTQ nothing compensates the grid's systematic shifts (every occurrence of a level or codebook value
    # moves by the same amount): measured on Open-NSFW (4,4), paper pipeline, −0.9 dB (WQ) and −1.2 dB (k-means)
    if hist is None or not reassigned:
        return False
    # the codebook's own grid is not judged here: GPTQ reassigns against it after the refit, and the codebook seen
    # now (before the refit) predicts nothing (on Open-NSFW such a check rejected 19 of 52 layers at random and
    # the model lost 1.9 dB against narrowing them all)
    extra = float_snap_error(hist) if input_quantizer is None else snap_error(input_quantizer, hist)
    return extra <= SNAP_ERROR_BUDGET * relative_weight_error(fitted)


def s8_input_nodes(layer: str, x: str, shift: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Nodes computing what a narrow float input runs as, ``clip(rint(x · 2^shift), ±127) · 2^-shift`` (the
    runtime's quantize with ``x_max = 127``; powers of two and ONNX Round's half-to-even make it exact), their
    initializers and the output tensor's name (:func:`simulated_input`)."""
    y = simulated_input_name(layer, x)
    p = f"{y}/"
    inits = [numpy_helper.from_array(np.array(v, np.float32), p + n) for n, v in
             (("up", np.ldexp(1.0, shift)), ("lo", -127.0), ("hi", 127.0), ("down", np.ldexp(1.0, -shift)))]
    nodes = [helper.make_node("Mul", [x, p + "up"], [p + "scaled"]),
             helper.make_node("Round", [p + "scaled"], [p + "rounded"]),
             helper.make_node("Clip", [p + "rounded", p + "lo", p + "hi"], [p + "clipped"]),
             helper.make_node("Mul", [p + "clipped", p + "down"], [y])]
    return nodes, inits, y


def simulated_input_name(layer: str, x: str) -> str:
    return f"{x}/s8/{layer}"


def simulated_input(ctx, layer: str) -> str:
    """The tensor ``layer`` reads in the simulation (``sequential_calibrate.simulation_model``): its input, or the
    s8 grid of it when the layer is a narrow float-input one."""
    x = ctx.weight_layers[layer].input
    return simulated_input_name(layer, x) if layer in ctx.narrow_float_shift else x


def computed_by_weight_layer(tensor: gs.Tensor, weight_layers) -> bool:
    """Whether a weight layer is among the producers of ``tensor`` (else it is the model's input, maybe through
    preprocessing ops)."""
    seen, todo = set(), [tensor]
    while todo:
        t = todo.pop()
        for node in t.inputs:
            if node.name in weight_layers:
                return True
            if id(node) not in seen:
                seen.add(id(node))
                todo.extend(node.inputs)
    return False


def narrow_layers(graph: gs.Graph, ctx, only: set[str] | None = None, reassigned: set[str] = frozenset()) -> set[str]:
    """Names of the fitted weight layers that get narrow mantissas under ``ctx.config.mantissa_width``. A layer's
    answer is decided the first time it is asked (its input quantizer must be final by then: ``only`` limits the
    question to those layers) and kept. ``reassigned``: the layers whose GPTQ assignment the caller is about to run
    (the refinement); a layer decided later, e.g. by the rewrite after no refinement, has had none."""
    levels = level_tensors(graph, ctx)
    hist_of = {id(ctx.activations[a.output]): ctx.stats.get(a.output) for a in ctx.act_layers.values()
               if a.output in ctx.activations}
    for node in graph.nodes:
        fitted = ctx.weights.get(node.name)
        if (fitted is None or node.name not in ctx.weight_layers or node.name in ctx.narrow_operands
                or (only is not None and node.name not in only)):
            continue
        gemm_conv = linear_layer(node).kind == "conv" and "depthwise" not in node_kinds(node)
        quantizer = levels.get(node.inputs[0].name)
        hist = hist_of.get(id(quantizer)) if quantizer is not None else (
            # a float input computed by earlier weight layers (the residual stream); the model's own input stays
            # wide: its first conv lost ~1.1 dB on Open-NSFW (4,4) narrow, over three seeds (docs/decisions.md)
            ctx.stats.get(node.inputs[0].name) if computed_by_weight_layer(node.inputs[0], ctx.weight_layers)
            else None)
        ctx.narrow_operands[node.name] = runs_narrow(ctx.config.mantissa_width, gemm_conv, fitted, quantizer, hist,
                                                     node.name in reassigned)
        if ctx.narrow_operands[node.name] and quantizer is None:   # the grid lower_layer gives it (FloatInput)
            ctx.narrow_float_shift[node.name] = scale_shift(hist.max_abs, NARROW_FLOAT_BITS[1])
    return {name for name, narrow in ctx.narrow_operands.items() if narrow}
