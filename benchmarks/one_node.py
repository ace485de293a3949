"""Time one node of a compiled model on its own: the node and its initializers as a one-node model, random input.

    python -m benchmarks.one_node COMPILED.onnx fc1 --rows 1 2 8 --threads 1 2 [--env WQCOMPILE_NO_NIBBLES=1]

A whole-model profile says which layer is slow; this times that layer alone, so a kernel change can be measured
without the rest of the model (e.g. a QGemm's time against its batch: bandwidth-bound if one row costs nearly what
two do). Every node of our domain whose input shape follows from its attributes is supported: QGemm (input
[rows, K]) and, with ``--hw H W``, QConv (input [rows, C, H, W]). The input is random levels below the x_table's
size (level input) or standard-normal floats. Each setting prints the median and the minimum over ``--repeats``
groups of ``--runs`` runs, in µs per run, including onnxruntime's per-run overhead (a few µs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from unittest import mock

import numpy as np
import onnx
from onnx import TensorProto, helper

from wqcompile.bench import open_session, session_options
from wqcompile.runtime import node_attr
from wqcompile.runtime_ops import DOMAIN

X_TABLE, THRESHOLDS = 3, 5   # input positions shared by QConv and QGemm (runtime_ops' op contract)


def one_node_model(model: onnx.ModelProto, name: str, rows: int,
                   hw: tuple[int, int] | None = None) -> tuple[onnx.ModelProto, np.ndarray]:
    """The node ``name`` of ``model`` as a model of its own, and a random input of ``rows`` rows (images)."""
    nodes = [n for n in model.graph.node if n.name == name]
    if not nodes:
        raise SystemExit(f"{name}: no node of that name in the model")
    node = nodes[0]
    if node.domain != DOMAIN or node.op_type not in ("QGemm", "QConv"):
        raise SystemExit(f"{name}: a {node.domain or 'ai.onnx'} {node.op_type} node; only our QGemm and QConv are "
                         "supported")
    w_shape = list(node_attr(node, "w_shape"))
    if node.op_type == "QGemm":
        shape = [rows, w_shape[1]]
    elif hw is None:
        raise SystemExit(f"{name}: a QConv needs the input's height and width (--hw H W)")
    else:
        shape = [rows, w_shape[1] * int(node_attr(node, "group", 1)), *hw]
    inits = {i.name: i for i in model.graph.initializer}
    missing = [n for n in node.input[1:] if n and n not in inits]
    if missing:
        raise SystemExit(f"{name}: inputs {missing} are not initializers; only constant operands are supported")
    levels_in = len(node.input) > X_TABLE and node.input[X_TABLE] != ""
    levels_out = len(node.input) > THRESHOLDS and node.input[THRESHOLDS] != ""
    rng = np.random.default_rng(0)
    if levels_in:
        size = int(np.prod(inits[node.input[X_TABLE]].dims))
        x = rng.integers(0, size, shape).astype(np.uint8)
    else:
        x = rng.standard_normal(shape).astype(np.float32)
    graph = helper.make_graph(
        [node], name,
        [helper.make_tensor_value_info(node.input[0], TensorProto.UINT8 if levels_in else TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(node.output[0], TensorProto.UINT8 if levels_out else TensorProto.FLOAT, None)],
        [inits[n] for n in dict.fromkeys(node.input[1:]) if n])
    out = helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out, x


def time_node(model: onnx.ModelProto, x: np.ndarray, threads: int, *, runs: int, repeats: int,
              env: dict[str, str] | None = None) -> tuple[float, float]:
    """(median, minimum) µs per run over ``repeats`` groups of ``runs`` runs, after ``runs`` warm-up runs."""
    with mock.patch.dict(os.environ, env or {}):
        session = open_session(model, session_options(threads), True)
    feed = {session.get_inputs()[0].name: x}
    for _ in range(runs):
        session.run(None, feed)
    per_run = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(runs):
            session.run(None, feed)
        per_run.append((time.perf_counter() - t0) / runs * 1e6)
    return statistics.median(per_run), min(per_run)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("compiled", help="a compiled model (wqcompile compile's output)")
    p.add_argument("node", help="the node's name")
    p.add_argument("--rows", type=int, nargs="+", default=[1], help="batch rows (images for a QConv)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--hw", type=int, nargs=2, metavar=("H", "W"), help="a QConv input's height and width")
    p.add_argument("--runs", type=int, default=500, help="runs per timed group")
    p.add_argument("--repeats", type=int, default=20, help="timed groups")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment switches while the session is created (repeatable)")
    args = p.parse_args(argv)
    env = dict(kv.split("=", 1) for kv in args.env)
    model = onnx.load(args.compiled)
    for rows in args.rows:
        node_model, x = one_node_model(model, args.node, rows, tuple(args.hw) if args.hw else None)
        for threads in args.threads:
            med, low = time_node(node_model, x, threads, runs=args.runs, repeats=args.repeats, env=env)
            print(f"{args.node} rows {rows} threads {threads}: median {med:.2f} us, min {low:.2f} us", flush=True)


if __name__ == "__main__":
    main()
