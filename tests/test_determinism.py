"""Compiling the same model twice gives byte-identical files (in one process and across processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from tests.model_factory import calib_data, tiny_cnn
from wqcompile.cli import main

WQCOMPILE = Path(sys.executable).with_name("wqcompile")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("det")
    onnx.save(tiny_cnn(), d / "model.onnx")
    np.savez(d / "calib.npz", **calib_data(48))
    return d / "model.onnx", d / "calib.npz"


def compile_in_process(inputs, out: Path, *flags: str) -> bytes:
    model, calib = inputs
    result = CliRunner().invoke(main, ["compile", str(model), "-o", str(out), "--calib", str(calib), "--no-progress", *flags])
    assert result.exit_code == 0, result.output
    return out.read_bytes()


@pytest.mark.parametrize("flags", [(), ("--weight-quantizer", "kmeans"), ("--abits", "f"),
                                   ("--weight-granularity", "channel", "--act-quantizer", "linear")],
                         ids=["default", "kmeans", "abits-f", "channel-linear"])
def test_two_compiles_are_byte_identical(inputs, tmp_path, flags):
    first = compile_in_process(inputs, tmp_path / "a.onnx", *flags)
    second = compile_in_process(inputs, tmp_path / "b.onnx", *flags)
    assert first == second


def test_byte_identical_across_processes(inputs, tmp_path):
    """Two fresh interpreters with different hash seeds (set/dict order of str keys) and the in-process compile agree."""
    model, calib = inputs
    outputs = []
    for seed, name in (("1", "p1.onnx"), ("2", "p2.onnx")):
        proc = subprocess.run([str(WQCOMPILE), "compile", str(model), "-o", str(tmp_path / name), "--calib", str(calib),
                               "--no-progress", "--weight-quantizer", "kmeans"],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0] == compile_in_process(inputs, tmp_path / "p3.onnx", "--weight-quantizer", "kmeans")
