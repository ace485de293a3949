"""Bad input through the CLI: a one-line "Error: ..." naming the file / input / tensor, a non-zero exit code, no
traceback, inputs byte-identical afterwards, and nothing (no output, no temp file) written."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from tests.model_factory import calib_data, tiny_cnn
from wqcompile.cli import main

WQCOMPILE = Path(sys.executable).with_name("wqcompile")


# --- builders: each writes its inputs into `d` and returns (extra argv, substrings the error must contain) -------------

def model_bytes(model: onnx.ModelProto | None = None) -> bytes:
    return (model or tiny_cnn()).SerializeToString()


def with_weight(value: float, tensor: str = "w1", index=(0, 0, 0, 0), bits: int | None = None) -> bytes:
    model = tiny_cnn()
    init = next(i for i in model.graph.initializer if i.name == tensor)
    w = numpy_helper.to_array(init).copy()
    w[index] = value
    if bits is not None:  # an exact bit pattern, e.g. a signalling NaN
        w.view(np.uint32)[index] = bits
    init.CopyFrom(numpy_helper.from_array(w, tensor))
    return model.SerializeToString()


def with_opset(version: int) -> bytes:
    model = tiny_cnn()
    model.opset_import[0].version = version
    return model.SerializeToString()  # not checked: onnx.checker would refuse opset 30 itself


def checker_failure() -> bytes:
    """Valid protobuf, built without running the checker: node 'bad_relu' reads the undefined tensor 'ghost'."""
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4])  # noqa: E731
    graph = helper.make_graph([helper.make_node("Relu", ["ghost"], ["y"], name="bad_relu")], "g", [vi("input")], [vi("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def flip_middle(data: bytes, n: int = 16) -> bytes:
    """Overwrite n bytes in the middle with 0xFF (in tiny_cnn that is inside fc1's weights: they become NaN)."""
    b, mid = bytearray(data), len(data) // 2
    b[mid:mid + n] = b"\xff" * n
    return bytes(b)


def flip_structure(data: bytes) -> bytes:
    """XOR the bytes of the node name 'conv2' inside the graph: the protobuf still parses, the strings do not."""
    b, at = bytearray(data), data.index(b"conv2")
    for i in range(at, at + 5):
        b[i] ^= 0xFF
    return bytes(b)


def write_calib(d: Path, **arrays) -> None:
    np.savez(d / "calib.npz", **(arrays or calib_data(8)))


def bad_calib(**arrays):
    def build(d: Path):
        write_calib(d, **arrays)
        return [], ["calib.npz"]
    return build


def bad_model(data, *expect: str, names_file: bool = True):
    def build(d: Path):
        (d / "model.onnx").write_bytes(data() if callable(data) else data)
        return [], ["model.onnx", *expect] if names_file else list(expect)
    return build


def nan_in_calibration(value: float):
    x = calib_data(8)["input"]
    x[5, 2, 1, 0] = value
    return bad_calib(input=x)


def text_model(d: Path):
    (d / "model.onnx").write_text("ir_version: 8\nthis is a text file, not a model\n")
    return [], ["model.onnx", "not a valid ONNX model"]


def missing_model(d: Path):
    (d / "model.onnx").unlink()
    return [], ["model.onnx", "no such model file"]


def empty_calib_dir(d: Path):
    (d / "calib.npz").unlink()
    (d / "calib").mkdir()
    return ["--calib", str(d / "calib")], ["calib", "no .npz or .npy"]


def missing_calib(d: Path):
    (d / "calib.npz").unlink()
    return [], ["calib.npz", "not found"]


def flags(*argv: str, expect: tuple[str, ...]):
    return lambda d: (list(argv), list(expect))


def output_is_input(spelling: str):
    def build(d: Path):
        (d / "a").mkdir()
        return ["-o", str(d / spelling)], ["model.onnx", "same as the input"]
    return build


def output_is_input_relative(d: Path):
    return ["-o", os.path.relpath(d / "model.onnx")], ["model.onnx", "same as the input"]


def output_is_symlink_to_input(d: Path):
    (d / "out" / "link.onnx").symlink_to(d / "model.onnx")
    return ["-o", str(d / "out" / "link.onnx")], ["link.onnx", "same as the input"]


def calib_not_npz(d: Path):
    (d / "calib.npz").write_text("1,2,3\n")
    return [], ["calib.npz", "not a readable .npz"]


def output_is_calib(d: Path):
    return ["-o", str(d / "calib.npz")], ["calib.npz", "same as the input"]


def output_in_missing_dir(d: Path):
    return ["-o", str(d / "nope" / "deeper" / "out.onnx")], ["nope", "does not exist"]


def report_under_a_file(d: Path):
    return ["--report", str(d / "model.onnx" / "report")], ["model.onnx", "report directory"]


def unwritable_output_dir(d: Path):
    locked = d / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores the mode bits
        locked.chmod(0o700)
        pytest.skip("running as root: a 0o500 directory is still writable (the missing-parent case covers this path)")
    return ["-o", str(locked / "out.onnx")], ["locked", "not writable"]


SIGNALLING_NAN = 0x7F800001  # numpy warns "invalid value encountered in cast" when this is cast to float64

CASES = {
    "random-bytes": bad_model(np.random.default_rng(0).bytes(4096), "not a valid ONNX model"),
    "text-file": text_model,
    "empty-file": bad_model(b"", "empty"),
    "truncated": bad_model(lambda: model_bytes()[: len(model_bytes()) // 2], "not a valid ONNX model"),
    "corrupt-middle": bad_model(lambda: flip_middle(model_bytes()), "'fc1'", "'w3'", "NaN", names_file=False),
    "corrupt-structure": bad_model(lambda: flip_structure(model_bytes()), "graph.node[3].name", "not valid UTF-8"),
    "checker": bad_model(checker_failure, "onnx.checker", "'ghost'", "bad_relu"),
    "missing-model": missing_model,
    "calib-unknown-name": bad_calib(image=calib_data(8)["input"]),
    "calib-extra-name": bad_calib(input=calib_data(8)["input"], mask=np.zeros((8, 1), np.float32)),
    "calib-wrong-shape": bad_calib(input=np.zeros((8, 3, 10, 12), np.float32)),
    "calib-wrong-rank": bad_calib(input=np.zeros((8, 12, 12), np.float32)),
    "calib-float64": bad_calib(input=calib_data(8)["input"].astype(np.float64)),
    "calib-int32": bad_calib(input=np.zeros((8, 3, 12, 12), np.int32)),
    "calib-zero-samples": bad_calib(input=np.zeros((0, 3, 12, 12), np.float32)),
    "calib-empty-dir": empty_calib_dir,
    "calib-missing": missing_calib,
    "calib-not-npz": calib_not_npz,
    "calib-nan": nan_in_calibration(np.nan),
    "calib-inf": nan_in_calibration(np.inf),
    "calib-neg-inf": nan_in_calibration(-np.inf),
    "weight-nan": bad_model(lambda: with_weight(np.nan), "'conv1'", "'w1'", "NaN or Inf", names_file=False),
    "weight-inf": bad_model(lambda: with_weight(np.inf, "w4", (3, 7)), "'fc2'", "'w4'", "NaN or Inf", names_file=False),
    "opset-6": bad_model(lambda: with_opset(6), "opset 6"),
    "opset-30": bad_model(lambda: with_opset(30), "opset 30"),
    "wbits-0": flags("--wbits", "0", expect=("weight bits", "got 0")),
    "wbits-9": flags("--wbits", "9", expect=("weight bits", "got 9")),
    "wbits-x": flags("--wbits", "x", expect=("weight bits", "'x'")),
    "abits-17": flags("--abits", "17", expect=("activation bits", "got 17")),
    "override-bits-9": flags("--override", "conv1=wbits:9", expect=("conv1", "got 9")),
    "override-garbage": flags("--override", "conv1", expect=("'conv1'", "PATTERN=")),
    "max-calib-samples-0": flags("--max-calib-samples", "0", expect=("max calibration samples", "got 0")),
    "output-is-input": output_is_input("model.onnx"),
    "output-is-input-dotdot": output_is_input("a/../model.onnx"),
    "output-is-input-relative": output_is_input_relative,
    "output-is-symlink-to-input": output_is_symlink_to_input,
    "output-is-calib": output_is_calib,
    "output-dir-missing": output_in_missing_dir,
    "output-dir-unwritable": unwritable_output_dir,
    "report-dir-under-a-file": report_under_a_file,
}

# the real binary on the cases that get deepest into the pipeline (real stderr: logging, Python warnings)
SUBPROCESS_CASES = ["random-bytes", "checker", "corrupt-structure", "calib-unknown-name", "calib-nan", "weight-nan",
                    "opset-30", "wbits-x", "output-is-input-dotdot"]


# --- the checks ----------------------------------------------------------------------------------------------------

def tree(root: Path) -> dict[str, str]:
    """Every file under root with its sha256 (directories as 'dir'): any write, temp file or change shows up."""
    out = {}
    for p in sorted(root.rglob("*")):
        kind = f"link -> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else ""
        out[str(p.relative_to(root))] = kind or hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def prepare(tmp_path: Path, case: str) -> tuple[list[str], list[str]]:
    d = tmp_path
    (d / "model.onnx").write_bytes(model_bytes())
    write_calib(d)
    (d / "out").mkdir()
    extra, expect = CASES[case](d)
    argv = ["compile", str(d / "model.onnx"), "-o", str(d / "out" / "compiled.onnx"), "--calib", str(d / "calib.npz"),
            "--no-progress"]
    for i in range(0, len(extra), 2):  # a later flag wins in click, so replace rather than append -o / --calib
        if extra[i] in argv:
            argv[argv.index(extra[i]) + 1] = extra[i + 1]
        else:
            argv += extra[i:i + 2]
    return argv, expect


def assert_one_line_error(text: str, expect: list[str]) -> None:
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    assert lines[0].startswith("Error: "), lines[0]
    for part in expect:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_cleanly(tmp_path, case):
    argv, expect = prepare(tmp_path, case)
    before = tree(tmp_path)
    result = CliRunner().invoke(main, argv, prog_name="wqcompile")
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a ClickException, not a crash
    assert result.stdout == ""
    assert_one_line_error(result.output, expect)
    assert tree(tmp_path) == before  # inputs byte-identical; no output, no temp file, no report dir


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_fails_cleanly_in_a_real_process(tmp_path, case):
    argv, expect = prepare(tmp_path, case)
    before = tree(tmp_path)
    proc = subprocess.run([str(WQCOMPILE), *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert_one_line_error(proc.stderr, expect)
    assert tree(tmp_path) == before


def test_signalling_nan_weight_gives_one_line(tmp_path):
    (tmp_path / "model.onnx").write_bytes(with_weight(0.0, bits=SIGNALLING_NAN))
    write_calib(tmp_path)
    proc = subprocess.run([str(WQCOMPILE), "compile", str(tmp_path / "model.onnx"), "-o", str(tmp_path / "out.onnx"),
                           "--calib", str(tmp_path / "calib.npz"), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, ["'conv1'", "'w1'"])


def test_nan_in_a_bias_names_the_bias(tmp_path):
    argv, _ = prepare(tmp_path, "weight-nan")
    (tmp_path / "model.onnx").write_bytes(with_weight(np.nan, "b1", (2,)))
    result = CliRunner().invoke(main, argv)
    assert_one_line_error(result.output, ["'conv1'", "'b1'"])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy on the NaN activations
@pytest.mark.parametrize("flag", [["--wbits", "f"], ["--exclude", "conv1"]], ids=["wbits-f", "exclude"])
def test_nan_weight_in_a_float_layer_is_an_error(tmp_path, flag):
    argv, expect = prepare(tmp_path, "weight-nan")
    before = tree(tmp_path)
    result = CliRunner().invoke(main, argv + flag)
    assert result.exit_code != 0
    assert_one_line_error(result.output, expect)
    assert tree(tmp_path) == before


def test_api_report_failure_leaves_no_output(tmp_path):
    from wqcompile.api import compile_file
    from wqcompile.config import QuantConfig
    from wqcompile.errors import WQError

    (tmp_path / "model.onnx").write_bytes(model_bytes())
    write_calib(tmp_path)
    with pytest.raises(WQError):
        compile_file(tmp_path / "model.onnx", tmp_path / "out.onnx", tmp_path / "calib.npz", QuantConfig(progress=False),
                     report_dir=tmp_path / "model.onnx" / "report")
    assert not (tmp_path / "out.onnx").exists()


def test_write_failure_leaves_no_output_and_no_temp_file(tmp_path, monkeypatch):
    import wqcompile.model_io as model_io

    def disk_full(fd):
        raise OSError(28, "No space left on device", None)

    argv, _ = prepare(tmp_path, "wbits-0")
    argv = argv[:-2]  # the happy path, but the disk fills up while writing the output
    before = tree(tmp_path)
    monkeypatch.setattr(model_io.os, "fsync", disk_full)
    result = CliRunner().invoke(main, argv)
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == f"Error: {tmp_path / 'out' / 'compiled.onnx'}: No space left on device"
    assert "Traceback" not in result.output
    assert tree(tmp_path) == before


# --- the other commands --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("compiled")
    onnx.save(tiny_cnn(), d / "model.onnx")
    np.savez(d / "calib.npz", **calib_data(16))
    result = CliRunner().invoke(main, ["compile", str(d / "model.onnx"), "-o", str(d / "c.onnx"), "--calib",
                                       str(d / "calib.npz"), "--no-progress", "--verify-samples", "0"])
    assert result.exit_code == 0, result.output
    return d / "c.onnx"


@pytest.mark.parametrize("case", ["not-onnx", "missing", "wrong-name", "nan", "inputs-missing", "output-is-model",
                                  "output-is-inputs"])
def test_run_bad_input(tmp_path, compiled, case):
    model = tmp_path / "c.onnx"
    model.write_bytes(compiled.read_bytes())
    inputs, out = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inputs, **calib_data(2))
    expect = {"not-onnx": ["c.onnx"], "missing": ["c.onnx"], "wrong-name": ["'image'"], "nan": ["'input'", "NaN"],
              "inputs-missing": ["in.npz"], "output-is-model": ["c.onnx"], "output-is-inputs": ["in.npz"]}[case]
    if case == "not-onnx":
        model.write_bytes(b"\x00garbage" * 50)
    elif case == "missing":
        model.unlink()
    elif case == "wrong-name":
        np.savez(inputs, image=calib_data(2)["input"])
    elif case == "nan":
        np.savez(inputs, input=np.full((2, 3, 12, 12), np.nan, np.float32))
    elif case == "inputs-missing":
        inputs.unlink()
    elif case == "output-is-model":
        out = tmp_path / "." / "c.onnx"
    elif case == "output-is-inputs":
        out = inputs
    before = tree(tmp_path)
    result = CliRunner().invoke(main, ["run", str(model), "--inputs", str(inputs), "-o", str(out)])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert_one_line_error(result.output, expect)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("content", [b"", b"not a model", None], ids=["empty", "garbage", "missing"])
def test_inspect_bad_input(tmp_path, content):
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert_one_line_error(result.output, ["m.onnx"])
