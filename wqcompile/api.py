"""The Python entry points: compile a model in memory, or a file to a file (atomically, with a report).

Example::

    from wqcompile.api import compile_model
    from wqcompile.config import QuantConfig
    result = compile_model(onnx.load("model.onnx"), "calib.npz", QuantConfig(weight_bits=4, act_bits=4))
    result.model          # the compiled onnx.ModelProto
    result.context.weights["conv1"].codebooks[0].values
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import onnx

import wqcompile
from wqcompile.config import QuantConfig
from wqcompile.context import CompileContext
from wqcompile.graph import export_model, import_graph
from wqcompile.model_io import (
    check_opset, check_output_dir, check_output_path, load_model, serialize_model, write_bytes_atomic,
)
from wqcompile.pass_manager import Pass, PassManager
from wqcompile.report import build_report, write_report

logger = logging.getLogger(__name__)

METADATA_VERSION = "wqcompile.version"
METADATA_CONFIG = "wqcompile.config"
METADATA_LAYERS = "wqcompile.layers"


@dataclass
class CompileResult:
    model: onnx.ModelProto
    context: CompileContext
    report: dict[str, Any]


def _layer_summary(ctx: CompileContext) -> list[dict[str, Any]]:
    keys = ("op", "weight_bits", "weight_method", "codebooks", "fsr", "step", "act_bits", "act_method",
            "packed_bytes", "entropy_coded_bytes", "fp32_bytes")
    return [{"name": name, **{k: e[k] for k in keys if k in e}} for name, e in ctx.layer_report.items()]


def compile_model(model: onnx.ModelProto, calibration: Any, config: QuantConfig | None = None, *,
                  passes: Sequence[Pass] | None = None, dump_dir: Path | None = None,
                  check_each: bool = False) -> CompileResult:
    """Run the pipeline (default: :func:`wqcompile.passes.default_pipeline`) on ``model``.

    Args:
        model: the FP32 model (not modified).
        calibration: a ``.npz`` path, a directory, an iterable of feed dicts, or an ORT ``CalibrationDataReader``.
        config: what to quantize and how.
        passes: a custom pipeline.
    Returns:
        the compiled model, the compile context (all analysis results), and the report.
    """
    from wqcompile.passes import default_pipeline

    config = config or QuantConfig()
    check_opset(model, "model")
    ctx = CompileContext(config=config, calibration=calibration, source_model=model)
    source = onnx.ModelProto()
    source.CopyFrom(model)
    start = time.perf_counter()
    result = PassManager(passes if passes is not None else default_pipeline(), dump_dir=dump_dir,
                         check_each=check_each).run(import_graph(source), ctx)
    compiled = export_model(result.graph, ctx)
    elapsed = time.perf_counter() - start
    meta = {p.key: p.value for p in compiled.metadata_props}
    meta[METADATA_VERSION] = wqcompile.__version__
    meta[METADATA_CONFIG] = json.dumps(config.to_dict(), sort_keys=True)
    meta[METADATA_LAYERS] = json.dumps(_layer_summary(ctx), sort_keys=True)
    del compiled.metadata_props[:]
    for key in sorted(meta):
        compiled.metadata_props.add(key=key, value=meta[key])
    summary = {"compile_seconds": round(elapsed, 3), "calibration_samples": ctx.calib_samples,
               "weight_layers": len(ctx.weight_layers), "activation_layers": len(ctx.act_layers),
               "config": config.to_dict(), "tool_version": wqcompile.__version__}
    return CompileResult(compiled, ctx, build_report(ctx, summary))


def compile_file(model_path: str | os.PathLike, output_path: str | os.PathLike, calibration: Any,
                 config: QuantConfig | None = None, *, report_dir: str | os.PathLike | None = None,
                 plot_layer: str | None = None, dump_dir: Path | None = None) -> CompileResult:
    """Compile ``model_path`` into ``output_path`` (written atomically, last; the input is never touched).

    The report (if asked for) is written before the model, so an existing output always comes with its report
    and a failure leaves no model behind.
    """
    output = check_output_path(output_path, model_path,
                               calibration if isinstance(calibration, (str, os.PathLike)) else None)
    check_output_dir(report_dir, "report")
    check_output_dir(dump_dir, "dump")
    model = load_model(model_path)
    result = compile_model(model, calibration, config, dump_dir=dump_dir)
    data = serialize_model(result.model, output)
    summary = result.report["summary"]
    summary.update({"model": str(model_path), "output": str(output), "fp32_file_bytes": Path(model_path).stat().st_size,
                    "compiled_file_bytes": len(data)})
    summary["size_ratio"] = round(summary["fp32_file_bytes"] / len(data), 3)
    if report_dir is not None:
        report_dir = Path(report_dir)
        write_report(result.report, report_dir)
        try:
            from wqcompile.plots import plot_weight_histogram

            plot_weight_histogram(model, result.context, report_dir / "weight_histogram.png", layer=plot_layer)
        except Exception as err:  # a missing plot must never lose a compiled model
            logger.warning("could not draw the weight histogram: %s", err)
    write_bytes_atomic(output, data)
    return result
