"""VerifyPass: onnx.checker with our schemas, then the numpy reference against FP32 on calibration samples."""

from __future__ import annotations

import logging
import math

import numpy as np
import onnx_graphsurgeon as gs

from wqcompile.graph import check_graph, export_model
from wqcompile.pass_manager import Pass, PassResult
from wqcompile.passes.calibrate import augmented_session

logger = logging.getLogger(__name__)

# Below these the compiled model is probably not what the user wants: we warn, we do not fail.
WARN_OUTPUT_SQNR_DB = 10.0
WARN_TOP1_AGREEMENT = 0.9


class ErrorMeter:
    """Streams Σx² and Σ(x-x̂)² (and top-1 agreement for [N, C] outputs) over batches."""

    def __init__(self) -> None:
        self.signal = self.error = 0.0
        self.agree = self.rows = 0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
        self.signal += float((ref**2).sum())
        self.error += float(((ref - got) ** 2).sum())
        if ref.ndim == 2 and ref.shape[1] > 1:
            self.agree += int((ref.argmax(1) == got.argmax(1)).sum())
            self.rows += ref.shape[0]

    @property
    def sqnr_db(self) -> float:
        if self.error == 0:
            return math.inf
        return 10 * math.log10(self.signal / self.error) if self.signal > 0 else 0.0

    @property
    def top1_agreement(self) -> float | None:
        return self.agree / self.rows if self.rows else None


class VerifyPass(Pass):
    """Checks the compiled graph and fills ``ctx.verify`` and each layer's ``output_sqnr_db``."""

    kind = "analysis"

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        from wqcompile.reference import ReferenceSession

        model = export_model(graph, ctx)
        check_graph(model, what="the compiled model")
        ctx.verify = {"checker": "passed", "samples": 0}
        if not ctx.verify_feeds or ctx.source_model is None:
            return PassResult(graph, False)
        outputs = [o.name for o in ctx.source_model.graph.output]
        layer_tensors = {name: e.get("output_tensor") or e.get("act_tensor") for name, e in ctx.layer_report.items()}
        inner = sorted({t for t in layer_tensors.values() if t and t not in outputs})
        fp32 = augmented_session(ctx.source_model, outputs + inner)
        ref = ReferenceSession(model)
        meters = {name: ErrorMeter() for name in outputs + inner}
        for feed in ctx.verify_feeds:
            expected = dict(zip(outputs + inner, fp32.run(outputs + inner, feed)))
            got = ref.run_all(feed)
            for name, meter in meters.items():
                value = got.get(name)
                if value is None and f"{name}.levels" in got and name in ctx.activations:
                    value = np.asarray(ctx.activations[name].values, np.float32)[got[f"{name}.levels"]]
                if value is not None:
                    meter.add(expected[name], value)
            ctx.verify["samples"] += next(iter(feed.values())).shape[0]
        for layer, tensor in layer_tensors.items():
            if tensor in meters and meters[tensor].signal > 0:
                ctx.layer_report[layer]["output_sqnr_db"] = meters[tensor].sqnr_db
        ctx.verify["outputs"] = {n: {"sqnr_db": meters[n].sqnr_db, "top1_agreement": meters[n].top1_agreement} for n in outputs}
        first = meters[outputs[0]]
        ctx.verify["output_sqnr_db"] = first.sqnr_db
        if first.top1_agreement is not None:
            ctx.verify["top1_agreement"] = first.top1_agreement
        if first.sqnr_db < WARN_OUTPUT_SQNR_DB or (first.top1_agreement or 1.0) < WARN_TOP1_AGREEMENT:
            msg = (f"output {outputs[0]!r} differs from FP32 on {ctx.verify['samples']} calibration samples: "
                   f"SQNR {first.sqnr_db:.1f} dB, top-1 agreement {first.top1_agreement}")
            logger.warning(msg)
            ctx.warnings.append(msg)
        return PassResult(graph, False)
