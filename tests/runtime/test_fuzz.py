"""Malformed models and tensors thrown at libwq_ops: each must end in a Python exception from onnxruntime (session
creation or run), never a crash. Every case runs in a forked child process, so a segfault or abort shows up as a
failed test (negative exit code) instead of killing the test run.
"""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import onnx
import pytest

from tests.ops.cases import random_operands
from tests.ops.oracles import pack_naive
from tests.runtime.helpers import cpu_has, model_of

pytestmark = pytest.mark.requires_ops_lib

OK, RAISED = 10, 11


def _child(build, expect_error: bool) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        model, feeds = build()
        from tests.runtime.helpers import run_ort

        run_ort(model, feeds, threads=2)
    except Exception:   # noqa: BLE001 - any Python exception is the desired outcome
        os._exit(RAISED)
    os._exit(OK)


def _run_isolated(build, expect_error=True) -> int:
    ctx = mp.get_context("fork")
    p = ctx.Process(target=_child, args=(build, expect_error))
    p.start()
    p.join(120)
    if p.is_alive():
        p.kill()
        p.join()
        pytest.fail("the case hung for 120 s")
    return p.exitcode


# --- a valid base layer that each case breaks in one way ----------------------------------------------------------

def _apply(override: dict, parts: dict, attrs: dict) -> None:
    """An override replaces an input (``parts``) or an attribute; ``None`` for an attribute removes it."""
    for key, value in override.items():
        if key in parts:
            parts[key] = value
        elif value is None:
            attrs.pop(key, None)
        else:
            attrs[key] = value


def _conv(kind="float", **override):
    rng = np.random.default_rng(5)
    ops = random_operands(rng, (4, 2, 3, 3), (1, 4, 6, 6), 18, bits=3, gc=1, kind=kind, with_bias=True)
    parts = dict(X=ops.x, W=ops.packed, codebook=ops.codebook, x_table=ops.x_table, bias=ops.bias, thresholds=None,
                 row_scale=None)
    attrs = dict(w_bits=3, w_shape=[4, 2, 3, 3], w_shift=ops.w_shift, x_shift=ops.x_shift, x_max=ops.x_max, group=2,
                 pads=[1, 1, 1, 1])
    out = np.float32
    as_inputs = override.pop("as_inputs", False)
    _apply(override, parts, attrs)
    if parts["thresholds"] is not None:
        out = np.uint8
    inputs = list(parts.items())
    model = model_of("QConv", inputs, attrs, out, as_inputs=as_inputs)
    feeds = {"X": parts["X"]}
    if as_inputs:
        feeds.update({k: v for k, v in inputs[1:] if v is not None})
    return model, feeds


def _gemm(**override):
    rng = np.random.default_rng(6)
    ops = random_operands(rng, (5, 12), (3, 12), 12, bits=4, gc=5, kind="level", with_bias=False)
    parts = dict(X=ops.x, W=ops.packed, codebook=ops.codebook, x_table=ops.x_table, bias=None, thresholds=None,
                 row_scale=None)
    attrs = dict(w_bits=4, w_shape=[5, 12], w_shift=ops.w_shift, x_shift=ops.x_shift)
    _apply(override, parts, attrs)
    out = np.uint8 if parts["thresholds"] is not None else np.float32
    return model_of("QGemm", list(parts.items()), attrs, out), {"X": parts["X"]}


W3 = pack_naive(np.zeros(4 * 18, dtype=np.int64), 3)

CASES = {
    "float64 input": lambda: _conv(X=np.zeros((1, 4, 6, 6))),
    "int32 input": lambda: _conv(X=np.zeros((1, 4, 6, 6), np.int32)),
    "truncated packed weights": lambda: _conv(W=W3[:-1]),
    "empty packed weights": lambda: _conv(W=np.zeros(0, np.uint8)),
    "packed weights too long": lambda: _conv(W=np.concatenate([W3, W3])),
    "truncated packed weights given at run time": lambda: _conv(W=W3[:-2], as_inputs=True),
    "packed weights 2-D": lambda: _conv(W=W3.reshape(1, -1)),
    "codebook int32": lambda: _conv(codebook=np.zeros((1, 8), np.int32)),
    "codebook too narrow": lambda: _conv(codebook=np.zeros((1, 4), np.int16)),
    "codebook rows neither 1 nor M": lambda: _conv(codebook=np.zeros((3, 8), np.int16), w_shift=[0, 0, 0]),
    "codebook 3-D": lambda: _conv(codebook=np.zeros((1, 1, 8), np.int16)),
    "w_shift too short": lambda: _conv(w_shift=[]),
    "w_bits missing": lambda: _conv(w_bits=None),
    "w_shape missing": lambda: _conv(w_shape=None),
    "w_bits 0": lambda: _conv(w_bits=0),
    "w_bits 9": lambda: _conv(w_bits=9),
    "w_bits huge": lambda: _conv(w_bits=2**40),
    "w_shape huge": lambda: _conv(w_shape=[2**40, 2**40, 3, 3]),
    "w_shape negative": lambda: _conv(w_shape=[4, -2, 3, 3]),
    "w_shape zero": lambda: _conv(w_shape=[0, 2, 3, 3]),
    "group 0": lambda: _conv(group=0),
    "group negative": lambda: _conv(group=-2),
    "strides zero": lambda: _conv(strides=[0, 1]),
    "dilations negative": lambda: _conv(dilations=[1, -1]),
    "pads negative": lambda: _conv(pads=[0, -1, 0, 0]),
    "pads huge": lambda: _conv(pads=[2**40, 0, 0, 0]),
    "pads of rank 2": lambda: _conv(pads=[1, 1]),
    "unknown auto_pad": lambda: _conv(auto_pad="SAME"),
    "x_max 0": lambda: _conv(x_max=0),
    "x_max above int16": lambda: _conv(x_max=1 << 20),
    "input 3-D": lambda: _conv(X=np.zeros((4, 6, 6), np.float32)),
    "input with zero channels": lambda: _conv(X=np.zeros((1, 0, 6, 6), np.float32)),
    "input with zero height": lambda: _conv(X=np.zeros((1, 4, 0, 6), np.float32), pads=[0, 0, 0, 0]),
    "input channel mismatch": lambda: _conv(X=np.zeros((1, 6, 6, 6), np.float32)),
    "kernel larger than the input": lambda: _conv(X=np.zeros((1, 4, 1, 1), np.float32), pads=[0, 0, 0, 0]),
    "x_table with a float input": lambda: _conv(x_table=np.arange(4, dtype=np.int16)),
    "x_table missing for levels": lambda: _conv(kind="level", x_table=None),
    "x_table empty for levels": lambda: _conv(kind="level", x_table=np.zeros(0, np.int16)),
    "level out of range": lambda: _conv(kind="level", x_table=np.arange(3, dtype=np.int16),
                                        X=np.full((1, 4, 6, 6), 200, np.uint8)),
    "bias wrong length": lambda: _conv(bias=np.zeros(3, np.int32)),
    "bias int64": lambda: _conv(bias=np.zeros(4, np.int64)),
    "accumulator bound exceeded": lambda: _conv(codebook=np.full((1, 8), 32767, np.int16)),
    "bias at int32 max": lambda: _conv(bias=np.full(4, 2**31 - 1, np.int32)),
    "thresholds decreasing": lambda: _conv(thresholds=np.array([[5, 4]], np.int32)),
    "thresholds too many": lambda: _conv(thresholds=np.zeros((1, 300), np.int32)),
    "thresholds rows ≠ Gc": lambda: _conv(thresholds=np.zeros((3, 2), np.int32)),
    "thresholds float": lambda: _conv(thresholds=np.zeros((1, 2), np.float32)),
    "row_scale negative": lambda: _conv(row_scale=np.array([1, -1, 1, 1], np.int32)),
    "row_scale above 2^22": lambda: _conv(row_scale=np.full(4, 2**22 + 1, np.int32)),
    "row_scale negative at run time": lambda: _conv(row_scale=np.array([1, 1, 1, -5], np.int32), as_inputs=True),
    "row_scale wrong length": lambda: _conv(row_scale=np.ones(3, np.int32)),
    "row_scale int64": lambda: _conv(row_scale=np.ones(4, np.int64)),
    "row_scale with per-channel codebooks": lambda: _gemm(row_scale=np.ones(5, np.int32)),
    "gemm K mismatch": lambda: _gemm(X=np.zeros((3, 11), np.uint8)),
    "gemm scalar input": lambda: _gemm(X=np.zeros((), np.uint8)),
    "gemm w_shape rank 3": lambda: _gemm(w_shape=[5, 3, 4]),
    "gemm w_shape huge": lambda: _gemm(w_shape=[2**62, 2]),
    "gemm level out of range": lambda: _gemm(X=np.full((3, 12), 255, np.uint8)),
    "gemm truncated weights": lambda: _gemm(W=np.zeros(29, np.uint8)),
    "qrelu NaN threshold": lambda: (model_of("QRelu", [("X", np.zeros(4, np.float32)),
                                                       ("thresholds", np.float32([0, np.nan]))], {}, np.uint8),
                                    {"X": np.zeros(4, np.float32)}),
    "qrelu 2-D thresholds": lambda: (model_of("QRelu", [("X", np.zeros(4, np.float32)),
                                                        ("thresholds", np.zeros((2, 2), np.float32))], {}, np.uint8),
                                     {"X": np.zeros(4, np.float32)}),
    "qrelu empty thresholds": lambda: (model_of("QRelu", [("X", np.zeros(4, np.float32)),
                                                          ("thresholds", np.zeros(0, np.float32))], {}, np.uint8),
                                       {"X": np.zeros(4, np.float32)}),
    "qrelu 300 thresholds": lambda: (model_of("QRelu", [("X", np.zeros(4, np.float32)),
                                                        ("thresholds", np.arange(300, dtype=np.float32))], {},
                                              np.uint8), {"X": np.zeros(4, np.float32)}),
    "qdecode level out of range": lambda: (model_of("QDecode", [("X", np.full(70000, 9, np.uint8)),
                                                                ("table", np.arange(9, dtype=np.float32))], {},
                                                    np.float32), {"X": np.full(70000, 9, np.uint8)}),
    "qdecode empty table": lambda: (model_of("QDecode", [("X", np.zeros(3, np.uint8)),
                                                         ("table", np.zeros(0, np.float32))], {}, np.float32),
                                    {"X": np.zeros(3, np.uint8)}),
    "qdecode int table": lambda: (model_of("QDecode", [("X", np.zeros(3, np.uint8)),
                                                       ("table", np.zeros(4, np.int32))], {}, np.float32),
                                  {"X": np.zeros(3, np.uint8)}),
    "qdecode float input": lambda: (model_of("QDecode", [("X", np.zeros(3, np.float32)),
                                                         ("table", np.zeros(4, np.float32))], {}, np.float32),
                                    {"X": np.zeros(3, np.float32)}),
    "level maxpool without kernel_shape": lambda: (model_of("LevelMaxPool", [("X", np.zeros((1, 1, 4, 4), np.uint8))],
                                                             {}, np.uint8), {"X": np.zeros((1, 1, 4, 4), np.uint8)}),
    "level maxpool zero stride": lambda: (model_of("LevelMaxPool", [("X", np.zeros((1, 1, 4, 4), np.uint8))],
                                                   dict(kernel_shape=[2, 2], strides=[0, 1]), np.uint8),
                                          {"X": np.zeros((1, 1, 4, 4), np.uint8)}),
    "level maxpool huge pads": lambda: (model_of("LevelMaxPool", [("X", np.zeros((1, 1, 4, 4), np.uint8))],
                                                 dict(kernel_shape=[2, 2], pads=[2**40, 0, 0, 0]), np.uint8),
                                        {"X": np.zeros((1, 1, 4, 4), np.uint8)}),
    "level maxpool 3-D input": lambda: (model_of("LevelMaxPool", [("X", np.zeros((1, 4, 4), np.uint8))],
                                                 dict(kernel_shape=[2, 2]), np.uint8),
                                        {"X": np.zeros((1, 4, 4), np.uint8)}),
    "level maxpool kernel larger than input": lambda: (model_of("LevelMaxPool", [("X", np.zeros((1, 1, 2, 2), np.uint8))],
                                                                dict(kernel_shape=[3, 3]), np.uint8),
                                                       {"X": np.zeros((1, 1, 2, 2), np.uint8)}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_case_raises_and_never_crashes(name):
    code = _run_isolated(CASES[name])
    assert code == RAISED, f"{name}: child exit code {code} ({'no error raised' if code == OK else 'crashed'})"


def _mutated(seed: int, base=None):
    """A valid layer (``base()``, else a float or level QConv) with one random corruption of an attribute or an
    initializer's bytes/shape."""
    rng = np.random.default_rng(seed)
    model, feeds = base() if base is not None else _conv(kind=("float", "level")[seed % 2])
    node = model.graph.node[0]
    choice = seed % 4
    if choice == 0:   # an integer attribute gets a random value
        ints = [a for a in node.attribute if a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS)]
        attr = ints[int(rng.integers(len(ints)))]
        value = int(rng.choice([-1, 0, 1, 2, 7, 8, 9, 2**31, -2**31, 2**62]))
        if attr.type == onnx.AttributeProto.INT:
            attr.i = value
        else:
            attr.ints[int(rng.integers(len(attr.ints)))] = value if attr.ints else value
    elif choice == 1:   # flip bytes of an initializer
        init = model.graph.initializer[int(rng.integers(len(model.graph.initializer)))]
        arr = onnx.numpy_helper.to_array(init).copy()
        raw = arr.view(np.uint8).reshape(-1)
        if raw.size:
            raw[rng.integers(0, raw.size, 3)] = rng.integers(0, 256, 3)
        init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    elif choice == 2:   # truncate or extend an initializer
        init = model.graph.initializer[int(rng.integers(len(model.graph.initializer)))]
        arr = onnx.numpy_helper.to_array(init).reshape(-1)
        arr = arr[: int(rng.integers(0, arr.size + 1))] if rng.random() < 0.5 else np.concatenate([arr, arr])
        init.CopyFrom(onnx.numpy_helper.from_array(np.ascontiguousarray(arr), init.name))
    else:               # the input tensor gets another shape
        x = feeds["X"]
        shape = [int(v) for v in rng.integers(0, 9, 4)]
        feeds = {"X": (rng.integers(0, 256, shape) if x.dtype == np.uint8 else rng.standard_normal(shape)).astype(x.dtype)}
    return model, feeds


@pytest.mark.parametrize("seed", range(24))
def test_random_corruption_never_crashes(seed):
    code = _run_isolated(lambda: _mutated(seed), expect_error=False)
    assert code in (OK, RAISED), f"child exit code {code}: crashed"


# --- QConv's u8 × s8 path (AVX-512: quad image of u8 level mantissas, vpdpbusd tiles) -----------------------------

needs_avx512 = pytest.mark.skipif(not cpu_has("avx512"), reason="the u8 path needs AVX-512 VNNI")


def _u8_conv(env: dict, *, cg=5, kernel=3, bad=None, as_inputs=False, n=2, hw=(7, 9)):
    """A QConv that qualifies for the u8 path (levels within 0..255, weights within -128..127) built in the child
    with ``env`` set; ``bad`` = (flat index, level) writes one level, e.g. one past the 16-entry table."""
    def build():
        os.environ.update(env)
        rng = np.random.default_rng(cg * 31 + kernel)
        m, table = 11, np.concatenate([[0], np.sort(rng.integers(0, 256, 15))]).astype(np.int16)
        x = rng.integers(0, len(table), (n, cg, *hw)).astype(np.uint8)
        if bad is not None:
            x.reshape(-1)[bad[0]] = bad[1]
        attrs = dict(w_bits=3, w_shape=[m, cg, kernel, kernel], w_shift=[0], x_shift=0, x_max=32767,
                     pads=[kernel // 2] * 4)
        parts = [("X", x), ("W", pack_naive(rng.integers(0, 8, (m, cg, kernel, kernel)), 3)),
                 ("codebook", np.array([[-128, 127, -3, 0, 5, 64, -64, 1]], np.int16)), ("x_table", table)]
        model = model_of("QConv", parts, attrs, np.float32, as_inputs=as_inputs)
        feeds = {"X": x}
        if as_inputs:
            feeds.update({k: v for k, v in parts[1:]})
        return model, feeds
    return build


U8_REQUIRED = {"WQCOMPILE_REQUIRE_U8": "1"}
U8_LEVEL_CASES = {
    "first level, first channel": dict(bad=(0, 16)),
    "last level, last channel (a quad's tail)": dict(bad=(-1, 16)),
    "level 255 in the middle": dict(bad=(200, 255)),
    "pointwise (image read in place)": dict(kernel=1, cg=8, bad=(-1, 255)),
    "one channel": dict(cg=1, bad=(37, 17)),
    "weights at run time": dict(as_inputs=True, bad=(-5, 16)),
    "a long plane (several vectors)": dict(cg=3, hw=(40, 61), bad=(3 * 40 * 61 + 130, 16)),
}


@needs_avx512
@pytest.mark.parametrize("vbmi", [True, False], ids=["vbmi", "no-vbmi"])
@pytest.mark.parametrize("name", sorted(U8_LEVEL_CASES))
def test_u8_level_out_of_range_raises_and_never_crashes(name, vbmi):
    env = dict(U8_REQUIRED, **({} if vbmi else {"WQCOMPILE_NO_VBMI": "1"}))
    kw = dict(U8_LEVEL_CASES[name])
    bad = kw.pop("bad")
    # the same layer with valid levels runs (so it takes the u8 path: WQCOMPILE_REQUIRE_U8), the bad level raises
    assert _run_isolated(_u8_conv(env, **kw), expect_error=False) == OK, f"{name}: the valid layer failed"
    code = _run_isolated(_u8_conv(env, bad=bad, **kw))
    assert code == RAISED, f"{name}: child exit code {code} ({'no error raised' if code == OK else 'crashed'})"


@needs_avx512
@pytest.mark.parametrize("seed", range(12))
def test_u8_random_corruption_never_crashes(seed):
    base = _u8_conv({}, cg=(1, 5, 8)[seed % 3], kernel=(1, 3)[seed % 2])
    code = _run_isolated(lambda: _mutated(seed, base), expect_error=False)
    assert code in (OK, RAISED), f"child exit code {code}: crashed"
