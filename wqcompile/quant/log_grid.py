"""The 1/16-octave log grid shared by the activation histogram and the log quantizers.

Everything on the activation side lives on the grid ``t = 16·log2(a)``: histogram bin ``b`` holds
``edge(b) <= a < edge(b + 1)`` and every WQ LogQuant threshold is some ``edge(t)`` with integer ``t``
(wq-algorithm.md §3.4). For the histogram to be an *exact* sufficient statistic of the quantizer, the
histogram and the quantizer must use bit-identical float64 edges. :func:`pow2_16` is the single
definition of those edges: ``2^(t/16) = 2^(t div 16) · 2^((t mod 16)/16)``, i.e. one of 16 tabulated
fractions scaled exactly by a power of two with ``np.ldexp``. It therefore does not depend on how a
particular libm or SIMD path evaluates ``exp2`` for a given array layout.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

#: Units per octave of the log grid (the code's ``BASE_SIZE``).
BINS_PER_OCTAVE = 16

#: First and last absolute bin of the histogram grid. [-2048, 2047] covers 2^-128 .. 2^128, i.e. all
#: finite float32 positives; smaller (subnormal) and larger (float64-only) values are clamped into
#: the end bins. This is wider than the code's [-640, 383] (wq-algorithm.md §3.4 / §3.6).
GRID_LO = -2048
GRID_HI = 2047

# 2^(r/16) for r = 0..15, rounded once to float64 (Python's float pow, i.e. the C library pow).
_FRACTIONS = np.array([2.0 ** (r / BINS_PER_OCTAVE) for r in range(BINS_PER_OCTAVE)], dtype=np.float64)


def pow2_16(t: np.ndarray | int) -> np.ndarray:
    """Return ``2^(t/16)`` in float64 for integer ``t`` (scalar or array), deterministically.

    Args:
        t: integer grid position(s) in 1/16-octave units.

    Returns:
        float64 array of the same shape (0-d for a scalar input). The result is exact up to the
        single rounding of the tabulated fraction, and identical wherever it is called from.
    """
    t = np.asarray(t, dtype=np.int64)
    octave, frac = np.divmod(t, BINS_PER_OCTAVE)  # floor division: frac in 0..15 also for t < 0
    return np.ldexp(_FRACTIONS[frac], octave.astype(np.int32))
