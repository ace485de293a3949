"""README command 1: compile the embedded Fashion-MNIST CNN at (4,4) with the CLI and evaluate it.

Prints FP32 (onnxruntime) vs compiled (numpy reference) top-1 accuracy on the official 10k test set, the file
sizes, and where the report is. Run from the repository root: ``python -m models.fashion_mnist.demo``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from models import datasets
from models.evaluate import accuracy, make_runner

HERE = Path(__file__).resolve().parent
MODEL = HERE / "fashion_cnn.onnx"
CALIB = HERE / "calib.npz"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/demo"))
    parser.add_argument("--wbits", default="4")
    parser.add_argument("--abits", default="4")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images only")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    compiled = args.out / f"fashion_cnn.w{args.wbits}a{args.abits}.onnx"
    report = args.out / "report"
    cmd = [sys.executable, "-m", "wqcompile", "compile", str(MODEL), "-o", str(compiled), "--calib", str(CALIB),
           "--wbits", args.wbits, "--abits", args.abits, "--report", str(report)]
    print("$ wqcompile " + " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True)

    x, y = datasets.load_fashion_mnist("test")
    x = datasets.fashion_normalize(x)
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    start = time.perf_counter()
    fp32 = accuracy(make_runner(MODEL, "ort"), x, y)
    mid = time.perf_counter()
    from wqcompile import runtime

    engine = "wqcompile" if runtime.is_available() else "reference"
    quant = accuracy(make_runner(compiled, engine), x, y)
    end = time.perf_counter()
    fp32_size, q_size = MODEL.stat().st_size, compiled.stat().st_size
    print()
    print(f"Fashion-MNIST official test set ({len(y)} images)")
    print(f"  FP32 (onnxruntime)                     top-1 {fp32:.2%}   ({mid - start:.1f} s)")
    where = "onnxruntime + libwq_ops" if engine == "wqcompile" else "numpy reference"
    print(f"  wqcompile ({args.wbits},{args.abits}) ({where})   top-1 {quant:.2%}   ({end - mid:.1f} s)"
          f"   change {100 * (quant - fp32):+.2f} points")
    print(f"  file size: {fp32_size:,} B -> {q_size:,} B ({fp32_size / q_size:.2f}x smaller)")
    print(f"  report: {report / 'report.md'}, {report / 'report.json'}, {report / 'weight_histogram.png'}")


if __name__ == "__main__":
    main()
