"""Random operands for the QConv / QGemm tests: packed weights, codebooks, inputs, bias and thresholds that satisfy
the compile-time accumulator bound of op-contract §2 (so the kernels must accept them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tests.ops.oracles import ACC_MAX, pack_naive


@dataclass
class Operands:
    """Everything a QConv/QGemm call takes besides the layer geometry."""

    x: np.ndarray
    idx: np.ndarray                       # unpacked weight indices, shape w_shape
    packed: np.ndarray
    codebook: np.ndarray                  # int16 [Gc, 2^b]
    w_shift: list[int]
    x_table: np.ndarray | None
    bias: np.ndarray | None
    thresholds: np.ndarray | None = None
    x_shift: int = 0
    x_max: int = 32767
    w_bits: int = 1
    tags: set[str] = field(default_factory=set)

    @property
    def row_of(self) -> np.ndarray:
        m = self.idx.shape[0]
        return np.zeros(m, dtype=np.int64) if self.codebook.shape[0] == 1 else np.arange(m)

    def weight_mantissas(self) -> np.ndarray:
        """``C[g(o), idx[o, ...]]`` as int64, shape w_shape."""
        out = np.empty(self.idx.shape, dtype=np.int64)
        for o in range(self.idx.shape[0]):
            out[o] = self.codebook[self.row_of[o]].astype(np.int64)[self.idx[o]]
        return out

    def channel_shifts(self) -> list[int]:
        return [self.w_shift[g] + self.x_shift for g in self.row_of]

    def x_bound(self) -> int:
        return self.x_max if self.x.dtype == np.float32 else int(np.abs(self.x_table.astype(np.int64)).max())


def log_level_table(rng, levels: int, top: int) -> np.ndarray:
    """A LogQuant-style x_table: x_table[0] = 0, then rint(2^((fsr + (n-1)·step)/16)) scaled so the top is ``top``."""
    step = 2 * int(rng.integers(1, 9))
    exps = (np.arange(levels - 1) - (levels - 2)) * step / 16
    table = np.concatenate([[0], np.rint(top * np.exp2(exps))])
    return table.astype(np.int16)


def float_input(rng, shape, x_shift: int, x_max: int, *, specials: bool = True) -> np.ndarray:
    """Activations spread over the quantizer's range, with exact .5 ties, saturating values, NaN and ±Inf."""
    unit = 2.0 ** -x_shift
    x = rng.standard_normal(shape) * (0.5 * x_max * unit)
    if specials and x.size:
        flat = x.reshape(-1)
        picks = rng.random(flat.size)
        ties = (rng.integers(-x_max, x_max, flat.size) + 0.5) * unit
        flat[:] = np.where(picks < 0.15, ties, flat)
        flat[:] = np.where((picks >= 0.15) & (picks < 0.2), rng.choice([1.0, -1.0], flat.size) * x_max * unit * 1.7, flat)
        flat[:] = np.where((picks >= 0.2) & (picks < 0.22), np.nan, flat)
        flat[:] = np.where((picks >= 0.22) & (picks < 0.25), rng.choice([np.inf, -np.inf, 1e38, -1e38], flat.size), flat)
    with np.errstate(over="ignore"):
        return x.astype(np.float32)


def random_operands(rng, w_shape, x_shape, fan_in: int, *, bits=None, gc=None, kind=None, with_bias=None,
                    x_max=None) -> Operands:
    """Weights, codebook, input and bias whose accumulator bound is at most 2^30 - 1 (often close to it)."""
    m = w_shape[0]
    bits = int(rng.integers(1, 9)) if bits is None else bits
    gc = int(rng.choice([1, m])) if gc is None else gc
    kind = str(rng.choice(["float", "level"])) if kind is None else kind
    with_bias = bool(rng.random() < 0.6) if with_bias is None else with_bias
    tags = {f"bits={bits}", "Gc=1" if gc == 1 else "Gc=M", kind, "bias" if with_bias else "no-bias"}
    x_shift = int(rng.integers(-4, 17))
    if kind == "float":
        x_max = int(rng.choice([1, 127, 1023, 32767])) if x_max is None else x_max
        x = float_input(rng, x_shape, x_shift, x_max)
        x_table, x_bound = None, x_max
    else:
        levels = int(rng.integers(2, 65))
        x_table = log_level_table(rng, levels, int(rng.choice([1, 15, 255, 32767])))
        x = rng.integers(0, levels, x_shape).astype(np.uint8)
        x_max, x_bound = 32767, int(np.abs(x_table.astype(np.int64)).max()) or 1
    # split the 2^30 - 1 budget between the bias and the weights (sometimes all to the weights)
    bias_budget = int(rng.choice([0, 2**10, 2**24, 2**29])) if with_bias else 0
    cmax = max(1, min(32767, (ACC_MAX - bias_budget) // (x_bound * fan_in)))
    codebook = rng.integers(-cmax, cmax + 1, (gc, 1 << bits)).astype(np.int16)
    if rng.random() < 0.3:
        codebook[:, 0] = cmax                       # a tight row: every weight at the extreme
    idx = rng.integers(0, 1 << bits, w_shape)
    if rng.random() < 0.15:
        idx[...] = 0
        tags.add("tight")
    bias = rng.integers(-bias_budget, bias_budget + 1, m).astype(np.int32) if with_bias else None
    w_shift = [int(v) for v in rng.integers(-3, 20, gc)]
    return Operands(x=x, idx=idx, packed=pack_naive(idx, bits), codebook=codebook, w_shift=w_shift, x_table=x_table,
                    bias=bias, x_shift=x_shift, x_max=x_max, w_bits=bits, tags=tags)


def thresholds_from(rng, acc: np.ndarray, channel_axis: int, gc: int) -> np.ndarray:
    """int32 [Gc, L-1] non-decreasing thresholds placed on, next to and between actual accumulator values."""
    levels_minus_1 = int(rng.choice([1, 3, 15, 63, 255]))
    values = np.moveaxis(acc, channel_axis, 0).reshape(acc.shape[channel_axis], -1).astype(np.int64)
    rows = []
    for g in range(gc):
        pool = values[g] if gc > 1 else values.reshape(-1)
        t = rng.choice(pool, levels_minus_1) + rng.integers(-1, 2, levels_minus_1)
        if rng.random() < 0.3:
            t[0], t[-1] = -2**30, 2**30          # always met / never met
        rows.append(np.sort(np.clip(t, -2**30, 2**30)))
    return np.array(rows, dtype=np.int32)
