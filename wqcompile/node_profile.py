"""Where a model's time goes, node by node: onnxruntime's own profiler on the FP32 and the compiled model.

``wqcompile bench --profile`` prints, for each (threads, batch) cell, the kernel time per op type of both models
side by side and the compiled model's slowest nodes. The whole-run medians of the timing table say *whether* the
compiled model is faster; this says *which layers* are not (e.g. ResNet-50's residual joins, or a layer that gains
nothing from a second thread).

Times are medians over the profiled runs of each node's ``*_kernel_time`` event (microseconds), after warm-up runs
that are dropped. Profiling adds a few microseconds per node, so the sums run above the timing table's latencies.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnxruntime as ort

KERNEL_SUFFIX = "_kernel_time"


@dataclass(frozen=True)
class NodeTime:
    name: str
    op_type: str
    us: float   # median kernel time per run


def kernel_times(trace: list[dict], warmup_runs: int) -> list[NodeTime]:
    """Median kernel time of every node in an onnxruntime profile trace (the JSON list), in first-run order, each
    node's first ``warmup_runs`` events dropped."""
    per_node: dict[str, list[float]] = defaultdict(list)
    op_of: dict[str, str] = {}
    for event in trace:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith(KERNEL_SUFFIX):
            continue
        node = name[: -len(KERNEL_SUFFIX)]
        op_of.setdefault(node, event.get("args", {}).get("op_name", "?"))
        per_node[node].append(float(event["dur"]))
    out = []
    for node, durations in per_node.items():
        kept = durations[warmup_runs:] or durations
        out.append(NodeTime(node, op_of[node], statistics.median(kept)))
    return out


def profile_session(open_session: Callable[[ort.SessionOptions], ort.InferenceSession],
                    options: ort.SessionOptions, feeds: dict[str, np.ndarray], runs: int,
                    warmup: int) -> list[NodeTime]:
    """Open a session with profiling on (``open_session(options)``), run it ``warmup + runs`` times, return the
    per-node medians. The trace goes to a temporary directory that is removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = open_session(options)
        for _ in range(warmup + runs):
            session.run(None, feeds)
        trace = json.loads(Path(session.end_profiling()).read_text())
    return kernel_times(trace, warmup)


def by_op_type(times: Sequence[NodeTime]) -> dict[str, float]:
    """Summed kernel time per op type, largest first."""
    totals: dict[str, float] = defaultdict(float)
    for t in times:
        totals[t.op_type] += t.us
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def format_profile(title: str, fp32: Sequence[NodeTime], wq: Sequence[NodeTime], top: int = 8) -> str:
    """Op-type totals of both models side by side, then the compiled model's ``top`` slowest nodes."""
    lines = [title, f"  {'FP32 op type':<24}{'us':>9}   {'compiled op type':<24}{'us':>9}"]
    a, b = list(by_op_type(fp32).items()), list(by_op_type(wq).items())
    for i in range(max(len(a), len(b))):
        left = f"{a[i][0]:<24}{a[i][1]:>9.1f}" if i < len(a) else " " * 33
        right = f"{b[i][0]:<24}{b[i][1]:>9.1f}" if i < len(b) else ""
        lines.append(f"  {left}   {right}".rstrip())
    lines.append(f"  {'total':<24}{sum(t.us for t in fp32):>9.1f}   {'total':<24}{sum(t.us for t in wq):>9.1f}")
    lines.append("  slowest compiled nodes:")
    for t in sorted(wq, key=lambda t: -t.us)[:top]:
        lines.append(f"    {t.us:9.1f} us  {t.op_type:<22} {t.name}")
    return "\n".join(lines)
