"""Per-layer numbers of a compilation, written as JSON (for machines) and Markdown (for people)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from wqcompile.entropy_coding import huffman_bytes, shannon_bytes
from wqcompile.model_io import write_bytes_atomic

logger = logging.getLogger(__name__)


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """``10·log10(Σx² / Σ(x-x̂)²)``; +inf when exact, 0 for an all-zero reference with error."""
    ref = np.asarray(reference, dtype=np.float64)
    err = float(((ref - np.asarray(approx, dtype=np.float64)) ** 2).sum())
    sig = float((ref**2).sum())
    if err == 0:
        return math.inf
    return 10 * math.log10(sig / err) if sig > 0 else 0.0


def weighted_entropy(weights: np.ndarray, indices: np.ndarray) -> float:
    """The paper's ``-Σ_k I_k P_k ln P_k`` of an assignment: ``I_k`` mean w² of cluster k, ``P_k`` its share."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    idx = np.asarray(indices).reshape(-1).astype(np.int64)
    n = np.bincount(idx)
    t = np.bincount(idx, weights=w * w)
    used = n > 0
    return float(-(t[used] / w.size * np.log(n[used] / w.size)).sum())


def weight_numbers(node: str, op: str, fitted, low, input_kind: str) -> dict[str, Any]:
    """Report entry of a weight layer: bits, codebook, weighted entropy, SQNR and bytes (packed and coded)."""
    m, k = fitted.matrix.shape
    idx = np.concatenate([np.asarray(cb.indices).reshape(-1) for cb in fitted.codebooks])
    codebook = np.ldexp(low.codebook[0].astype(np.float64), -low.w_shift[0])
    side = low.codebook.nbytes + (low.bias.nbytes if low.bias is not None else 0) \
        + (low.x_table.nbytes if low.x_table is not None else 0) + (low.thresholds.nbytes if low.thresholds is not None else 0) \
        + (low.row_scale.nbytes if low.row_scale is not None else 0)
    return {
        "node": node,
        "op": op,
        "weight_bits": low.weight_bits,
        "weight_method": fitted.codebooks[0].method,
        "codebooks": len(fitted.codebooks),
        "row_scaled": low.row_scale is not None,    # one shared codebook times an int32 scale per output channel
        "codebook": [float(v) for v in codebook],
        "mantissa_bits": {"codebook": low.mantissa_bits[0], "input": low.mantissa_bits[1]},
        "w_shift": low.w_shift[0] if len(low.w_shift) == 1 else low.w_shift,
        "x_shift": low.x_shift,
        "input": input_kind,
        "weights": int(m * k),
        "weighted_entropy": weighted_entropy(fitted.matrix, idx),
        "weight_sqnr_db": sqnr_db(fitted.matrix, low.snapped),
        "fp32_bytes": int(m * k * 4),
        "packed_bytes": int(low.packed.nbytes + side),
        "entropy_coded_bytes": int(huffman_bytes(idx, 2**low.weight_bits) + side),
        "entropy_bound_bytes": round(shannon_bytes(idx, 2**low.weight_bits) + side, 1),
    }


def activation_report(act, quantizer) -> dict[str, Any]:
    """Report entry of a quantized activation: bits, method, (fsr, step) and level values."""
    return {"op": "Relu" if act.clip_max is None else "Clip", "act_bits": act.bits, "act_method": quantizer.method,
            "fsr": quantizer.fsr, "step": quantizer.step,
            "act_levels": [float(v) for v in quantizer.values], "clip_max": act.clip_max, "act_tensor": act.output}


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _clean(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings so the file stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def build_report(ctx, summary: dict[str, Any]) -> dict[str, Any]:
    layers = [dict(name=name, **entry) for name, entry in ctx.layer_report.items()]
    return _clean({"summary": summary, "layers": layers, "skipped": ctx.skipped, "verify": ctx.verify,
                   "warnings": ctx.warnings, "timings_s": {k: round(v, 3) for k, v in ctx.timings.items()}})


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return value
    return str(value)


def _act_cell(layer: dict[str, Any]) -> str:
    """``4, lloyd``: the activation bits and the quantizer that chose the levels (fsr/step exist only for LogQuant)."""
    bits = layer.get("act_bits")
    return _fmt(bits) if bits is None or not layer.get("act_method") else f"{bits}, {layer['act_method']}"


def to_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [f"# wqcompile report: {s.get('model', '')}", ""]
    for key, value in s.items():
        lines.append(f"- **{key}**: {_fmt(value, 4) if isinstance(value, float) else value}")
    lines += ["", "## Layers", "",
              "| layer | op | w bits | codebook | weighted entropy | weight SQNR dB | act bits, levels | fsr | step | output SQNR dB | packed B | coded B | fp32 B |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for layer in report["layers"]:
        cb = layer.get("codebook")
        cb_text = "–" if cb is None else (", ".join(f"{v:.3g}" for v in cb) if len(cb) <= 8 else f"{len(cb)} levels, ±{max(abs(v) for v in cb):.3g}")
        lines.append("| " + " | ".join([
            layer["name"], layer.get("op", "Relu"), _fmt(layer.get("weight_bits")), cb_text,
            _fmt(layer.get("weighted_entropy"), 5), _fmt(layer.get("weight_sqnr_db"), 1), _act_cell(layer),
            _fmt(layer.get("fsr")), _fmt(layer.get("step")), _fmt(layer.get("output_sqnr_db"), 1),
            _fmt(layer.get("packed_bytes")), _fmt(layer.get("entropy_coded_bytes")), _fmt(layer.get("fp32_bytes"))]) + " |")
    if report["skipped"]:
        lines += ["", "## Left untouched", ""] + [f"- `{n}`: {r}" for n, r in report["skipped"].items()]
    if report["verify"]:
        lines += ["", "## Verification", ""] + [f"- **{k}**: {_fmt(v, 4)}" for k, v in report["verify"].items() if not isinstance(v, dict)]
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Write ``report.json`` and ``report.md`` atomically into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "report.json", "markdown": directory / "report.md"}
    write_bytes_atomic(paths["json"], json.dumps(report, indent=2, default=_json_default).encode())
    write_bytes_atomic(paths["markdown"], to_markdown(report).encode())
    return paths
