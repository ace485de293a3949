"""The parts of the integer contract that QConv and QGemm share: operand decoding, validation, the output edge."""

from __future__ import annotations

import numpy as np

from wqcompile.runtime_ops.fixed_point import ROW_SCALE_BITS, ROW_SCALE_ONE, quantize_float_input
from wqcompile.runtime_ops.packing import unpack_indices


def _fail(op: str, node: str, message: str) -> ValueError:
    return ValueError(f"{op} {node!r}: {message}")


def input_mantissas(op: str, node: str, x: np.ndarray, x_table: np.ndarray | None, x_shift: int, x_max: int) -> np.ndarray:
    """The int32 mantissas ``X`` of an activation input: float32 via linear fixed point, uint8 via its level table."""
    if x.dtype == np.uint8:
        if x_table is None or x_table.size == 0:
            raise _fail(op, node, "uint8 level input needs an x_table input")
        if x_table.dtype != np.int16 or x_table.ndim != 1:
            raise _fail(op, node, f"x_table must be a 1-D int16 tensor, got {x_table.dtype} {list(x_table.shape)}")
        if x.size and int(x.max()) >= x_table.size:
            raise _fail(op, node, f"input level {int(x.max())} is out of range for a {x_table.size}-entry level table")
        return x_table.astype(np.int32)[x]
    if x.dtype != np.float32:
        raise _fail(op, node, f"input must be float32 or uint8 levels, got {x.dtype}")
    if x_table is not None and x_table.size:
        raise _fail(op, node, "a float32 input must not come with an x_table")
    if not 1 <= x_max <= 2**15 - 1:
        raise _fail(op, node, f"x_max must be in 1..32767, got {x_max}")
    return quantize_float_input(x, x_shift, x_max)


def weight_mantissa_matrix(op: str, node: str, packed: np.ndarray, codebook: np.ndarray, w_bits: int,
                           rows: int, cols: int, w_shift: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Unpack indices and look them up: ``C[g(o), idx[o, k]]`` as an int32 ``[rows, cols]`` matrix, and g(o)."""
    if not 1 <= w_bits <= 8:
        raise _fail(op, node, f"w_bits must be in 1..8, got {w_bits}")
    if codebook.dtype != np.int16 or codebook.ndim != 2 or codebook.shape[1] != (1 << w_bits):
        raise _fail(op, node, f"codebook must be int16 [Gc, {1 << w_bits}], got {codebook.dtype} {list(codebook.shape)}")
    groups = codebook.shape[0]
    if groups not in (1, rows):
        raise _fail(op, node, f"codebook has {groups} rows; expected 1 or {rows} (one per output channel)")
    if len(w_shift) != groups:
        raise _fail(op, node, f"w_shift has {len(w_shift)} entries; expected {groups}")
    try:
        idx = unpack_indices(packed, w_bits, rows * cols).reshape(rows, cols)
    except ValueError as err:
        raise _fail(op, node, str(err)) from None
    row_of = np.zeros(rows, dtype=np.int64) if groups == 1 else np.arange(rows)
    return codebook.astype(np.int32)[row_of[:, None], idx], row_of


def check_bias(op: str, node: str, bias: np.ndarray | None, rows: int) -> np.ndarray | None:
    if bias is None or bias.size == 0:
        return None
    if bias.dtype != np.int32 or bias.shape != (rows,):
        raise _fail(op, node, f"bias must be int32 [{rows}], got {bias.dtype} {list(bias.shape)}")
    return bias


def check_row_scale(op: str, node: str, row_scale: np.ndarray | None, rows: int, codebook_rows: int) -> np.ndarray | None:
    """The optional per-output-channel scale of one shared codebook: int32 [rows] in 0..2^22 (op-contract §2.1)."""
    if row_scale is None or row_scale.size == 0:
        return None
    if row_scale.dtype != np.int32 or row_scale.shape != (rows,):
        raise _fail(op, node, f"row_scale must be int32 [{rows}], got {row_scale.dtype} {list(row_scale.shape)}")
    if codebook_rows != 1:
        raise _fail(op, node, f"row_scale scales one shared codebook, but the codebook has {codebook_rows} rows")
    if row_scale.min() < 0 or row_scale.max() > ROW_SCALE_ONE:
        raise _fail(op, node, f"row_scale values must be in 0..2^{ROW_SCALE_BITS}, got "
                              f"{int(row_scale.min())}..{int(row_scale.max())}")
    return row_scale


def output_edge(op: str, node: str, acc: np.ndarray, channel_axis: int, row_of: np.ndarray, w_shift: list[int],
                x_shift: int, thresholds: np.ndarray | None, bias: np.ndarray | None = None,
                row_scale: np.ndarray | None = None) -> np.ndarray:
    """int32 accumulators (without bias) → float32 (exact power-of-two scale) or uint8 levels (integer thresholds).

    Without ``row_scale``: ``a = acc + bias``. With it (op-contract §3): the fused output quantizes
    ``a = floor(acc · r / 2^22) + bias`` and the float output is ``float32(acc · r · 2^-22 + bias)`` (float64 sum).
    """
    rows = acc.shape[channel_axis]
    shape = [1] * acc.ndim
    shape[channel_axis] = rows
    acc = acc.astype(np.int64)
    b = np.zeros(shape, dtype=np.int64) if bias is None else bias.astype(np.int64).reshape(shape)
    r = None if row_scale is None else row_scale.astype(np.int64).reshape(shape)
    if thresholds is None or thresholds.size == 0:
        scale = -(np.asarray(w_shift, dtype=np.int32)[row_of] + np.int32(x_shift))
        if r is None:
            y = (acc + b).astype(np.int32).astype(np.float32)
        else:   # acc · r < 2^52 is exact in float64, and so is the power-of-two scale: one rounding in the sum
            y = (np.ldexp((acc * r).astype(np.float64), -ROW_SCALE_BITS) + b.astype(np.float64)).astype(np.float32)
        return np.ldexp(y, scale.reshape(shape).astype(np.int32)).astype(np.float32)
    acc = (acc if r is None else (acc * r) >> ROW_SCALE_BITS) + b     # >> on int64 is floor division
    groups = len(w_shift)
    if thresholds.dtype != np.int32 or thresholds.ndim != 2 or thresholds.shape[0] != groups or not 1 <= thresholds.shape[1] <= 255:
        raise _fail(op, node, f"thresholds must be int32 [{groups}, L-1] with L ≤ 256, got {thresholds.dtype} {list(thresholds.shape)}")
    if np.any(np.diff(thresholds.astype(np.int64), axis=1) < 0):
        raise _fail(op, node, "thresholds must be non-decreasing")
    acc = acc.astype(np.int32)
    levels = np.empty(acc.shape, dtype=np.uint8)
    moved, out = np.moveaxis(acc, channel_axis, 0), np.moveaxis(levels, channel_axis, 0)
    for o in range(rows):
        out[o] = np.searchsorted(thresholds[row_of[o]], moved[o], side="right")
    return levels


def exact_int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer matrix product through float64 BLAS.

    Exact: every operand is an integer below 2^15 in magnitude and the compile-time bound keeps every partial sum
    below 2^30, far inside float64's 2^53 integer range, whatever order BLAS sums in.
    """
    return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
