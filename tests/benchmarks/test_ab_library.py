"""benchmarks.ab_library: two builds of the library (here the same one twice) on one compiled model, interleaved."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from benchmarks import ab_library
from tests import model_factory
from wqcompile import runtime

pytestmark = pytest.mark.requires_ops_lib


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from wqcompile.api import compile_model
    from wqcompile.config import QuantConfig

    d = tmp_path_factory.mktemp("ab")
    fp32 = model_factory.tiny_cnn()
    onnx.save(fp32, d / "fp32.onnx")
    onnx.save(compile_model(fp32, model_factory.calib_data(16), QuantConfig(progress=False, verify_samples=1)).model,
              d / "compiled.onnx")
    np.savez(d / "calib.npz", **model_factory.calib_data(8))
    return d


def test_same_build_twice_prints_paired_ratios(models, capsys):
    lib = runtime.get_library_path()
    ab_library.main([str(models / "fp32.onnx"), str(models / "compiled.onnx"), "--calib", str(models / "calib.npz"),
                     "--base", lib, "--new", lib, "--new-env", "WQCOMPILE_NO_FUSION=1", "--rounds", "5",
                     "--batch", "2"])
    out = capsys.readouterr().out
    assert "threads 1 batch 2, 5 rounds" in out and "new/base per round: median" in out


def test_ab_returns_medians_and_quartiles(models):
    fp32 = onnx.load(models / "fp32.onnx")
    compiled = onnx.load(models / "compiled.onnx")
    lib = runtime.get_library_path()
    r = ab_library.ab(fp32, compiled, model_factory.calib_data(1), lib, lib, threads=1, rounds=4, warmup=1)
    assert r["fp32_ms"] > 0 and r["base_ms"] > 0 and r["new_ms"] > 0
    assert 0 < r["q1"] <= r["new_vs_base"] <= r["q3"]


def test_bad_arguments_are_refused(models, tmp_path):
    lib = runtime.get_library_path()
    common = [str(models / "fp32.onnx"), str(models / "compiled.onnx"), "--base", lib]
    with pytest.raises(SystemExit):
        ab_library.main(common + ["--new", str(tmp_path / "missing.so")])
    with pytest.raises(SystemExit):
        ab_library.main(common + ["--new", lib, "--new-env", "NOEQUALS"])
