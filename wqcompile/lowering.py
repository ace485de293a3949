"""Lower a fitted layer to the integer contract (docs/op-contract.md §4): choose mantissa bits, snap, pack.

This is the only place where float parameters become the integers stored in the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from wqcompile.context import FittedWeights
from wqcompile.errors import QuantizationError
from wqcompile.runtime_ops.fixed_point import (
    ACC_LIMIT, MAX_MANTISSA_BITS, ROW_SCALE_BITS, ROW_SCALE_ONE, int_thresholds, mantissas, scale_shift,
)
from wqcompile.runtime_ops.packing import pack_indices

MIN_INPUT_BITS = 4
# (codebook mw, input mx) of the runtime's u8×s8 GEMM (vpdpbusd): int8 codebook mantissas (|C| ≤ 127) times uint8
# level mantissas (x_table ≤ 255). Needs w_bits ≤ 5 (mw ≥ w_bits + 2, §4).
NARROW_BITS = (7, 8)
# the same for a float input: its mantissas clip(rint(x · 2^x_shift), ±127) are s8, which the runtime offsets by
# 128 into u8 (and takes 128 · Σ C back through the bias)
NARROW_FLOAT_BITS = (7, 7)


@dataclass(frozen=True)
class FloatInput:
    """A float32 input, linearly quantized on entry; ``max_abs`` from calibration."""

    max_abs: float


@dataclass(frozen=True)
class LevelInput:
    """A uint8 level input; ``values`` are its real level values (values[0] = 0)."""

    values: np.ndarray


def narrow_bits(x: "FloatInput | LevelInput") -> tuple[int, int]:
    """The ``max_bits`` of a narrow layer with input ``x``."""
    return NARROW_FLOAT_BITS if isinstance(x, FloatInput) else NARROW_BITS


@dataclass(frozen=True)
class QuantizedOutput:
    """A fused output quantizer: real thresholds (``[y > t0]``, ``[y ≥ tj]``) and an optional Clip maximum."""

    thresholds: np.ndarray
    clip_max: float | None


@dataclass(frozen=True)
class LoweredLayer:
    packed: np.ndarray            # uint8, packed b-bit indices of [M, fan_in]
    codebook: np.ndarray          # int16 [Gc, 2^b]
    w_shift: list[int]
    x_shift: int
    x_max: int
    x_table: np.ndarray | None    # int16 [L] for level inputs
    bias: np.ndarray | None       # int32 [M]
    thresholds: np.ndarray | None  # int32 [Gc, Lo-1]
    row_scale: np.ndarray | None  # int32 [M] in 0..2^22 (one shared codebook, op-contract §2.1)
    snapped: np.ndarray           # float64 [M, fan_in]: the weights that actually run
    weight_bits: int
    mantissa_bits: tuple[int, int]  # (codebook mw, input mx)


def mantissas_per_row(values: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """``rint(values[o] · 2^shifts[o])`` as int64."""
    return np.rint(np.ldexp(np.asarray(values, dtype=np.float64), shifts)).astype(np.int64)


def row_scale_ints(scale: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-row scales → (int32 ``r`` in 0..2^22 with ``r · 2^-22 ≈ s / max s``, ``max s``): the largest row gets
    ``r = 2^22`` exactly and the shared codebook absorbs ``max s``."""
    scale = np.asarray(scale, dtype=np.float64)
    top = float(scale.max(initial=0.0))
    if top <= 0.0:
        return np.zeros(scale.shape, dtype=np.int32), 1.0
    return np.clip(np.rint(scale / top * ROW_SCALE_ONE), 0, ROW_SCALE_ONE).astype(np.int32), top


def _index_matrix(fitted: FittedWeights) -> np.ndarray:
    m, k = fitted.matrix.shape
    if len(fitted.codebooks) == 1:
        return np.asarray(fitted.codebooks[0].indices).reshape(m, k)
    return np.stack([np.asarray(cb.indices).reshape(k) for cb in fitted.codebooks])


def lower_layer(node: str, fitted: FittedWeights, bias: np.ndarray | None, x: FloatInput | LevelInput,
                out: QuantizedOutput | None, max_bits: tuple[int, int] | None = None) -> LoweredLayer:
    """Choose ``(mw, mx)`` (at most ``max_bits``), snap codebook/input/bias/thresholds, and check the int32
    accumulator bound."""
    bits = fitted.bits
    idx = _index_matrix(fitted)
    values = np.stack([np.asarray(cb.values, dtype=np.float64) for cb in fitted.codebooks])   # [Gc, 2^b]
    row_scale = None
    if fitted.row_scale is not None:
        row_scale, top = row_scale_ints(fitted.row_scale)
        values = values * top
    if values.shape[1] != 2**bits:
        raise QuantizationError(f"{node!r}: codebook has {values.shape[1]} entries, expected {2**bits}")
    groups = values.shape[0]
    row_of = np.zeros(idx.shape[0], dtype=np.int64) if groups == 1 else np.arange(idx.shape[0])
    max_c = np.abs(values).max(axis=1)
    top_x = float(x.max_abs) if isinstance(x, FloatInput) else float(np.max(x.values))
    mw_hi, mw_lo = min(max(bits + 6, 8), 12), min(bits + 2, 12)
    mx_hi = MAX_MANTISSA_BITS
    if max_bits is not None:
        # asked for (narrow operands): 6..8-bit codebooks may then put several entries on one grid point
        mw_hi, mx_hi = min(mw_hi, max_bits[0]), min(mx_hi, max_bits[1])
        mw_lo = min(mw_lo, mw_hi)
        if mw_hi < 2 or mx_hi < MIN_INPUT_BITS:
            raise QuantizationError(f"{node!r}: cannot lower to {max_bits} mantissa bits")

    candidates = []
    for mw in range(mw_hi, mw_lo - 1, -1):
        w_shift = [scale_shift(float(c), mw) for c in max_c]
        cmant = np.stack([mantissas(values[g], w_shift[g]) for g in range(groups)])
        row_abs = np.abs(cmant[row_of[:, None], idx]).sum(axis=1)            # Σ_k |C| per output channel
        for mx in range(mx_hi, MIN_INPUT_BITS - 1, -1):
            x_shift = scale_shift(top_x, mx)
            if isinstance(x, FloatInput):
                x_max, x_table = 2**mx - 1, None
            else:
                x_table = mantissas(x.values, x_shift)
                x_max = int(x_table.max()) if x_table.size else 0
            bias_int = None if bias is None else mantissas_per_row(bias, np.asarray(w_shift)[row_of] + x_shift)
            bound = row_abs * x_max + (0 if bias_int is None else np.abs(bias_int))
            if bound.max(initial=0) <= ACC_LIMIT - 1:
                # prefer balance: the input may use up to 3 more bits than the codebook, then more input bits
                candidates.append(((min(mx, mw + 3), mx, mw), mw, mx, w_shift, cmant, x_shift, x_max, x_table, bias_int))
                break
    if not candidates:
        raise QuantizationError(
            f"{node!r}: no mantissa widths keep the int32 accumulator within 2^30 for fan-in {idx.shape[1]} "
            f"(bias too large relative to the weights?)")
    _, mw, mx, w_shift, cmant, x_shift, x_max, x_table, bias_int = max(candidates, key=lambda c: c[0])
    thresholds = None
    if out is not None:
        thresholds = np.stack([int_thresholds(out.thresholds, w_shift[g] + x_shift, out.clip_max) for g in range(groups)])
    snapped = np.ldexp(cmant[row_of[:, None], idx].astype(np.float64), -np.asarray(w_shift)[row_of][:, None])
    if row_scale is not None:
        snapped = snapped * np.ldexp(row_scale.astype(np.float64), -ROW_SCALE_BITS)[:, None]
    return LoweredLayer(
        packed=pack_indices(idx, bits),
        codebook=cmant.astype(np.int16),
        w_shift=[int(s) for s in w_shift],
        x_shift=int(x_shift),
        x_max=int(max(x_max, 1)),
        x_table=None if x_table is None else x_table.astype(np.int16),
        bias=None if bias_int is None else bias_int.astype(np.int32),
        thresholds=thresholds,
        row_scale=row_scale,
        snapped=snapped,
        weight_bits=bits,
        mantissa_bits=(mw, mx),
    )



def snap_codebooks(fitted: FittedWeights, mw: int) -> FittedWeights:
    """``fitted`` with its codebook values on the grid ``lower_layer`` stores at ``mw`` codebook mantissa bits
    (``rint(c · 2^w_shift) · 2^-w_shift``; row-scaled: after the largest scale is absorbed), so that fitting steps
    after this one (GPTQ's assignment) see exactly the values that will run. Lowering it again is exact."""
    top = 1.0 if fitted.row_scale is None else row_scale_ints(fitted.row_scale)[1]
    codebooks = []
    for cb in fitted.codebooks:
        values = np.asarray(cb.values, dtype=np.float64) * top
        shift = scale_shift(float(np.abs(values).max(initial=0.0)), mw)
        snapped = np.ldexp(mantissas(values, shift).astype(np.float64), -shift) / top
        codebooks.append(dataclasses.replace(cb, values=snapped))
    return FittedWeights(codebooks, fitted.bits, fitted.matrix, row_scale=fitted.row_scale)
