"""SequentialCalibratePass: refit every activation quantizer on the partially quantized model, in topological order.

The normal flow fits every (FSR, step) on the FP32 model. Here (the paper's forward flow, wq-algorithm.md §4.3) the
layers are visited in topological order, and each activation quantizer is refit on the histogram its tensor has in a
float *simulation* of the model where every layer already visited runs quantized: its weights replaced by the
dequantized codebook (``values[indices]``, before the int16 snapping of the lowering) and its activation followed by a
fake quantizer (threshold comparisons by binary search, then a table lookup, in standard ONNX ops run by
onnxruntime). The layer's own weights count as visited, so its activation is fit on what its quantized weights produce.
With ``--codebook-refinement`` too, each weight layer's codebook is refit (RefineCodebooksPass's least squares) on its
input in the same simulation, before the layer is marked visited (with ``refinement_target="fp32"``: towards the
FP32 model's ``W x_fp``, RefineCodebooksPass's docstring).

Cost: one pass over the calibration data per quantized layer (weight or activation), each through a fresh
onnxruntime session of the simulation. Memory: one calibration batch through the simulation, plus one histogram (or,
when refining, one layer's input moments) at a time. Not simulated: the linear input quantization of float inputs
(e.g. the first layer's), and a value exactly on the strict first threshold (counted as above it).
"""

from __future__ import annotations

import logging
import math
import sys

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper
from tqdm import tqdm

from wqcompile.calib.readers import open_calibration
from wqcompile.errors import PreconditionError, QuantizationError
from wqcompile.graph import export_model
from wqcompile.lowering import NARROW_BITS
from wqcompile.operand_width import narrow_layers, s8_input_nodes
from wqcompile.pass_manager import Pass, PassResult
from wqcompile.passes.calibrate import augmented_session
from wqcompile.passes.correct_bias import dequantized_weights
from wqcompile.passes.refine_codebooks import (collect_joint_moments, collect_moments, fp32_session, refinable,
                                               refit_layer)
from wqcompile.quant import ACT_QUANTIZERS, LogHistogram

logger = logging.getLogger(__name__)


def fake_quant_nodes(x: str, y: str, quantizer, prefix: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes computing ``y = quantizer(x)`` (float32): binary search over the thresholds, then Gather of the values."""
    levels = quantizer.levels
    nbits = max(1, math.ceil(math.log2(levels)))
    table = np.full(2**nbits, np.inf, dtype=np.float32)
    table[: levels - 1] = np.asarray(quantizer.thresholds, dtype=np.float32)
    inits = [numpy_helper.from_array(table, f"{prefix}/T"),
             numpy_helper.from_array(np.asarray(quantizer.values, dtype=np.float32), f"{prefix}/V")]
    nodes = [helper.make_node("Less", [x, x], [f"{prefix}/false"]),
             helper.make_node("Cast", [f"{prefix}/false"], [f"{prefix}/lvl{nbits}"], to=onnx.TensorProto.INT64)]
    for b in reversed(range(nbits)):
        lvl, nxt = f"{prefix}/lvl{b + 1}", f"{prefix}/lvl{b}"
        inits += [numpy_helper.from_array(np.asarray(2**b - 1, np.int64), f"{prefix}/o{b}"),
                  numpy_helper.from_array(np.asarray(2**b, np.int64), f"{prefix}/s{b}")]
        nodes += [helper.make_node("Add", [lvl, f"{prefix}/o{b}"], [f"{prefix}/i{b}"]),
                  helper.make_node("Gather", [f"{prefix}/T", f"{prefix}/i{b}"], [f"{prefix}/t{b}"]),
                  helper.make_node("Less", [x, f"{prefix}/t{b}"], [f"{prefix}/lt{b}"]),
                  helper.make_node("Add", [lvl, f"{prefix}/s{b}"], [f"{prefix}/c{b}"]),
                  helper.make_node("Where", [f"{prefix}/lt{b}", lvl, f"{prefix}/c{b}"], [nxt])]
    nodes.append(helper.make_node("Gather", [f"{prefix}/V", f"{prefix}/lvl0"], [y]))
    return nodes, inits


def _stored_weight(node: onnx.NodeProto, w_hat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The dequantized ``[M, fan_in]`` matrix back in the node's own weight layout."""
    if node.op_type == "Conv":
        return w_hat.reshape(shape)
    if node.op_type == "MatMul":
        return w_hat.T
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    w = w_hat / float(attrs.get("alpha", 1.0))
    return w if int(attrs.get("transB", 0)) else w.T


def simulation_model(base: onnx.ModelProto, ctx, weights_done, acts_done) -> onnx.ModelProto:
    """``base`` with the weights of ``weights_done`` dequantized, the tensors ``acts_done`` fake-quantized and the
    inputs of narrow float-input layers on their s8 grid (``operand_width.simulated_input``)."""
    model = onnx.ModelProto()
    model.CopyFrom(base)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    by_name = {n.name: n for n in g.node}
    for name in weights_done:
        wl = ctx.weight_layers[name]
        if wl.weight not in inits:
            raise QuantizationError(f"{name!r}: weight {wl.weight!r} is not an initializer; cannot simulate it")
        orig = numpy_helper.to_array(inits[wl.weight])
        new = _stored_weight(by_name[name], dequantized_weights(ctx.weights[name]), orig.shape).astype(orig.dtype)
        inits[wl.weight].CopyFrom(numpy_helper.from_array(new, wl.weight))
    act_of = {a.node: a for a in ctx.act_layers.values() if a.output in acts_done}
    nodes = []
    for node in g.node:
        if node.name in ctx.narrow_float_shift:   # the s8 grid the runtime puts its float input on
            s8, s8_inits, node.input[0] = s8_input_nodes(node.name, node.input[0], ctx.narrow_float_shift[node.name])
            nodes += s8
            g.initializer.extend(s8_inits)
        nodes.append(node)
        if node.name in act_of:
            act = act_of[node.name]
            fp = f"{act.output}/fp32"
            node.output[0] = fp
            fq, fq_inits = fake_quant_nodes(fp, act.output, ctx.activations[act.output], f"{act.node}/fq")
            nodes += fq
            g.initializer.extend(fq_inits)
    new_nodes = [onnx.NodeProto() for _ in nodes]
    for dst, src in zip(new_nodes, nodes):
        dst.CopyFrom(src)
    del g.node[:]
    g.node.extend(new_nodes)
    opset = next((o for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset.version < 13:
        opset.version = 13      # Less on float, Where and Gather as used above
    return model


def observe_histogram(model: onnx.ModelProto, tensor: str, ctx) -> LogHistogram:
    hist = LogHistogram()
    session = augmented_session(model, [tensor])
    for batch in open_calibration(ctx.calibration, model, max_samples=ctx.config.max_calib_samples):
        hist.update(np.asarray(session.run([tensor], batch)[0]))
    return hist


class SequentialCalibratePass(Pass):
    """Refits ``ctx.activations`` (and, with refinement on, ``ctx.weights``) layer by layer on the quantized prefix."""

    kind = "analysis"

    def requires(self, graph, ctx) -> None:
        for needed in ("FitWeightsPass", "FitActivationsPass"):
            if needed not in ctx.passes_run:
                raise PreconditionError(f"SequentialCalibratePass needs the results of {needed}: run {needed} first")

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        cfg = ctx.config
        if not cfg.sequential_calibration or not (ctx.weight_layers or ctx.act_layers):
            return PassResult(graph, False)
        fit = ACT_QUANTIZERS[cfg.act_quantizer]
        base = export_model(graph, ctx)
        acts = {a.node: a for a in ctx.act_layers.values()}
        weights_done: set[str] = set()
        acts_done: set[str] = set()
        fp = (fp32_session(base, ctx) if cfg.codebook_refinement and cfg.refinement_target == "fp32" and ctx.weights
              else None)
        steps = [n for n in graph.nodes if n.name in acts or n.name in ctx.weights]
        for node in tqdm(steps, desc="sequential calibration", unit="layer", disable=not cfg.progress,
                         file=sys.stderr, leave=False):
            if node.name in ctx.weights:
                if cfg.codebook_refinement and refinable(node) is None and node.name not in ctx.refined_layers:
                    # the input's quantizer is final by now, so the narrow-operand policy can be asked (before the
                    # simulation is built: a narrow float input is simulated on its s8 grid)
                    narrow = node.name in narrow_layers(graph, ctx, only={node.name},
                                                         reassigned={node.name} if cfg.gptq else set())
                    model = simulation_model(base, ctx, weights_done, acts_done)
                    if fp is not None:
                        moments = collect_joint_moments(model, fp, graph, ctx, [node.name], ctx.calibration)[node.name]
                    else:
                        moments = collect_moments(model, graph, ctx, [node.name], ctx.calibration,
                                                  simulated=True)[node.name]
                    ctx.weights[node.name] = refit_layer(ctx.weights[node.name], moments, gptq=cfg.gptq,
                                                         snap_bits=NARROW_BITS[0] if narrow else None)
                    ctx.refined_layers.add(node.name)
                weights_done.add(node.name)
            else:
                act = acts[node.name]
                hist = observe_histogram(simulation_model(base, ctx, weights_done, acts_done), act.output, ctx)
                ctx.stats[act.output] = hist
                ctx.activations[act.output] = fit(hist, 2**act.bits, mode=cfg.act_search, name=act.output)
                acts_done.add(act.output)
        return PassResult(graph, False)
