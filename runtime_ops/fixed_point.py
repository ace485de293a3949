"""Compile-time snapping to the integer contract of docs/op-contract.md, and the integer edges shared by kernels.

Everything a kernel needs (codebook mantissas, level tables, integer thresholds) is computed here once and stored in
the model, so the numbers that run are exactly the numbers stored.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

ACC_LIMIT = 2**30            # |acc| ≤ ACC_LIMIT - 1 is guaranteed at compile time (op-contract §2)
UNREACHABLE = ACC_LIMIT      # an integer threshold no accumulator can reach
MAX_MANTISSA_BITS = 15       # mantissas are int16
ROW_SCALE_BITS = 22          # row_scale r means r · 2^-22 (op-contract §2.1); r ≤ 2^22 keeps |acc · r| < 2^52
ROW_SCALE_ONE = 1 << ROW_SCALE_BITS


def scale_shift(max_value: float, mantissa_bits: int) -> int:
    """Largest integer ``s`` with ``max_value · 2^s ≤ 2^mantissa_bits - 1`` (0 for an all-zero tensor)."""
    if not max_value > 0 or not math.isfinite(max_value):
        return 0
    # difference of logs: the quotient (2^m - 1) / max_value overflows to inf for max_value below ~1e-304
    s = math.floor(math.log2(2**mantissa_bits - 1) - math.log2(max_value))
    # log2 of a float can be off by an ulp at exact powers of two: settle it with exact ldexp comparisons.
    while math.ldexp(max_value, s) > 2**mantissa_bits - 1:
        s -= 1
    while math.ldexp(max_value, s + 1) <= 2**mantissa_bits - 1:
        s += 1
    return s


def mantissas(values: np.ndarray, shift: int) -> np.ndarray:
    """``rint(values · 2^shift)`` (round half to even) as int64."""
    return np.rint(np.ldexp(np.asarray(values, dtype=np.float64), shift)).astype(np.int64)


def quantize_float_input(x: np.ndarray, x_shift: int, x_max: int) -> np.ndarray:
    """Float32 activations → int32 mantissas: ``clip(rint(x · 2^x_shift), ±x_max)``, NaN → 0 (op-contract §1)."""
    scaled = np.ldexp(np.asarray(x, dtype=np.float32), np.int32(x_shift)).astype(np.float32)
    scaled = np.where(np.isnan(scaled), np.float32(0), scaled)
    return np.rint(np.clip(scaled, -x_max, x_max)).astype(np.int32)


def int_thresholds(real: np.ndarray, shift: int, clip_max: float | None = None) -> np.ndarray:
    """Real quantizer thresholds (``[y > t0]``, ``[y ≥ tj]``) → int32 ``≥`` thresholds on ``acc = y · 2^shift``."""
    out = np.empty(len(real), dtype=np.int64)
    for j, t in enumerate(np.asarray(real, dtype=np.float64)):
        strict = j == 0
        if clip_max is not None and (t >= clip_max if strict else t > clip_max):
            out[j] = UNREACHABLE          # Clip(0, m) folded in: min(y, m) never reaches it
            continue
        if math.isinf(t):
            out[j] = UNREACHABLE if t > 0 else -ACC_LIMIT
            continue
        v = Fraction(float(t)) * Fraction(2) ** shift   # exact rational: math.ldexp overflows or flushes to 0
        bound = math.floor(v) + 1 if strict else math.ceil(v)
        out[j] = min(max(bound, -ACC_LIMIT), UNREACHABLE)
    return out.astype(np.int32)


def float32_thresholds(real: np.ndarray, clip_max: float | None = None) -> np.ndarray:
    """Real thresholds → float32 ``≥`` thresholds that give the same levels on every float32 input (op-contract §5).

    With a folded ``Clip(0, m)`` the thresholds ``min(x, m)`` can never reach are dropped rather than set to +inf,
    so that ``x = +Inf`` (clipped to ``m``) lands on ``level(m)`` like every ``x ≥ m``. If none is reachable the
    activation is always level 0 and a single +inf threshold is kept (only ``x = +Inf`` would then read level 1).
    """
    out = []
    for j, t in enumerate(np.asarray(real, dtype=np.float64)):
        strict = j == 0
        if clip_max is not None and (t >= clip_max if strict else t > clip_max):
            break                        # thresholds are increasing: the rest are unreachable too
        f = np.float32(t)
        if (float(f) <= t) if strict else (float(f) < t):
            f = np.nextafter(f, np.float32(np.inf))
        out.append(f)
    return np.asarray(out or [np.float32(np.inf)], dtype=np.float32)


def accumulator_bound(weight_mantissas: np.ndarray, x_max: int, bias: np.ndarray | None) -> int:
    """Largest possible |acc| over output channels: ``|bias| + max|X| · Σ|C|`` per row of ``weight_mantissas``."""
    rows = np.abs(weight_mantissas.astype(np.int64)).sum(axis=1) * int(x_max)
    if bias is not None:
        rows = rows + np.abs(bias.astype(np.int64))
    return int(rows.max()) if rows.size else 0
