"""The README's speed table: latency of the compiled model ÷ FP32, per model and bit width, with `wqcompile bench`.

    python -m benchmarks.speed_table                     # 3 models x (4,4) (4,8) (8,8), ~15 min on 2 cores
    python -m benchmarks.speed_table --models mnist --bits 8,8 --repeats 50
    python -m benchmarks.speed_table --wq-at-8 mnist     # also MNIST (8,8) with the default WQ codebooks

The models and calibration data are the benchmark's (``benchmarks.run_all``: ccexam's MNIST CNN, MobileNetV2 and
Open-NSFW's ResNet-50, cached in ``build/models``). Each is compiled with the defaults (GPTQ + refinement, ``auto``
activation levels, ``--mantissa-width auto``) on at most 32 calibration samples (MobileNetV2: its 64 crops), with
k-means weights at 8 bits. The compiled models are cached in ``--out`` (delete one to recompile it). Then
``wqcompile.bench.run_bench`` times FP32 and the compiled model interleaved at 1 and 2 threads, batch 1 and 32, and
prints its table and notes per model. The summary table's cells are threads,batch = 1,1 / 1,32 / 2,1 / 2,32.
``results.json`` in ``--out`` keeps every row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.run_all import TASKS, Task
from wqcompile.model_io import save_model_atomic, write_bytes_atomic

MODELS = ("mnist", "mobilenet", "opennsfw")
BITS = ("4,4", "4,8", "8,8")
CALIB_SAMPLES = {"mnist": 32, "mobilenet": 64, "opennsfw": 32}
CELLS = ((1, 1), (1, 32), (2, 1), (2, 32))


def compiled_model(key: str, task: Task, bits: str, weight_quantizer: str, out: Path) -> Path:
    """The compiled model of ``key`` at ``bits``, from the cache or compiled now (written atomically)."""
    from wqcompile.api import compile_model
    from wqcompile.config import QuantConfig

    path = out / f"{key}_{bits.replace(',', '')}_{weight_quantizer}.onnx"
    if path.is_file():
        return path
    wbits, abits = bits.split(",")
    config = QuantConfig(weight_bits=wbits, act_bits=abits, weight_quantizer=weight_quantizer,
                         max_calib_samples=CALIB_SAMPLES[key], progress=False, verify_samples=2)
    out.mkdir(parents=True, exist_ok=True)
    save_model_atomic(compile_model(task.model, task.calib, config).model, path)
    return path


def cell_text(rows: list[dict[str, Any]]) -> str:
    """'0.91 / 0.85 / 0.92 / 0.85' over CELLS; a ratio above 1.0 in bold with its per-round quartiles."""
    by_cell = {(r["threads"], r["batch"]): r for r in rows}
    parts = []
    for cell in CELLS:
        r = by_cell.get(cell)
        if r is None:
            parts.append("-")
            continue
        v = r["wq_vs_fp32"]
        q = r.get("wq_vs_fp32_quartiles")
        parts.append(f"**{v:.2f}** (q {q[0]:.2f}–{q[1]:.2f})" if v > 1.0 and q else f"{v:.2f}")
    return " / ".join(parts)


def summary(results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """Markdown: a row per model (and per weight quantizer at 8 bits when both ran), a column per bit width."""
    names = {"mnist": "ccexam MNIST CNN", "mobilenet": "MobileNetV2", "opennsfw": "ResNet-50 (Open-NSFW)"}
    bits = sorted({b for per_model in results.values() for b in per_model if not b.endswith("wq")})
    lines = ["| model | " + " | ".join(f"({b})" for b in bits) + " |", "|---" * (len(bits) + 1) + "|"]
    for key, per_model in results.items():
        lines.append(f"| {names.get(key, key)} | " + " | ".join(cell_text(per_model[b]) if b in per_model else ""
                                                               for b in bits) + " |")
        if any(b.endswith("wq") for b in per_model):
            lines.append(f"| {names.get(key, key)}, WQ codebooks at 8 bits | "
                         + " | ".join(cell_text(per_model[b + " wq"]) if b + " wq" in per_model else "" for b in bits)
                         + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--bits", default=";".join(BITS), help="semicolon-separated (w,a) pairs, e.g. '4,4;8,8'")
    p.add_argument("--repeats", type=int, default=30, help="interleaved timing rounds per cell")
    p.add_argument("--wq-at-8", default="", metavar="MODELS",
                   help="comma-separated models to also compile with WQ codebooks at 8-bit weights (the CLI default; "
                        "its OptSearch over 256 levels takes minutes per layer on the large models)")
    p.add_argument("--out", type=Path, default=Path("build/speed"))
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        p.error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    bits = [b.strip() for b in args.bits.split(";") if b.strip()]
    from wqcompile.bench import run_bench

    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for key in models:
        task = TASKS[key]()
        calib = args.out / f"{key}_calib.npz"
        if not calib.is_file():   # the bench times on up to 64; written atomically, as the models (a cache)
            import io

            import numpy as np

            args.out.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.savez(buf, **{k: v[:64] for k, v in task.calib.items()})
            write_bytes_atomic(calib, buf.getvalue())
        runs = [(b, "kmeans" if b.startswith("8") else "wq", b) for b in bits]
        if key in args.wq_at_8.split(","):
            runs += [(b, "wq", b + " wq") for b in bits if b.startswith("8")]
        for b, quantizer, label in runs:
            path = compiled_model(key, task, b, quantizer, args.out)
            print(f"== {key} ({b}) {quantizer} weights", flush=True)
            report = run_bench(task.path, calib=calib, compiled_path=path, repeats=args.repeats, int8=False)
            results.setdefault(key, {})[label] = report["rows"]
    args.out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(args.out / "results.json", json.dumps(results, indent=2).encode())
    print(summary(results))
    return results


if __name__ == "__main__":
    main()
