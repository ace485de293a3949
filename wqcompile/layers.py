"""What a Conv / Gemm / MatMul / Relu-like node computes, in one normalised form, or the reason it cannot be handled.

Non-matches are data (``Skip(reason)``), not exceptions, in the style of onnxscript's ``MatchResult.fail``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from wqcompile.graph import constant_value

WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class LinearLayer:
    """A layer as ``y = x ⊛ W + b`` with ``W`` arranged ``[M, fan_in]`` (Conv: ``[M, C/g·kH·kW]``; Gemm: ``[N, K]``)."""

    kind: str                    # "conv" or "gemm"
    matrix: np.ndarray           # float64 [M, fan_in], alpha folded in
    bias: np.ndarray | None      # float64 [M], beta folded in
    weight_shape: tuple[int, ...]
    transpose_input: bool = False


def _clip_bounds(node: gs.Node) -> tuple[np.ndarray | None, np.ndarray | None] | Skip:
    if "min" in node.attrs or "max" in node.attrs:      # Clip-6 keeps its bounds in attributes
        return np.asarray(node.attrs.get("min", -np.inf)), np.asarray(node.attrs.get("max", np.inf))
    lo = constant_value(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1].name else None
    hi = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    if len(node.inputs) > 1 and node.inputs[1].name and lo is None:
        return Skip(f"Clip {node.name!r}: min is not a constant")
    if len(node.inputs) > 2 and node.inputs[2].name and hi is None:
        return Skip(f"Clip {node.name!r}: max is not a constant")
    return lo, hi


def relu_like(node: gs.Node) -> float | None | Skip:
    """``None`` for a Relu, the clip maximum ``m`` for ``Clip(0, m)``, or why this node is not ReLU-like."""
    if node.op == "Relu":
        return None
    if node.op != "Clip":
        return Skip(f"{node.op} {node.name!r} is not a Relu")
    bounds = _clip_bounds(node)
    if isinstance(bounds, Skip):
        return bounds
    lo, hi = bounds
    if lo is None or lo.size != 1 or float(lo) != 0.0:
        return Skip(f"Clip {node.name!r}: min is not 0, so it is not ReLU-like")
    if hi is None or (hi.size == 1 and np.isinf(float(hi))):
        return None
    if hi.size != 1 or not float(hi) > 0:
        return Skip(f"Clip {node.name!r}: max must be a positive scalar")
    return float(hi)


def linear_layer(node: gs.Node) -> LinearLayer | Skip:
    """The normalised weights of a Conv / Gemm / MatMul with a constant weight."""
    if node.op == "Conv":
        w = constant_value(node.inputs[1])
        if w is None:
            return Skip(f"Conv {node.name!r}: weight is not a constant")
        if w.ndim != 4:
            return Skip(f"Conv {node.name!r}: only 2-D convolutions are quantized (weight rank {w.ndim})")
        b = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
        if len(node.inputs) > 2 and node.inputs[2].name and b is None:
            return Skip(f"Conv {node.name!r}: bias is not a constant")
        return LinearLayer("conv", w.reshape(w.shape[0], -1).astype(np.float64),
                           None if b is None else b.astype(np.float64).reshape(-1), tuple(w.shape))
    if node.op == "MatMul":
        a, bmat = node.inputs[0], constant_value(node.inputs[1])
        if bmat is None:
            return Skip(f"MatMul {node.name!r}: the second operand is not a constant")
        if bmat.ndim != 2:
            return Skip(f"MatMul {node.name!r}: constant operand must be 2-D, got rank {bmat.ndim}")
        if a.shape is not None and len(a.shape) < 1:
            return Skip(f"MatMul {node.name!r}: scalar input")
        return LinearLayer("gemm", bmat.T.astype(np.float64), None, (bmat.shape[1], bmat.shape[0]))
    if node.op == "Gemm":
        bmat = constant_value(node.inputs[1])
        if bmat is None:
            return Skip(f"Gemm {node.name!r}: B is not a constant")
        alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
        trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
        w = (bmat if trans_b else bmat.T).astype(np.float64) * alpha      # [N, K]
        bias = None
        if len(node.inputs) > 2 and node.inputs[2].name:
            c = constant_value(node.inputs[2])
            if c is None:
                return Skip(f"Gemm {node.name!r}: C is not a constant")
            n = w.shape[0]
            if c.size == 1:
                bias = np.full(n, float(c.reshape(-1)[0]) * beta)
            elif c.size == n and (c.ndim == 1 or (c.ndim == 2 and c.shape[0] == 1)):
                bias = c.reshape(-1).astype(np.float64) * beta
            else:
                return Skip(f"Gemm {node.name!r}: C of shape {list(c.shape)} is not a per-output bias")
        return LinearLayer("gemm", w, bias, tuple(w.shape), transpose_input=bool(trans_a))
    return Skip(f"{node.op} {node.name!r} has no weights we quantize")


def _is_depthwise(node: gs.Node) -> bool:
    """A grouped Conv with one input channel per group."""
    if node.op != "Conv" or len(node.inputs) < 2:
        return False
    shape = node.inputs[1].shape
    return int(node.attrs.get("group", 1)) > 1 and shape is not None and len(shape) == 4 and shape[1] == 1


def node_kinds(node: gs.Node) -> frozenset[str]:
    """The ``@kind`` selectors a node answers to in ``--exclude`` / ``--override`` patterns (config.NODE_KINDS):
    ``depthwise`` for a depthwise Conv, ``depthwise-input`` for a Relu / Clip whose output only depthwise Convs read
    (MobileNetV2's expansion ReLU6: the activations a 4-bit grid hurts most there, docs/decisions.md)."""
    kinds = set()
    if _is_depthwise(node):
        kinds.add("depthwise")
    if node.op in ("Relu", "Clip") and node.outputs:
        readers = list(node.outputs[0].outputs)
        if readers and all(_is_depthwise(r) for r in readers):
            kinds.add("depthwise-input")
    return frozenset(kinds)
