"""Shared by the runtime tests: instruction sets to force, one-node models, running on onnxruntime + libwq_ops."""

from __future__ import annotations

import os
from contextlib import contextmanager
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from wqcompile import runtime
from wqcompile.runtime_ops import DOMAIN
from tests.ops.oracles import bits_equal

ISAS = ("baseline", "avx2", "avx512")
_ELEM = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.uint8): onnx.TensorProto.UINT8}


def cpu_has(isa: str) -> bool:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        return isa == "baseline"
    words = set(flags.split())
    need = {"baseline": set(), "avx2": {"avx2"},
            "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}}[isa]
    return need <= words


@contextmanager
def forced_isa(isa: str):
    """WQCOMPILE_ISA=isa while sessions are created (kernels read it at creation)."""
    old = os.environ.get("WQCOMPILE_ISA")
    os.environ["WQCOMPILE_ISA"] = isa
    try:
        yield
    finally:
        if old is None:
            del os.environ["WQCOMPILE_ISA"]
        else:
            os.environ["WQCOMPILE_ISA"] = old


def model_of(op: str, inputs: list[tuple[str, np.ndarray | None]], attrs: dict, out_dtype, *, as_inputs=False,
             name: str = "node") -> onnx.ModelProto:
    """``Y = op(X, *rest)``: the first entry is the graph input X; the others are initializers (or, with
    ``as_inputs``, graph inputs too, so the kernel prepares them per run); None → an omitted optional input."""
    names, inits, graph_inputs = [], [], []
    for i, (n, v) in enumerate(inputs):
        if v is None:
            names.append("")
            continue
        names.append(n)
        if i == 0 or as_inputs:
            graph_inputs.append(helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)))
        else:
            inits.append(numpy_helper.from_array(v, n))
    while names and names[-1] == "":
        names.pop()
    node = helper.make_node(op, names, ["Y"], domain=DOMAIN, name=name, **attrs)
    graph = helper.make_graph([node], op, graph_inputs,
                              [helper.make_tensor_value_info("Y", _ELEM[np.dtype(out_dtype)], None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                             ir_version=8)


def run_ort(model: onnx.ModelProto, feeds: dict, isa: str | None = None, threads: int = 1) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if isa is None:
        sess = runtime.InferenceSession(model, so)
    else:
        with forced_isa(isa):
            sess = runtime.InferenceSession(model, so)
    return sess.run(None, feeds)[0]


@contextmanager
def only_switches(names: tuple[str, ...], env: dict):
    """Of the environment switches ``names``, exactly those in ``env`` while the block runs (kernels read them when
    a session is created); the whole environment is restored afterwards."""
    with mock.patch.dict(os.environ):
        for name in names:
            os.environ.pop(name, None)
        os.environ.update(env)
        yield


CONV_OPERANDS = ("X", "W", "codebook", "x_table", "bias", "thresholds")


def conv_maxpool_model(case: dict, pool: dict, *, x: np.ndarray | None = None,
                       as_inputs: bool = False) -> tuple[onnx.ModelProto, dict]:
    """QConv (the case's operands and attrs, level output L), then MaxPool(**pool) into Y: the pair that
    wqcompile.runtime fuses into QConvMaxPool. X is ``x`` (default: the case's); with ``as_inputs`` the other
    operands are graph inputs too, else initializers. Returns (model, feeds)."""
    values = [case["x"] if x is None else x] + [case[k] for k in ("W", "codebook", "x_table", "bias", "thresholds")]
    present = [(n, v) for n, v in zip(CONV_OPERANDS, values) if v is not None]
    inits = [numpy_helper.from_array(v, n) for n, v in present[1:] if not as_inputs]
    fed = present if as_inputs else present[:1]
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)) for n, v in fed]
    conv = helper.make_node("QConv", [n if v is not None else "" for n, v in zip(CONV_OPERANDS, values)], ["L"],
                            domain=DOMAIN, name="conv", **case["attrs"])
    mp = helper.make_node("MaxPool", ["L"], ["Y"], name="pool", **pool)
    graph = helper.make_graph([conv, mp], "g", inputs, [helper.make_tensor_value_info("Y", onnx.TensorProto.UINT8, None)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                              ir_version=8)
    return model, dict(fed)


def run_layer_case(op: str, case: dict, *, as_inputs=False, isa: str | None = None, threads: int = 1) -> np.ndarray:
    """One QConv / QGemm ``case`` (x, W, codebook, x_table, bias, thresholds, row_scale, attrs) on onnxruntime with
    the library: a uint8 output when it has thresholds, else float32; with ``as_inputs`` the operands are graph
    inputs (prepared per run) instead of initializers."""
    inputs = [("X", case["x"]), ("W", case["W"]), ("codebook", case["codebook"]), ("x_table", case["x_table"]),
              ("bias", case["bias"]), ("thresholds", case["thresholds"]), ("row_scale", case["row_scale"])]
    out_dtype = np.uint8 if case["thresholds"] is not None else np.float32
    model = model_of(op, inputs, case["attrs"], out_dtype, as_inputs=as_inputs)
    feeds = {"X": case["x"]}
    if as_inputs:
        feeds.update({name: v for name, v in inputs[1:] if v is not None})
    return run_ort(model, feeds, isa, threads)


same_bits = bits_equal   # one definition of "bit-identical", shared with the op tests
