"""wqcompile.runtime: finding the library, registering it, and the InferenceSession wrapper."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import onnxruntime as ort
import pytest

from tests import model_factory
from tests.runtime.helpers import model_of
from wqcompile import runtime


def test_library_is_built_under_ci():
    """CI must build the library: without this check a missing build would skip the whole folder silently."""
    if os.environ.get("CI", "").lower() != "true":
        pytest.skip("only enforced under CI=true")
    assert runtime.is_available(), runtime.HOW_TO_BUILD


def test_missing_library_says_how_to_build(monkeypatch):
    monkeypatch.delenv(runtime.ENV_LIBRARY, raising=False)
    monkeypatch.setattr(runtime, "_candidates", lambda: [])
    with pytest.raises(FileNotFoundError, match="fetch_ort_headers.sh"):
        runtime.get_library_path()
    assert runtime.is_available() is False


def test_env_override_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv(runtime.ENV_LIBRARY, str(tmp_path / "nope.so"))
    with pytest.raises(FileNotFoundError, match="WQCOMPILE_OPS_LIBRARY"):
        runtime.get_library_path()


pytestmark_lib = pytest.mark.requires_ops_lib


@pytestmark_lib
def test_env_override_is_used(monkeypatch, tmp_path):
    real = runtime.get_library_path()
    copy = tmp_path / "libwq_ops_copy.so"
    shutil.copy(real, copy)
    monkeypatch.setenv(runtime.ENV_LIBRARY, str(copy))
    assert runtime.get_library_path() == str(copy.resolve())


@pytestmark_lib
def test_only_register_custom_ops_is_exported():
    if shutil.which("nm") is None:
        pytest.skip("nm not available")
    out = subprocess.run(["nm", "-D", "--defined-only", runtime.get_library_path()], capture_output=True, text=True,
                         check=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert names == {"RegisterCustomOps"}, names


def _qrelu_model():
    x = np.linspace(-2, 2, 9, dtype=np.float32)
    return model_of("QRelu", [("X", x), ("thresholds", np.float32([-1, 0, 1]))], {}, np.uint8), x


@pytestmark_lib
@pytest.mark.parametrize("form", ["model", "bytes", "path"])
def test_session_accepts_model_bytes_and_path(form, tmp_path):
    model, x = _qrelu_model()
    arg = {"model": model, "bytes": model.SerializeToString(), "path": tmp_path / "m.onnx"}[form]
    if form == "path":
        arg.write_bytes(model.SerializeToString())
        arg = str(arg)
    sess = runtime.InferenceSession(arg)
    assert isinstance(sess, ort.InferenceSession)
    assert [i.name for i in sess.get_inputs()] == ["X"]
    assert sess.get_providers() == ["CPUExecutionProvider"]
    np.testing.assert_array_equal(sess.run(None, {"X": x})[0], [0, 0, 1, 1, 2, 2, 3, 3, 3])


@pytestmark_lib
def test_session_uses_given_options_and_providers():
    model, x = _qrelu_model()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = runtime.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    assert sess.get_session_options().intra_op_num_threads == 1
    assert sess.run(None, {"X": x})[0].dtype == np.uint8


@pytestmark_lib
def test_one_options_object_serves_several_sessions():
    # onnxruntime refuses a session whose options register the same custom-op domain twice
    model, x = _qrelu_model()
    so = ort.SessionOptions()
    first = runtime.InferenceSession(model, so)
    second = runtime.InferenceSession(model, so)
    assert runtime.session_options(so) is so
    for sess in (first, second):
        np.testing.assert_array_equal(sess.run(None, {"X": x})[0], [0, 0, 1, 1, 2, 2, 3, 3, 3])


@pytestmark_lib
def test_options_registered_with_another_library_are_refused():
    so = ort.SessionOptions()
    so.add_session_config_entry("wqcompile.ops_library", "/elsewhere/libwq_ops.so")
    with pytest.raises(ValueError, match="/elsewhere/libwq_ops.so"):
        runtime.session_options(so)


@pytestmark_lib
def test_plain_onnxruntime_needs_the_library():
    model, _ = _qrelu_model()
    with pytest.raises(Exception):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytestmark_lib
def test_unknown_isa_is_an_error(monkeypatch):
    model, _ = _qrelu_model()
    monkeypatch.setenv("WQCOMPILE_ISA", "sse9")
    with pytest.raises(Exception, match="WQCOMPILE_ISA"):
        runtime.InferenceSession(model)


@pytestmark_lib
def test_runs_an_uncompiled_model_too():
    model = model_factory.tiny_cnn()
    x = model_factory.calib_data(2)["input"]
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    np.testing.assert_array_equal(runtime.InferenceSession(model).run(None, {"input": x})[0], expected[0])


@pytestmark_lib
def test_bench_command_prints_the_table_and_json(tmp_path):
    """`wqcompile bench` on the tiny CNN: compiles, quantizes the INT8 baseline, times all three, writes JSON."""
    import json

    import onnx
    from click.testing import CliRunner

    from wqcompile.cli import main

    model_path = tmp_path / "tiny.onnx"
    onnx.save(model_factory.tiny_cnn(), model_path)
    calib = tmp_path / "calib.npz"
    np.savez(calib, **model_factory.calib_data(16))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", str(model_path), "--calib", str(calib), "--batch", "1", "--batch", "4",
                                       "--threads", "1", "--repeats", "3", "--warmup", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "WQ/FP32" in result.output and "INT8/FP32" in result.output
    report = json.loads(out.read_text())
    assert [(r["threads"], r["batch"]) for r in report["rows"]] == [(1, 1), (1, 4)]
    for row in report["rows"]:
        assert row["fp32_ms"] > 0 and row["wq_ms"] > 0 and row["int8_ms"] > 0
        assert row["wq_vs_fp32_of_medians"] == pytest.approx(row["wq_ms"] / row["fp32_ms"])
        q1, q3 = row["wq_vs_fp32_quartiles"]
        assert 0 < q1 <= row["wq_vs_fp32"] == row["wq_vs_fp32_paired"] <= q3
        assert row["int8_vs_fp32"] == row["int8_vs_fp32_paired"] > 0 and row["wq_vs_int8"] == row["wq_vs_int8_paired"] > 0
    assert "(q1-q3)" in result.output and "of med." in result.output


def test_thread_scaling_notes_flag_a_machine_that_gave_fp32_little():
    """A multi-thread cell whose FP32 barely beat its own 1-thread time is flagged (this machine's slow phase);
    normal scaling, and cells without a 1-thread partner, are not."""
    from wqcompile.bench import BenchRow, fp32_thread_speedups, thread_scaling_notes

    rows = [BenchRow(1, 1, 0.05, 0.045, None), BenchRow(1, 32, 1.2, 1.1, None),
            BenchRow(2, 1, 0.045, 0.06, None), BenchRow(2, 32, 0.6, 0.5, None), BenchRow(2, 8, 0.3, 0.2, None)]
    assert fp32_thread_speedups(rows) == pytest.approx({(2, 1): 0.05 / 0.045, (2, 32): 2.0})
    notes = thread_scaling_notes(rows)
    assert len(notes) == 1 and "2 threads, batch 1," in notes[0] and "1.11x" in notes[0]
    assert thread_scaling_notes([BenchRow(1, 1, 0.05, 0.04, None), BenchRow(2, 1, 0.03, 0.03, None)]) == []


def test_paired_ratios_pair_the_rounds():
    """The ratios are per round: a drift that hits both runs of a round alike cancels."""
    from wqcompile.bench import paired_ratios

    fp32 = [1.0, 2.0, 4.0, 8.0, 16.0]          # the machine slows down round after round
    wq = [0.9 * t for t in fp32]
    assert paired_ratios(wq, fp32) == pytest.approx((0.9, 0.9, 0.9))
    assert paired_ratios([1, 2, 3, 4, 5], [1, 1, 1, 1, 1]) == pytest.approx((2.0, 3.0, 4.0))


def test_headline_ratio_is_the_paired_median():
    """Rounds where FP32 ran in a fast stretch and the compiled model in a slow one (the machine switched between
    the two runs of a round): the medians fall in different stretches and their ratio reads 2.7x, while the median
    round reads 0.9x. The headline is the paired median; the ratio of medians stays in the row."""
    from wqcompile.bench import BenchRow, paired_ratios

    fp32 = [1.0, 1.0, 1.0, 3.0, 3.0]
    wq = [0.9, 2.7, 2.7, 2.7, 2.7]
    q1, med, q3 = paired_ratios(wq, fp32)
    assert med == pytest.approx(0.9)
    row = BenchRow(1, 1, 1.0, 2.7, None, (q1, q3), med)
    assert row.wq_vs_fp32 == pytest.approx(0.9) and row.wq_vs_fp32_of_medians == pytest.approx(2.7)
    assert row.to_dict()["wq_vs_fp32"] == pytest.approx(0.9)
    assert BenchRow(1, 1, 1.0, 2.0, None).wq_vs_fp32 == pytest.approx(2.0)   # no rounds: the medians' ratio


@pytestmark_lib
def test_level_maxpool_rewrite_keeps_the_input_model():
    from tests import model_factory as mf
    from wqcompile.api import compile_model
    from wqcompile.config import QuantConfig

    compiled = compile_model(mf.tiny_cnn(), mf.calib_data(16), QuantConfig(progress=False, verify_samples=1)).model
    before = compiled.SerializeToString()
    rewritten, changed = runtime.with_level_maxpool(compiled)
    assert changed == 1 and compiled.SerializeToString() == before
    assert [n.op_type for n in rewritten.graph.node].count("LevelMaxPool") == 1
    x = mf.calib_data(3, seed=5)["input"]
    plain = runtime.InferenceSession(compiled, rewrite=False).run(None, {"input": x})[0]
    fast = runtime.InferenceSession(compiled).run(None, {"input": x})[0]
    np.testing.assert_array_equal(plain, fast)
