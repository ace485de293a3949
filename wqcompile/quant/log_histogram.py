"""Streaming 1/16-octave log histogram of activations (wq-algorithm.md §3.4).

The histogram counts every finite positive activation ``a`` in bin ``b = floor(16·log2 a)`` of a fixed
absolute grid, so calibration batches (and processes) can be merged by adding counts. Because every
WQ LogQuant threshold is a bin edge, this is an exact sufficient statistic for the (FSR, step) search.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .log_grid import GRID_HI, GRID_LO, pow2_16

logger = logging.getLogger(__name__)

# Elements processed per chunk in update(): bounds the float64 temporaries to a few MB.
_CHUNK = 1 << 20


def log_bins(a: np.ndarray) -> np.ndarray:
    """Exact bin index ``b`` with ``pow2_16(b) <= a < pow2_16(b + 1)`` for finite ``a > 0`` (float64).

    ``floor(16·log2 a)`` alone can be off by one next to a bin edge (``log2`` is rounded and the
    edges are rounded), so the estimate is corrected by comparing ``a`` with the float64 edges that
    the quantizer thresholds use. The result is not clamped.
    """
    b = np.floor(16.0 * np.log2(a)).astype(np.int64)
    b -= a < pow2_16(b)  # estimate one too high
    b += a >= pow2_16(b + 1)  # estimate one too low
    return b


class LogHistogram:
    """Mergeable log histogram of activations.

    Attributes:
        lo: absolute index of ``counts[0]`` (``-2048``).
        counts: int64 counts of finite positives per bin; bins cover ``[2^(b/16), 2^((b+1)/16))``,
            values below ``2^-128`` are clamped into the first bin and values ``>= 2^128`` into the last.
        n_nonpositive: count of ``x <= 0`` (including ``-inf``).
        n_nan: count of NaN.
        n_posinf: count of ``+inf``.
        total: count of all values seen.
        max_value: largest finite positive value seen (0.0 if none).
        max_abs: largest finite ``|x|`` over all values (0.0 if none).

    Example:
        >>> h = LogHistogram()
        >>> h.update(np.array([0.0, 1.0, 2.0, np.nan], dtype=np.float32))
        >>> h.positive_count, h.n_nonpositive, h.n_nan, h.first_bin, h.last_bin
        (2, 1, 1, 0, 16)
    """

    def __init__(self) -> None:
        self.lo = GRID_LO
        self.counts = np.zeros(GRID_HI - GRID_LO + 1, dtype=np.int64)
        self.n_nonpositive = 0
        self.n_nan = 0
        self.n_posinf = 0
        self.total = 0
        self.max_value = 0.0
        self.max_abs = 0.0

    @property
    def hi(self) -> int:
        """Absolute index of the last bin."""
        return self.lo + self.counts.size - 1

    @property
    def positive_count(self) -> int:
        """Number of strictly positive values (finite and ``+inf``)."""
        return int(self.counts.sum()) + self.n_posinf

    @property
    def first_bin(self) -> int | None:
        """Absolute index of the first non-empty bin (None when there are no finite positives)."""
        nz = np.flatnonzero(self.counts)
        return int(nz[0]) + self.lo if nz.size else None

    @property
    def last_bin(self) -> int | None:
        """Absolute index of the last non-empty bin (None when there are no finite positives)."""
        nz = np.flatnonzero(self.counts)
        return int(nz[-1]) + self.lo if nz.size else None

    def update(self, x: np.ndarray) -> None:
        """Add every element of ``x`` (any shape and float dtype) to the histogram."""
        flat = np.asarray(x).reshape(-1)
        self.total += int(flat.size)
        for start in range(0, flat.size, _CHUNK):
            self._update_chunk(flat[start : start + _CHUNK])

    def _update_chunk(self, x: np.ndarray) -> None:
        nan = np.isnan(x)
        self.n_nan += int(np.count_nonzero(nan))
        self.n_nonpositive += int(np.count_nonzero(x <= 0))
        self.n_posinf += int(np.count_nonzero(x == np.inf))
        finite = np.isfinite(x)
        if finite.any():
            self.max_abs = max(self.max_abs, float(np.max(np.abs(x[finite]))))
        pos = x[(x > 0) & finite].astype(np.float64)  # the one float64 temporary (positives only)
        if pos.size == 0:
            return
        self.max_value = max(self.max_value, float(pos.max()))
        b = np.clip(log_bins(pos), self.lo, self.hi)
        self.counts += np.bincount(b - self.lo, minlength=self.counts.size)

    def merge(self, other: LogHistogram) -> LogHistogram:
        """Add ``other``'s counts into this histogram (same grid) and return ``self``."""
        if other.lo != self.lo or other.counts.size != self.counts.size:
            raise ValueError("LogHistogram.merge: grids differ")
        self.counts += other.counts
        self.n_nonpositive += other.n_nonpositive
        self.n_nan += other.n_nan
        self.n_posinf += other.n_posinf
        self.total += other.total
        self.max_value = max(self.max_value, other.max_value)
        self.max_abs = max(self.max_abs, other.max_abs)
        return self

    def spread_points(self, per_bin: int) -> tuple[np.ndarray, np.ndarray]:
        """The positive values as ``per_bin`` evenly spaced points inside each non-empty bin (a piecewise-uniform
        density, linear scale) and their weights (the bin's count shared equally): float64 ``(points, weights)``."""
        nz = np.flatnonzero(self.counts)
        lo, hi = pow2_16(nz + self.lo), pow2_16(nz + self.lo + 1)
        frac = (np.arange(per_bin) + 0.5) / per_bin
        points = (lo[:, None] + (hi - lo)[:, None] * frac[None, :]).ravel()
        return points, np.repeat(self.counts[nz].astype(np.float64) / per_bin, per_bin)

    def cumulative(self) -> np.ndarray:
        """Inclusive cumulative counts over the bins (int64, same length as ``counts``)."""
        return np.cumsum(self.counts)

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain arrays and scalars (``np.savez``-friendly)."""
        return {
            "lo": np.int64(self.lo),
            "counts": self.counts.copy(),
            "n_nonpositive": np.int64(self.n_nonpositive),
            "n_nan": np.int64(self.n_nan),
            "n_posinf": np.int64(self.n_posinf),
            "total": np.int64(self.total),
            "max_value": np.float64(self.max_value),
            "max_abs": np.float64(self.max_abs),
        }

    @classmethod
    def from_dict(cls, d: Any) -> LogHistogram:
        """Inverse of :meth:`to_dict` (accepts a dict or an ``np.load`` result)."""
        h = cls()
        h.lo = int(d["lo"])
        h.counts = np.array(d["counts"], dtype=np.int64)
        h.n_nonpositive = int(d["n_nonpositive"])
        h.n_nan = int(d["n_nan"])
        h.n_posinf = int(d["n_posinf"])
        h.total = int(d["total"])
        h.max_value = float(d["max_value"])
        h.max_abs = float(d["max_abs"])
        return h

    @classmethod
    def from_bin_counts(cls, counts: np.ndarray, first_bin: int) -> LogHistogram:
        """Histogram of finite positives given directly as counts of bins ``first_bin, first_bin + 1, ...``.

        ``max_value``/``max_abs`` are set to the upper edge of the last non-empty bin (an upper bound).
        """
        counts = np.asarray(counts, dtype=np.int64)
        h = cls()
        if first_bin < h.lo or first_bin + counts.size - 1 > h.hi or np.any(counts < 0):
            raise ValueError("LogHistogram.from_bin_counts: counts outside the grid or negative")
        start = first_bin - h.lo
        h.counts[start : start + counts.size] = counts
        h.total = int(counts.sum())
        last = h.last_bin
        if last is not None:
            h.max_value = h.max_abs = float(pow2_16(last + 1))
        return h
