"""Independent oracles for the op tests, written from docs/op-contract.md and the ONNX Conv spec.

Nothing here imports ``wqcompile.runtime_ops``: every oracle is a second, deliberately naive implementation (Python
integers or int64 loops over output positions, exact rationals for real-valued comparisons), so a test that compares
the reference kernels against these checks the contract, not the module against itself.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

ACC_MAX = 2**30 - 1   # op-contract §2: every |acc| is at most this


# --- packing (§1) -----------------------------------------------------------------------------------------------


def pack_naive(indices, bits: int) -> np.ndarray:
    """Little-endian bit stream: index i at stream bits [i·b, i·b+b); stream bit k = bit k mod 8 of byte k div 8."""
    flat = [int(v) for v in np.asarray(indices).reshape(-1)]
    stream = "".join(format(v, f"0{bits}b")[::-1] for v in flat)      # LSB first, stream order
    nbytes = -(-len(stream) // 8)
    return np.frombuffer(int(stream[::-1] or "0", 2).to_bytes(nbytes, "little"), dtype=np.uint8).copy()


def unpack_naive(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Bit-by-bit inverse of :func:`pack_naive`."""
    data = bytes(np.asarray(packed, dtype=np.uint8))
    out = np.zeros(count, dtype=np.int64)
    for i in range(count):
        for j in range(bits):
            k = i * bits + j
            out[i] |= ((data[k // 8] >> (k % 8)) & 1) << j
    return out


# --- activation mantissas (§1) ----------------------------------------------------------------------------------


def quantize_input_naive(x: np.ndarray, x_shift: int, x_max: int) -> np.ndarray:
    """``clip(rint(x · 2^x_shift), ±x_max)``, NaN → 0, through float64 (a float32 times 2^s is exact there for
    |s| < 900), rounding before clipping (the module clips first; both orders agree because x_max is an integer)."""
    x64 = np.asarray(x, dtype=np.float32).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = x64 * (2.0 ** x_shift)
        out = np.where(np.isnan(scaled), 0.0, np.clip(np.rint(scaled), -x_max, x_max))
    return out.astype(np.int64)


def input_mantissas_naive(x: np.ndarray, x_table: np.ndarray | None, x_shift: int, x_max: int) -> np.ndarray:
    if x.dtype == np.uint8:
        return np.asarray(x_table, dtype=np.int64)[x.astype(np.int64)]
    return quantize_input_naive(x, x_shift, x_max)


# --- accumulation (§2), ONNX Conv geometry from the operator spec -----------------------------------------------


def conv_geometry(in_size: int, k: int, stride: int, dilation: int, pad_begin: int, pad_end: int, auto_pad: str):
    """(output size, pad_begin, pad_end) for one spatial axis, per the ONNX Conv / auto_pad definitions."""
    ek = (k - 1) * dilation + 1
    if auto_pad in ("NOTSET", ""):
        return (in_size + pad_begin + pad_end - ek) // stride + 1, pad_begin, pad_end
    if auto_pad == "VALID":
        return math.ceil((in_size - ek + 1) / stride), 0, 0
    out = math.ceil(in_size / stride)
    total = max(0, (out - 1) * stride + ek - in_size)
    if auto_pad == "SAME_UPPER":          # the extra pad goes at the end
        return out, total // 2, total - total // 2
    assert auto_pad == "SAME_LOWER"       # the extra pad goes at the beginning
    return out, total - total // 2, total // 2


def conv_acc_naive(xm: np.ndarray, wm: np.ndarray, bias, *, group: int, strides, dilations, pads, auto_pad: str):
    """int64 accumulators of a grouped 2-D convolution, one output position at a time (pads = [t, l, b, r])."""
    n, c, h, w = xm.shape
    m, cg, kh, kw = wm.shape
    oh, pt, _ = conv_geometry(h, kh, strides[0], dilations[0], pads[0], pads[2], auto_pad)
    ow, pl, _ = conv_geometry(w, kw, strides[1], dilations[1], pads[1], pads[3], auto_pad)
    xm = xm.astype(np.int64)
    wm = wm.astype(np.int64)
    acc = np.zeros((n, m, oh, ow), dtype=np.int64)
    m_per_group = m // group
    for b in range(n):
        for o in range(m):
            g = o // m_per_group
            chans = slice(g * cg, (g + 1) * cg)
            for oy in range(oh):
                for ox in range(ow):
                    total = int(bias[o]) if bias is not None else 0
                    for ky in range(kh):
                        iy = oy * strides[0] - pt + ky * dilations[0]
                        if not 0 <= iy < h:
                            continue          # padded tap: X = 0
                        for kx in range(kw):
                            ix = ox * strides[1] - pl + kx * dilations[1]
                            if not 0 <= ix < w:
                                continue
                            total += int(np.dot(wm[o, :, ky, kx], xm[b, chans, iy, ix]))
                    acc[b, o, oy, ox] = total
    return acc


def gemm_acc_naive(xm: np.ndarray, wm: np.ndarray, bias) -> np.ndarray:
    """int64 ``X[..., K] · Wm[N, K]ᵀ + bias`` with one Python-integer sum per output element."""
    k = xm.shape[-1]
    rows = xm.reshape(-1, k).astype(np.int64)
    wm = wm.astype(np.int64)
    out = np.zeros((rows.shape[0], wm.shape[0]), dtype=np.int64)
    for r in range(rows.shape[0]):
        for o in range(wm.shape[0]):
            out[r, o] = sum(int(a) * int(b) for a, b in zip(rows[r], wm[o])) + (int(bias[o]) if bias is not None else 0)
    return out.reshape(*xm.shape[:-1], wm.shape[0])


def acc_bound(wm_rows: np.ndarray, x_bound: int, bias) -> int:
    """``max_o |bias[o]| + x_bound · Σ_k |Wm[o, k]|`` (the compile-time check of §2)."""
    rows = np.abs(wm_rows.astype(np.int64)).sum(axis=1) * x_bound
    if bias is not None:
        rows = rows + np.abs(np.asarray(bias, dtype=np.int64))
    return int(rows.max())


# --- the output edge (§3) ---------------------------------------------------------------------------------------


def float_edge_naive(acc: np.ndarray, channel_axis: int, shifts_per_channel) -> np.ndarray:
    """``float32(acc) · 2^-s`` with one rounding at the end (float64 holds float32(acc)·2^-s exactly for |s| < 900)."""
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    s = np.asarray(shifts_per_channel, dtype=np.float64).reshape(shape)
    with np.errstate(over="ignore", under="ignore"):
        return (acc.astype(np.float32).astype(np.float64) * np.exp2(-s)).astype(np.float32)


def level_edge_naive(acc: np.ndarray, channel_axis: int, row_of, thresholds: np.ndarray) -> np.ndarray:
    """``level = Σ_j [acc ≥ T[g(o), j]]`` as an explicit sum of indicators."""
    moved = np.moveaxis(acc.astype(np.int64), channel_axis, 0)
    out = np.zeros(moved.shape, dtype=np.int64)
    for o in range(moved.shape[0]):
        for t in thresholds[row_of[o]]:
            out[o] += moved[o] >= int(t)
    return np.moveaxis(out, 0, channel_axis).astype(np.uint8)


def real_level(y: Fraction | float, thresholds) -> int:
    """WQ's real quantizer: ``[y > t0] + Σ_{j≥1} [y ≥ tj]``, compared exactly (Fractions or float64)."""
    level = 0
    for j, t in enumerate(thresholds):
        if isinstance(y, Fraction) and not math.isfinite(t):
            hit = t < 0                   # a finite y is above -inf and below +inf
        else:
            t = Fraction(float(t)) if isinstance(y, Fraction) else t
            hit = y > t if j == 0 else y >= t
        level += bool(hit)
    return level


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Exact equality incl. dtype and the sign of zero (float32 compared as bit patterns)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == np.float32:
        return np.array_equal(a.view(np.uint32), b.view(np.uint32))
    return np.array_equal(a, b)
