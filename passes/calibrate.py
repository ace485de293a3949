"""CalibratePass: run the FP32 model with onnxruntime over the calibration data and stream log2 histograms."""

from __future__ import annotations

import logging
import sys

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from tqdm import tqdm

from wqcompile.calib.readers import open_calibration
from wqcompile.errors import CalibrationError, PreconditionError
from wqcompile.graph import export_model
from wqcompile.pass_manager import Pass, PassResult
from wqcompile.quant import LogHistogram

logger = logging.getLogger(__name__)


def observed_tensors(ctx) -> list[str]:
    """Every tensor whose statistics a later pass needs: quantized activations and the inputs of weight layers."""
    names = [a.output for a in ctx.act_layers.values()] + [w.input for w in ctx.weight_layers.values()]
    return list(dict.fromkeys(names))


def _needed_nodes(graph: onnx.GraphProto, names: list[str]) -> list[onnx.NodeProto] | None:
    """The nodes ``names`` depend on, in graph order; None when a node has subgraphs (their implicit inputs are not
    followed here, so nothing is pruned)."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return None
    keep, stack = set(), [producer[n] for n in names if n in producer]
    while stack:
        i = stack.pop()
        if i not in keep:
            keep.add(i)
            stack.extend(producer[t] for t in graph.node[i].input if t in producer)
    return [node for i, node in enumerate(graph.node) if i in keep]


def augmented_session(model: onnx.ModelProto, names: list[str]) -> ort.InferenceSession:
    """An in-memory model that outputs exactly ``names``, pruned to the nodes they need (no temporary files).

    onnxruntime runs every node of a graph whatever is fetched, so the pruning is what makes an early tensor cheap
    (the per-layer passes of the codebook refinement fetch one layer's input each). Graph inputs are all kept, so
    the same feeds work.
    """
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    nodes = _needed_nodes(aug.graph, names)
    if nodes is not None:
        used = {t for node in nodes for t in node.input} | set(names)
        kept_inits = [t for t in aug.graph.initializer if t.name in used]
        dropped = {t.name for t in aug.graph.initializer} - {t.name for t in kept_inits}
        kept_inputs = [i for i in aug.graph.input if i.name not in dropped]   # IR < 4 lists initializers as inputs
        del aug.graph.node[:]
        aug.graph.node.extend(nodes)
        del aug.graph.initializer[:]
        aug.graph.initializer.extend(kept_inits)
        del aug.graph.input[:]
        aug.graph.input.extend(kept_inputs)
        declared = {o.name: o for o in aug.graph.output}        # a fetched model output keeps its declared type
        kept_outputs = [declared[n] for n in dict.fromkeys(names) if n in declared]
        del aug.graph.output[:]
        aug.graph.output.extend(kept_outputs)
    present = {o.name for o in aug.graph.output}
    for name in names:
        if name not in present:
            aug.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 3
    return ort.InferenceSession(aug.SerializeToString(), opts, providers=["CPUExecutionProvider"])


class CalibratePass(Pass):
    """Fills ``ctx.stats`` (one mergeable :class:`LogHistogram` per observed tensor); memory is one batch."""

    kind = "analysis"

    def requires(self, graph, ctx) -> None:
        if "SelectLayersPass" not in ctx.passes_run:
            raise PreconditionError("CalibratePass needs the layers chosen: run SelectLayersPass first")
        if ctx.calibration is None:
            raise CalibrationError("no calibration data given (pass --calib FILE_OR_DIR)")

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        names = observed_tensors(ctx)
        model = export_model(graph, ctx)
        stream = open_calibration(ctx.calibration, model, max_samples=ctx.config.max_calib_samples)
        ctx.stats = {name: LogHistogram() for name in names}
        ctx.verify_feeds, kept, ctx.calib_samples = [], 0, 0
        if not names:
            logger.info("nothing to observe; reading calibration data only for verification")
        session = augmented_session(model, names) if names else None
        bar = tqdm(stream, desc="calibrate", unit="batch", disable=not ctx.config.progress, file=sys.stderr, leave=False)
        for batch in bar:
            n = next(iter(batch.values())).shape[0]
            if session is not None:
                try:
                    outputs = session.run(names, batch)
                except Exception as err:
                    raise CalibrationError(f"onnxruntime failed on calibration batch {bar.n}: {str(err).splitlines()[0]}") from None
                for name, value in zip(names, outputs):
                    ctx.stats[name].update(np.asarray(value))
            if kept < ctx.config.verify_samples:
                ctx.verify_feeds.append({k: v[: ctx.config.verify_samples - kept].copy() for k, v in batch.items()})
                kept += min(n, ctx.config.verify_samples - kept)
            ctx.calib_samples += n
        bar.close()
        for name, hist in ctx.stats.items():
            if hist.n_nan or hist.n_posinf:
                msg = f"tensor {name!r}: calibration saw {hist.n_nan} NaN and {hist.n_posinf} +Inf values"
                logger.warning(msg)
                ctx.warnings.append(msg)
        logger.info("calibrated %d tensors on %d samples", len(names), ctx.calib_samples)
        return PassResult(graph, False)
