"""QGemm: ``Y[..., N] = X[..., K] · codebook[W]ᵀ + bias`` with packed weights and integer accumulation."""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

from wqcompile.runtime_ops.fixed_point import ACC_LIMIT, accumulator_bound
from wqcompile.runtime_ops.integer_core import (
    check_bias, check_row_scale, exact_int_matmul, input_mantissas, output_edge, weight_mantissa_matrix,
)
from wqcompile.runtime_ops.schema import DOMAIN, Attr, OpDef, Port

QGEMM = OpDef(
    name="QGemm",
    inputs=(
        Port("X", "T1", "float32 activations or uint8 level indices, [..., K]"),
        Port("W", "tensor(uint8)", "packed b-bit codebook indices of the [N, K] weight"),
        Port("codebook", "tensor(int16)", "[Gc, 2^b] codebook mantissas; value = C · 2^-w_shift"),
        Port("x_table", "tensor(int16)", "level → mantissa table when X is uint8", optional=True),
        Port("bias", "tensor(int32)", "[N] bias in accumulator units", optional=True),
        Port("thresholds", "tensor(int32)", "[Gc, L-1] fused output quantizer (uint8 output)", optional=True),
        Port("row_scale", "tensor(int32)", "[M] per-output-channel scale r · 2^-22 of one shared codebook",
             optional=True),
    ),
    outputs=(Port("Y", "T2", "float32 or uint8 level indices, [..., N]"),),
    attrs=(
        Attr("w_bits", "int", "bits per packed weight index, 1..8"),
        Attr("w_shape", "ints", "[N, K]"),
        Attr("w_shift", "ints", "per codebook row: value = mantissa · 2^-w_shift"),
        Attr("x_shift", "int", "input mantissa = x · 2^x_shift", 0),
        Attr("x_max", "int", "float inputs saturate at ±x_max", 32767),
    ),
    type_constraints=(("T1", ("tensor(float)", "tensor(uint8)"), ""), ("T2", ("tensor(float)", "tensor(uint8)"), "")),
    doc="X · codebook[W]ᵀ + bias with int32 accumulation; float or fused log-quantized output.",
)


def qgemm_reference(x, w, codebook, x_table=None, bias=None, thresholds=None, row_scale=None, *, w_bits, w_shape,
                    w_shift, x_shift=0, x_max=32767, node="QGemm"):
    """Numpy reference of QGemm, exactly per docs/op-contract.md."""
    op = "QGemm"
    if len(w_shape) != 2 or min(w_shape) < 1:
        raise ValueError(f"{op} {node!r}: w_shape must be [N, K], got {list(w_shape)}")
    rows, k = (int(v) for v in w_shape)
    if x.ndim < 1 or x.shape[-1] != k:
        raise ValueError(f"{op} {node!r}: input shape {list(x.shape)} does not end in K = {k}")
    wm, row_of = weight_mantissa_matrix(op, node, w, codebook, w_bits, rows, k, list(w_shift))
    bias = check_bias(op, node, bias, rows)
    row_scale = check_row_scale(op, node, row_scale, rows, codebook.shape[0])
    xi = input_mantissas(op, node, x, x_table, x_shift, x_max)
    x_bound = int(x_max) if x.dtype == np.float32 else int(np.abs(x_table.astype(np.int64)).max())
    if accumulator_bound(wm, x_bound, bias) > ACC_LIMIT - 1:
        raise ValueError(f"{op} {node!r}: weights, inputs and bias can overflow the int32 accumulator bound 2^30")
    acc = exact_int_matmul(xi.reshape(-1, k), wm.T)
    acc = acc.reshape(*x.shape[:-1], rows)
    return output_edge(op, node, acc, acc.ndim - 1, row_of, list(w_shift), x_shift, thresholds, bias, row_scale)


class QGemm(OpRun):
    """Reference kernel: ``Y = edge(X · codebook[W]ᵀ, bias, row_scale)`` in exact integers."""

    op_domain = DOMAIN
    op_schema = QGEMM.to_onnx_schema()

    def _run(self, x, w, codebook, x_table=None, bias=None, thresholds=None, row_scale=None, *, w_bits=None,
             w_shape=None, w_shift=None, x_shift=0, x_max=32767):
        return (qgemm_reference(x, w, codebook, x_table, bias, thresholds, row_scale, w_bits=w_bits, w_shape=w_shape,
                                w_shift=w_shift, x_shift=x_shift, x_max=x_max, node=self.onnx_node.name),)
