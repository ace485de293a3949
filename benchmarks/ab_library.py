"""A/B two builds of the custom-op library on one compiled model, interleaved in one process.

    python -m benchmarks.ab_library MODEL.onnx COMPILED.onnx --calib CALIB.npz \\
        --base /tmp/old/libwq_ops.so --new /tmp/new/libwq_ops.so --threads 2 --batch 1 --rounds 300

This machine's speed drifts by ~10 % between phases that last seconds to minutes. So two builds timed one after the
other differ by more than most kernel changes do. Here the FP32 model, the compiled model on the base library and on
the new one run in rotating rounds (``wqcompile.bench.time_interleaved_rounds``: warm-up, and at 2+ threads 100 ms
of untimed runs before each timed one). The verdict is the median of the per-round new/base ratios: each round's
runs are close in time, so the drift cancels.

``--new-env KEY=VALUE`` (``--base-env``) sets environment variables while the new (base) build's session is created
(a kernel reads its switches then). It runs the same build twice under two settings. The two sessions must give bit-identical
outputs, else the run stops: a speed change must not change the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort

from wqcompile import runtime
from wqcompile.bench import (SETTLE_SECONDS, batch_of, calibration_feeds, open_session, paired_ratios,
                             session_options, time_interleaved_rounds, with_dynamic_batch)


def _session_with(library: Path, env: dict[str, str], model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    """A session of ``model`` on ``library``, opened with ``env`` set (and restored afterwards)."""
    with mock.patch.dict(os.environ, {runtime.ENV_LIBRARY: str(library), **env}):
        return open_session(model, session_options(threads), True)


def ab(fp32: onnx.ModelProto, compiled: onnx.ModelProto, feeds: dict[str, np.ndarray], base: Path, new: Path, *,
       threads: int, rounds: int, warmup: int = 5, new_env: dict[str, str] | None = None,
       base_env: dict[str, str] | None = None) -> dict[str, float]:
    """Median latencies (ms) of FP32, base and new, and the quartiles of the per-round new/base ratios."""
    sessions = [open_session(fp32, session_options(threads), False),
                _session_with(base, base_env or {}, compiled, threads), _session_with(new, new_env or {}, compiled, threads)]
    out_base, out_new = (s.run(None, feeds) for s in sessions[1:])
    for a, b in zip(out_base, out_new):
        if not np.array_equal(a, b):
            raise SystemExit("the two builds give different outputs: an A/B of speed needs identical numbers")
    times = time_interleaved_rounds([lambda s=s: s.run(None, feeds) for s in sessions], rounds, warmup,
                                    settle=SETTLE_SECONDS if threads > 1 else 0.0)
    q1, med, q3 = paired_ratios(times[2], times[1])
    return {"fp32_ms": statistics.median(times[0]), "base_ms": statistics.median(times[1]),
            "new_ms": statistics.median(times[2]), "new_vs_base": med, "q1": q1, "q3": q3}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="the FP32 model")
    p.add_argument("compiled", type=Path, help="the compiled model")
    p.add_argument("--calib", type=Path, default=None, help="calibration data (as for compile); default random")
    p.add_argument("--base", type=Path, required=True, help="the base build of libwq_ops.so")
    p.add_argument("--new", type=Path, required=True, help="the new build of libwq_ops.so")
    p.add_argument("--new-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment while the new build's session is created (repeatable)")
    p.add_argument("--base-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment while the base build's session is created (repeatable)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=100)
    args = p.parse_args(argv)
    for lib in (args.base, args.new):
        if not lib.is_file():
            p.error(f"{lib}: no such library")
    bad = [e for e in args.new_env + args.base_env if "=" not in e]
    if bad:
        p.error(f"--new-env and --base-env take KEY=VALUE, got {bad[0]!r}")
    fp32 = with_dynamic_batch(onnx.load(args.model))
    compiled = with_dynamic_batch(onnx.load(args.compiled))
    feeds = batch_of(calibration_feeds(fp32, args.calib, 64), args.batch)
    r = ab(fp32, compiled, feeds, args.base, args.new, threads=args.threads, rounds=args.rounds,
           new_env=dict(e.split("=", 1) for e in args.new_env),
           base_env=dict(e.split("=", 1) for e in args.base_env))
    print(f"threads {args.threads} batch {args.batch}, {args.rounds} rounds: FP32 {r['fp32_ms']:.3f} ms, "
          f"base {r['base_ms']:.3f} ms ({r['base_ms'] / r['fp32_ms']:.3f} x FP32), new {r['new_ms']:.3f} ms "
          f"({r['new_ms'] / r['fp32_ms']:.3f} x FP32); new/base per round: median {r['new_vs_base']:.3f} "
          f"(q1-q3 {r['q1']:.3f}-{r['q3']:.3f})")


if __name__ == "__main__":
    main()
