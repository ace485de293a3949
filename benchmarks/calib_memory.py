"""Peak RSS of calibration with 64 vs 1024 samples: streaming means the two should be about equal.

Each run is a fresh subprocess (max RSS only ever grows within a process), compiling a small CNN with large
activations (3×64×64 input, 16-channel 64×64 feature maps) on batches created lazily by a generator.

    python benchmarks/calib_memory.py [--samples 64 1024] [--batch 32]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

BATCH = 32


def wide_cnn():
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = lambda *s: numpy_helper.from_array((rng.standard_normal(s) * np.sqrt(2 / np.prod(s[1:]))).astype(np.float32))  # noqa: E731
    inits = [w(16, 3, 3, 3), w(16, 16, 3, 3), w(10, 16)]
    for t, name in zip(inits, ("w1", "w2", "w3")):
        t.name = name
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 64, 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def child(n_samples: int, batch: int) -> None:
    import logging

    import numpy as np

    from wqcompile.api import compile_model
    from wqcompile.config import QuantConfig
    from wqcompile.passes import CalibratePass, default_pipeline

    logging.disable(logging.WARNING)

    def batches():
        rng = np.random.default_rng(0)
        for start in range(0, n_samples, batch):
            yield {"input": rng.random((min(batch, n_samples - start), 3, 64, 64), dtype=np.float32)}

    def maxrss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    passes = default_pipeline()
    calibrate = next(p for p in passes if isinstance(p, CalibratePass))
    run, after_calib = calibrate.run, []

    def measured_run(graph, ctx):
        result = run(graph, ctx)
        after_calib.append(maxrss())  # the peak so far: everything up to and including calibration
        return result

    calibrate.run = measured_run
    model = wide_cnn()
    base = maxrss()
    result = compile_model(model, batches(), QuantConfig(progress=False), passes=passes)
    assert result.context.calib_samples == n_samples
    print(f"{base} {after_calib[0]} {maxrss()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.batch)
        return
    results = {}
    for n in args.samples:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--batch", str(args.batch)],
                             check=True, capture_output=True, text=True).stdout.split()
        results[n] = [int(v) / 1024 for v in out]  # MiB: before compile, after calibration, after compile
    parts = [f"{n} samples: max RSS {calib:.1f} MiB after calibration, {total:.1f} MiB after compile (start {base:.1f} MiB)"
             for n, (base, calib, total) in results.items()]
    first, last = results[args.samples[0]], results[args.samples[-1]]
    growth = (last[1] - last[0]) / (first[1] - first[0])
    one_batch = args.batch * 16 * 64 * 64 * 4 / 2**20
    print(f"calib_memory (3x64x64 input, batch {args.batch}; one 16x64x64 activation batch = {one_batch:.0f} MiB): "
          + "; ".join(parts) + f"; calibration growth {args.samples[-1]}/{args.samples[0]} samples = {growth:.2f}x")

if __name__ == "__main__":
    main()
