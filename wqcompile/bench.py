"""``wqcompile bench``: latency of the FP32 model, our compiled model and onnxruntime's INT8 QDQ model, side by side.

All three run on onnxruntime's CPU provider in one process with the same ``intra_op_num_threads`` (and one inter-op
thread, sequential execution). For every (threads, batch) pair the three sessions are warmed up, then timed
*interleaved* (one run of each per round, the order rotating every round) so machine noise hits all three alike.
The table reports each model's median latency and, as the ratios, the medians of the *per-round* ratios (WQ/FP32,
INT8/FP32, WQ/INT8) with the quartiles of WQ/FP32's: each round's runs are well under a second apart, so the
machine's drift cancels in them (a ratio whose quartiles straddle 1.0 is a tie on this machine, not a win or a
loss). The ratio of the two medians is printed next to it ("of med."). They agree when the machine is steady; when
it changes speed during a cell they do not, and the ratio of medians is then the wrong one: each median can fall in
a different phase (one cell read 1.21 as a ratio of medians while three quarters of its rounds were below 0.99).
With several threads each timed run is preceded by 100 ms of untimed runs of the same session (SETTLE_SECONDS), so
the other sessions' spinning pool threads are asleep and do not steal the cores.

The INT8 baseline is what every onnxruntime user already has: ``onnxruntime.quantization.quantize_static``, QDQ
format, per-channel weights, MinMax calibration, on the same calibration data as our compiler.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort

logger = logging.getLogger(__name__)

DEFAULT_CALIB_SAMPLES = 64
# With more than one thread, each session has its own intra-op pool whose idle workers spin for a while after a
# run (onnxruntime's default) and would steal the cores from the next session's timed run. So before each timed
# run the session runs untimed for at least this long: the other pools' workers go to sleep and its own caches are
# warm, and every run is measured as if its session were alone in the process. 5 ms was not enough on a 2-core
# machine: one of the two sessions at 2 threads then often ran at its 1-thread speed (MobileNetV2 FP32 batch 1:
# 2.4-8 ms interleaved against 2.0 ms alone); with 100 ms both match their alone-in-the-process medians.
SETTLE_SECONDS = 0.1


@dataclass
class BenchRow:
    threads: int
    batch: int
    fp32_ms: float
    wq_ms: float
    int8_ms: float | None
    # quartiles (q1, q3) of the per-round ratios wq / fp32 (rounds pair runs that are close in time)
    wq_vs_fp32_quartiles: tuple[float, float] | None = None
    # medians of the per-round ratios (None: not measured in rounds; the ratios then fall back to the medians')
    wq_vs_fp32_paired: float | None = None
    int8_vs_fp32_paired: float | None = None
    wq_vs_int8_paired: float | None = None

    @property
    def wq_vs_fp32(self) -> float:
        """The headline ratio: the median of the per-round ratios (see the module docstring)."""
        return self.wq_vs_fp32_paired if self.wq_vs_fp32_paired is not None else self.wq_vs_fp32_of_medians

    @property
    def wq_vs_fp32_of_medians(self) -> float:
        return self.wq_ms / self.fp32_ms

    @property
    def int8_vs_fp32(self) -> float | None:
        if self.int8_ms is None:
            return None
        return self.int8_vs_fp32_paired if self.int8_vs_fp32_paired is not None else self.int8_ms / self.fp32_ms

    @property
    def wq_vs_int8(self) -> float | None:
        if self.int8_ms is None:
            return None
        return self.wq_vs_int8_paired if self.wq_vs_int8_paired is not None else self.wq_ms / self.int8_ms

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(wq_vs_fp32=self.wq_vs_fp32, wq_vs_fp32_of_medians=self.wq_vs_fp32_of_medians,
                 int8_vs_fp32=self.int8_vs_fp32, wq_vs_int8=self.wq_vs_int8)
        return d


def _input_specs(model: onnx.ModelProto) -> list[tuple[str, list[int | None], np.dtype]]:
    from wqcompile.calib.readers import InputSpec

    return [(s.name, list(s.dims), s.dtype) for s in InputSpec.from_model(model)]


def with_dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose graph inputs and outputs have a symbolic first dimension (so batch 32 can run)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in [*out.graph.input, *out.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and vi.name not in {i.name for i in out.graph.initializer}:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    return out


def calibration_feeds(model: onnx.ModelProto, calib: Any, samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Calibration data as one feed dict of ``samples`` samples: from ``calib`` (anything ``wqcompile compile``
    accepts) or, without it, standard-normal random data of the model's input shapes."""
    if calib is not None:
        from wqcompile.calib.readers import InputSpec, iter_batches

        parts: dict[str, list[np.ndarray]] = {}
        count = 0
        for feed in iter_batches(calib, InputSpec.from_model(model)):
            for k, v in feed.items():
                parts.setdefault(k, []).append(v)
            count += next(iter(feed.values())).shape[0]
            if count >= samples:
                break
        return {k: np.concatenate(v)[:samples] for k, v in parts.items()}
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, dims, dtype in _input_specs(model):
        shape = [samples] + [d if d is not None else 1 for d in dims[1:]]
        feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def batch_of(feeds: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The first ``batch`` samples, repeating the data when there are fewer."""
    out = {}
    for k, v in feeds.items():
        reps = -(-batch // v.shape[0])
        out[k] = np.ascontiguousarray(np.concatenate([v] * reps)[:batch])
    return out


def quantize_int8(model: onnx.ModelProto, feeds: dict[str, np.ndarray], workdir: Path) -> onnx.ModelProto:
    """onnxruntime's static INT8 QDQ quantization (per-channel, MinMax) on the same calibration samples."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            n = next(iter(feeds.values())).shape[0]
            self._it = iter([{k: v[i:i + 1] for k, v in feeds.items()} for i in range(n)])

        def get_next(self):
            return next(self._it, None)

    src, dst = workdir / "fp32.onnx", workdir / "int8.onnx"
    onnx.save(model, src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return onnx.load(dst)


def session_options(threads: int) -> ort.SessionOptions:
    """The options every timed session gets: ``threads`` intra-op threads, one inter-op, sequential."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return so


def open_session(model: onnx.ModelProto, so: ort.SessionOptions, ours: bool) -> ort.InferenceSession:
    """``model`` on onnxruntime's CPU provider, with our library registered when ``ours``."""
    if ours:
        from wqcompile.runtime import InferenceSession

        return InferenceSession(model, so)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _session(model: onnx.ModelProto, threads: int, ours: bool) -> ort.InferenceSession:
    return open_session(model, session_options(threads), ours)


def profile_cells(model: onnx.ModelProto, compiled: onnx.ModelProto, feeds: dict[str, np.ndarray], *,
                  batches: Sequence[int], threads: Sequence[int], runs: int, warmup: int) -> list[str]:
    """Per-node kernel times (onnxruntime's profiler) of the FP32 and the compiled model in every cell, formatted."""
    from wqcompile.node_profile import format_profile, profile_session

    out = []
    for t in threads:
        for b in batches:
            feed = batch_of(feeds, b)

            def profile(m: onnx.ModelProto, ours: bool) -> list:
                return profile_session(lambda so: open_session(m, so, ours), session_options(t), feed, runs, warmup)

            out.append(format_profile(f"kernel time per op type, median of {runs} profiled runs: "
                                      f"{t} thread(s), batch {b}", profile(model, False), profile(compiled, True)))
    return out


def paired_ratios(num: Sequence[float], den: Sequence[float]) -> tuple[float, float, float]:
    """Quartiles (q1, median, q3) of the per-round ratios num[r] / den[r]."""
    ratios = np.asarray(num, dtype=np.float64) / np.asarray(den, dtype=np.float64)
    q1, med, q3 = np.percentile(ratios, [25, 50, 75])
    return float(q1), float(med), float(q3)


def time_interleaved_rounds(runners: Sequence[Callable[[], Any]], repeats: int, warmup: int,
                            settle: float = 0.0) -> list[list[float]]:
    """Wall times (ms) of each runner per round (``times[i][r]``), timed in rotating interleaved rounds after
    ``warmup`` calls each; with ``settle`` > 0 every timed call follows untimed calls of the same runner for at
    least that long."""
    for run in runners:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runners]
    for r in range(repeats):
        order = list(range(len(runners)))
        order = order[r % len(order):] + order[:r % len(order)]
        for i in order:
            if settle > 0:
                start = time.perf_counter()
                while time.perf_counter() - start < settle:
                    runners[i]()
            t0 = time.perf_counter()
            runners[i]()
            times[i].append((time.perf_counter() - t0) * 1e3)
    return times


def bench(model: onnx.ModelProto, compiled: onnx.ModelProto, int8: onnx.ModelProto | None,
          feeds: dict[str, np.ndarray], *, batches: Sequence[int] = (1, 32), threads: Sequence[int] = (1, 2),
          repeats: int = 20, warmup: int = 3, check_outputs: bool = True) -> list[BenchRow]:
    rows = []
    for t in threads:
        sessions = [_session(model, t, False), _session(compiled, t, True)]
        if int8 is not None:
            sessions.append(_session(int8, t, False))
        for b in batches:
            feed = batch_of(feeds, b)
            if check_outputs:
                shapes = [tuple(s.run(None, feed)[0].shape) for s in sessions]
                if len(set(shapes)) != 1:
                    raise RuntimeError(f"the models disagree on the output shape: {shapes}")
            runners = [lambda s=s: s.run(None, feed) for s in sessions]
            times = time_interleaved_rounds(runners, repeats, warmup, settle=SETTLE_SECONDS if t > 1 else 0.0)
            med = [statistics.median(x) for x in times]
            q1, wq_fp32, q3 = paired_ratios(times[1], times[0])
            row = BenchRow(t, b, med[0], med[1], med[2] if int8 is not None else None, (q1, q3), wq_fp32)
            if int8 is not None:
                row.int8_vs_fp32_paired = paired_ratios(times[2], times[0])[1]
                row.wq_vs_int8_paired = paired_ratios(times[1], times[2])[1]
            rows.append(row)
            logger.info("threads %d batch %d: %s", t, b, med)
    return rows


# FP32's own speed-up from 1 thread to 2 below which a run's 2-thread ratios are flagged. On this 2-core machine
# FP32 gains 1.6-2.0x in the normal phase and 1.0-1.3x in the phase where the second core is far away
# (docs/decisions.md, "Two threads and the other core's cache"); the compiled models lose more there.
MIN_FP32_SPEEDUP = 1.4


def fp32_thread_speedups(rows: Sequence[BenchRow]) -> dict[tuple[int, int], float]:
    """FP32's speed-up over its own 1-thread median, per (threads > 1, batch) measured at 1 thread too."""
    one = {r.batch: r.fp32_ms for r in rows if r.threads == 1}
    return {(r.threads, r.batch): one[r.batch] / r.fp32_ms for r in rows if r.threads > 1 and r.batch in one}


def thread_scaling_notes(rows: Sequence[BenchRow]) -> list[str]:
    """A line per multi-thread cell whose FP32 gained less than MIN_FP32_SPEEDUP from 1 thread to 2 (scaled by
    the thread count): the machine gave that thread count little at the time, so its ratios are not typical."""
    notes = []
    for (t, b), speedup in sorted(fp32_thread_speedups(rows).items()):
        if speedup < 1 + (MIN_FP32_SPEEDUP - 1) * (t - 1):
            notes.append(f"note: FP32 at {t} threads, batch {b}, ran only {speedup:.2f}x faster than at 1 thread: "
                         f"the machine gave the extra threads little during this run (contended, or cores that are "
                         f"slow to share data), so the {t}-thread ratios are not typical; run the bench again")
    return notes


def format_table(title: str, rows: Sequence[BenchRow]) -> str:
    head = (f"{'threads':>7} {'batch':>5} {'FP32 ms':>9} {'WQ ms':>9} {'INT8 ms':>9} {'WQ/FP32':>8} {'(q1-q3)':>11} "
            f"{'of med.':>8} {'INT8/FP32':>9} {'WQ/INT8':>8}")
    lines = [title, head]
    for r in rows:
        i8 = f"{r.int8_ms:9.2f}" if r.int8_ms is not None else f"{'-':>9}"
        i8r = f"{r.int8_vs_fp32:9.2f}" if r.int8_vs_fp32 is not None else f"{'-':>9}"
        wi = f"{r.wq_vs_int8:8.2f}" if r.wq_vs_int8 is not None else f"{'-':>8}"
        q = r.wq_vs_fp32_quartiles
        spread = f"{q[0]:.2f}-{q[1]:.2f}" if q is not None else "-"
        lines.append(f"{r.threads:>7} {r.batch:>5} {r.fp32_ms:9.2f} {r.wq_ms:9.2f} {i8} {r.wq_vs_fp32:8.2f} {spread:>11} "
                     f"{r.wq_vs_fp32_of_medians:8.2f} {i8r} {wi}")
    return "\n".join(lines)


def run_bench(model_path: str | Path, *, calib: Any = None, wbits: str = "4", abits: str = "4",
              compiled_path: str | Path | None = None, batches: Sequence[int] = (1, 32),
              threads: Sequence[int] = (1, 2), repeats: int = 20, warmup: int = 3, int8: bool = True,
              calib_samples: int = DEFAULT_CALIB_SAMPLES, json_out: str | Path | None = None,
              profile_runs: int = 0, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Compile (unless ``compiled_path`` is given), quantize INT8, time, print the table; returns the numbers.
    With ``profile_runs`` > 0, then also profile both models node by node in every cell (``node_profile``)."""
    from wqcompile.api import compile_model
    from wqcompile.config import QuantConfig
    from wqcompile.model_io import load_model

    model = with_dynamic_batch(load_model(model_path))
    feeds = calibration_feeds(model, calib, calib_samples)
    t0 = time.perf_counter()
    if compiled_path is not None:
        compiled = with_dynamic_batch(load_model(compiled_path))
        config = "given"
    else:
        result = compile_model(model, feeds, QuantConfig(weight_bits=wbits, act_bits=abits, progress=False,
                                                         verify_samples=2))
        compiled = with_dynamic_batch(result.model)
        config = f"w{wbits}a{abits}"
    echo(f"compiled {model_path} ({config}) in {time.perf_counter() - t0:.1f} s")
    int8_model = None
    if int8:
        with tempfile.TemporaryDirectory() as tmp:
            int8_model = quantize_int8(model, feeds, Path(tmp))
    rows = bench(model, compiled, int8_model, feeds, batches=batches, threads=threads, repeats=repeats,
                 warmup=warmup)
    title = (f"{Path(model_path).name} {config}: median latency over {repeats} interleaved rounds; ratios: median of "
             "the per-round ratios (q1-q3: WQ/FP32's quartiles; of med.: WQ ms / FP32 ms)")
    echo(format_table(title, rows))
    for line in thread_scaling_notes(rows):
        echo(line)
    if profile_runs > 0:
        for text in profile_cells(model, compiled, feeds, batches=batches, threads=threads, runs=profile_runs,
                                  warmup=warmup):
            echo(text)
    report = {"model": str(model_path), "config": config, "repeats": repeats, "warmup": warmup,
              "onnxruntime": ort.__version__, "rows": [r.to_dict() for r in rows],
              "fp32_thread_speedup": {f"{t},{b}": v for (t, b), v in fp32_thread_speedups(rows).items()}}
    if json_out is not None:
        Path(json_out).write_text(json.dumps(report, indent=2))
    return report
