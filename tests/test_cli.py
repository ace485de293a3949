"""The ``wqcompile`` command line: compile (and its flags), inspect, run, --help, --version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import wqcompile
from tests.model_factory import calib_data, tiny_cnn
from wqcompile.cli import main
from wqcompile.inspect import inspect_model
from wqcompile.reference import ReferenceSession

WQCOMPILE = Path(sys.executable).with_name("wqcompile")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    onnx.save(tiny_cnn(), d / "model.onnx")
    np.savez(d / "calib.npz", **calib_data(64))
    np.savez(d / "inputs.npz", **calib_data(5, seed=7))
    return {"dir": d, "model": d / "model.onnx", "calib": d / "calib.npz", "inputs": d / "inputs.npz"}


def invoke(*args) -> "click.testing.Result":  # noqa: F821
    result = CliRunner().invoke(main, [str(a) for a in args], prog_name="wqcompile")
    assert "Traceback" not in result.output
    return result


def compile_ok(files, out: Path, *flags):
    result = invoke("compile", files["model"], "-o", out, "--calib", files["calib"], "--no-progress", *flags)
    assert result.exit_code == 0, result.output
    assert out.is_file()
    return result


def ops_by_node(path: Path) -> dict[str, str]:
    return {n.name: n.op_type for n in onnx.load(path).graph.node}


@pytest.fixture(scope="module")
def compiled(files) -> Path:
    out = files["dir"] / "compiled.onnx"
    compile_ok(files, out)
    return out


# --- compile -----------------------------------------------------------------------------------------------------

def test_compile_happy_path_writes_model_report_and_prints_summary(files, tmp_path):
    out, report = tmp_path / "out.onnx", tmp_path / "report"
    result = compile_ok(files, out, "--report", report)
    assert {p.name for p in report.iterdir()} == {"report.json", "report.md", "weight_histogram.png"}
    assert json.loads((report / "report.json").read_text())["summary"]["compiled_file_bytes"] == out.stat().st_size
    assert (report / "weight_histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    relu = next(l for l in (report / "report.md").read_text().splitlines() if l.startswith("| relu1 |"))
    assert "| 4, lloyd |" in relu                       # the activation bits and which quantizer chose the levels
    lines = result.stdout.splitlines()
    assert lines[0] == f"compiled {files['model']} -> {out}"
    size = next(line for line in lines if line.strip().startswith("size:"))
    assert f"{files['model'].stat().st_size:,} B -> {out.stat().st_size:,} B" in size and "x smaller" in size
    assert any("output SQNR" in line and " dB" in line for line in lines)
    assert any("on 64 calibration samples" in line for line in lines)
    model = onnx.load(out)
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["wqcompile.version"] == wqcompile.__version__
    assert json.loads(meta["wqcompile.config"])["weight_bits"] == 4
    assert {n.op_type for n in model.graph.node} >= {"QConv", "QGemm"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "report"]  # no temp files left beside it


def test_compile_in_a_real_subprocess(files, tmp_path):
    out = tmp_path / "sub.onnx"
    proc = subprocess.run([str(WQCOMPILE), "compile", str(files["model"]), "-o", str(out), "--calib", str(files["calib"]),
                           "--no-progress", "--max-calib-samples", "32"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "size:" in proc.stdout and "on 32 calibration samples" in proc.stdout
    assert inspect_model(out)["config"]["max_calib_samples"] == 32


def test_wbits_f_leaves_weights_in_float(files, tmp_path):
    out = tmp_path / "a_only.onnx"
    compile_ok(files, out, "--wbits", "f")
    ops = ops_by_node(out)
    assert [ops[n] for n in ("conv1", "conv2", "fc1", "fc2")] == ["Conv", "Conv", "Gemm", "Gemm"]
    assert "QRelu" in ops.values()
    assert inspect_model(out)["config"]["weight_bits"] is None


def test_abits_f_leaves_activations_in_float(files, tmp_path):
    out = tmp_path / "w_only.onnx"
    compile_ok(files, out, "--abits", "f")
    info = inspect_model(out)
    assert info["config"]["act_bits"] is None
    assert {r["op"] for r in info["layers"]} == {"QConv", "QGemm"}
    assert all(r["input"] == "float" and r["output"] == "float" for r in info["layers"])
    assert info["other_ops"]["Relu"] == 3


@pytest.mark.parametrize("pattern, kept", [
    ("conv1", {"conv1"}),                     # a node name
    ("Gemm", {"fc1", "fc2"}),                 # an op type
    ("fc.*", {"fc1", "fc2"}),                 # a regex over names
    ("conv[12]", {"conv1", "conv2"}),
])
def test_exclude(files, tmp_path, pattern, kept):
    out = tmp_path / "excl.onnx"
    compile_ok(files, out, "--exclude", pattern)
    ops = ops_by_node(out)
    for name in ("conv1", "conv2", "fc1", "fc2"):
        assert ops[name].startswith("Q") == (name not in kept), (name, ops[name])


def test_exclude_repeatable(files, tmp_path):
    out = tmp_path / "excl2.onnx"
    compile_ok(files, out, "--exclude", "conv1", "--exclude", "fc2")
    ops = ops_by_node(out)
    assert (ops["conv1"], ops["conv2"], ops["fc1"], ops["fc2"]) == ("Conv", "QConv", "QGemm", "Gemm")


def test_override_bits_of_one_layer(files, tmp_path):
    out = tmp_path / "ovr.onnx"
    compile_ok(files, out, "--override", "conv1=wbits:8")
    rows = {r["node"]: r for r in inspect_model(out)["layers"]}
    assert {n: rows[n]["w_bits"] for n in ("conv1", "conv2", "fc1", "fc2")} == {"conv1": 8, "conv2": 4, "fc1": 4, "fc2": 4}
    assert rows["conv1"]["packed_bytes"] == 216 and rows["conv2"]["packed_bytes"] == 144  # 8 vs 4 bits per weight


def test_override_later_wins(files, tmp_path):
    out = tmp_path / "ovr2.onnx"
    compile_ok(files, out, "--override", "Gemm=wbits:2", "--override", "fc2=wbits:6")
    rows = {r["node"]: r["w_bits"] for r in inspect_model(out)["layers"] if "w_bits" in r}
    assert rows == {"conv1": 4, "conv2": 4, "fc1": 2, "fc2": 6}


# --- inspect -------------------------------------------------------------------------------------------------------

def test_inspect_table(compiled):
    result = invoke("inspect", compiled)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{compiled}: wqcompile {wqcompile.__version__}, {compiled.stat().st_size:,} bytes"
    assert "wbits=4 abits=4 weights=wq activations=auto" in lines[1]
    assert lines[2].split() == ["node", "op", "w", "bits", "weights", "packed", "B", "input", "output"]
    conv1 = next(line.split() for line in lines if line.split()[:1] == ["conv1"])
    assert conv1 == ["conv1", "QConv", "4", "216", "108", "float", "levels(16)"]
    assert lines[-1].startswith("  other ops: ")


def test_inspect_json(compiled):
    result = invoke("inspect", compiled, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info == json.loads(json.dumps(inspect_model(compiled)))
    assert info["tool_version"] == wqcompile.__version__ and info["file_bytes"] == compiled.stat().st_size
    assert [r["node"] for r in info["layers"] if r["op"] in ("QConv", "QGemm")] == ["conv1", "conv2", "fc1", "fc2"]


def test_inspect_a_model_not_compiled_by_wqcompile(files):
    result = invoke("inspect", files["model"])
    assert result.exit_code == 0
    assert "(not compiled by wqcompile)" in result.stdout


# --- run -----------------------------------------------------------------------------------------------------------

def test_run_matches_the_reference_session(files, compiled, tmp_path):
    out = tmp_path / "outputs.npz"
    result = invoke("run", compiled, "--inputs", files["inputs"], "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote logits to {out}"
    with np.load(out) as got:
        assert got.files == ["logits"]
        logits = got["logits"]
    (expected,) = ReferenceSession(compiled).run(None, calib_data(5, seed=7))
    np.testing.assert_array_equal(logits, expected)
    assert logits.shape == (5, 10)


# --- help and version ----------------------------------------------------------------------------------------------

def test_python_dash_m_help():
    proc = subprocess.run([sys.executable, "-m", "wqcompile", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    for command in ("compile", "inspect", "run"):
        assert command in proc.stdout


def test_subcommand_help_lists_the_flags():
    result = invoke("compile", "-h")
    assert result.exit_code == 0
    for flag in ("--wbits", "--abits", "--exclude", "--override", "--calib", "--report", "--weight-quantizer"):
        assert flag in result.stdout


def test_version():
    proc = subprocess.run([str(WQCOMPILE), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wqcompile, version {wqcompile.__version__}"
    assert invoke("--version").stdout.strip() == proc.stdout.strip()
    module = subprocess.run([sys.executable, "-m", "wqcompile", "--version"], capture_output=True, text=True, timeout=60)
    assert module.returncode == 0 and module.stdout.strip().endswith(f"version {wqcompile.__version__}")
