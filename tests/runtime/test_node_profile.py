"""wqcompile.node_profile and ``wqcompile bench --profile``: per-node kernel times of FP32 and compiled models."""

from __future__ import annotations

import numpy as np
import pytest

from tests import model_factory
from wqcompile.node_profile import NodeTime, by_op_type, format_profile, kernel_times

pytestmark_lib = pytest.mark.requires_ops_lib


def _event(node: str, op: str, dur: float) -> dict:
    return {"cat": "Node", "name": f"{node}_kernel_time", "dur": dur, "args": {"op_name": op}}


def test_kernel_times_drop_the_warmup_and_take_medians():
    trace = [{"cat": "Session", "name": "model_run", "dur": 999}]
    for a, b in [(500, 900), (10, 20), (12, 30), (11, 40)]:
        trace += [_event("conv1", "QConv", a), {"cat": "Node", "name": "conv1_fence_before", "dur": 1},
                  _event("fc", "QGemm", b)]
    times = kernel_times(trace, warmup_runs=1)
    assert times == [NodeTime("conv1", "QConv", 11.0), NodeTime("fc", "QGemm", 30.0)]


def test_op_type_totals_and_table():
    fp32 = [NodeTime("a", "Conv", 10.0), NodeTime("b", "Conv", 5.0), NodeTime("c", "Gemm", 1.0)]
    wq = [NodeTime("a", "QConv", 4.0), NodeTime("c", "QGemm", 2.0), NodeTime("d", "Flatten", 0.5)]
    assert by_op_type(fp32) == {"Conv": 15.0, "Gemm": 1.0}
    text = format_profile("title", fp32, wq, top=2)
    lines = text.splitlines()
    assert lines[0] == "title"
    assert "Conv" in lines[2] and "15.0" in lines[2] and "QConv" in lines[2] and "4.0" in lines[2]
    assert "Flatten" in lines[4] and "0.5" in lines[4]           # the longer column continues alone
    assert "16.0" in lines[5] and "6.5" in lines[5]              # totals
    assert lines[-2].strip().startswith("4.0 us") and lines[-1].strip().startswith("2.0 us")   # top 2 only


@pytestmark_lib
def test_bench_profile_prints_every_cell(tmp_path, monkeypatch):
    """`wqcompile bench --profile N` profiles both models in each cell and names the compiled nodes."""
    import onnx
    from click.testing import CliRunner

    from wqcompile.cli import main

    model_path = tmp_path / "tiny.onnx"
    onnx.save(model_factory.tiny_cnn(), model_path)
    calib = tmp_path / "calib.npz"
    np.savez(calib, **model_factory.calib_data(16))
    monkeypatch.chdir(tmp_path)       # onnxruntime would write a trace without a prefix into the working directory
    result = CliRunner().invoke(main, ["bench", str(model_path), "--calib", str(calib), "--batch", "1", "--batch", "2",
                                       "--threads", "1", "--repeats", "2", "--warmup", "1", "--no-int8",
                                       "--profile", "3"])
    assert result.exit_code == 0, result.output
    assert result.output.count("kernel time per op type, median of 3 profiled runs") == 2
    assert "1 thread(s), batch 2" in result.output
    assert "QConv" in result.output and "slowest compiled nodes:" in result.output
    assert list(tmp_path.glob("*.json")) == []        # the traces stay in a temporary directory
