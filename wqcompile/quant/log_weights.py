"""Baseline: power-of-two (logarithmic) weight codebook ``±2^e``."""

from __future__ import annotations

import logging
import math

import numpy as np

from ._sorted_stats import SortedStats
from ._validate import all_zero_warning, as_finite_weights, check_levels
from .codebook import WeightCodebook, nearest_edges

logger = logging.getLogger(__name__)

#: Top exponents tried, relative to round(log2 max|w|): clipping up to 8x, or one octave of headroom.
TOP_EXPONENT_OFFSETS = range(-3, 2)


def fit_log_weights(w: np.ndarray, levels: int, *, name: str = "weights", **_) -> WeightCodebook:
    """Fit a sign-symmetric power-of-two codebook with nearest-value assignment.

    Each sign gets ``K = levels // 2`` consecutive exponents ``E − K + 1 .. E`` (``levels == 2``:
    ``±2^E``); odd ``levels`` add a zero level. The top exponent ``E`` is the candidate in
    ``round(log2 max|w|) + {−3 .. +1}`` with the smallest squared error (first one on ties). Each
    weight goes to the nearest value (midpoint ties go to the larger value).

    Args:
        w: weight tensor; levels: codebook size (2..256); name: tensor name for messages.
        **_: options of other fitters, ignored.

    Returns:
        A :class:`WeightCodebook` with ``method="log"`` and ``info = {"top_exponent", "sse"}``.
    """
    L = check_levels(levels)
    w = as_finite_weights(w, name)
    if all_zero_warning(w, name):
        values = np.zeros(L)
        return WeightCodebook.from_rule(w, values, *nearest_edges(values), "log", {"top_exponent": None, "sse": 0.0})
    K, z = L // 2, L % 2
    stats = SortedStats(np.abs(w))
    e0 = math.floor(math.log2(float(stats.x[-1])) + 0.5)
    best = None
    for off in TOP_EXPONENT_OFFSETS:
        E = e0 + off
        mags = np.ldexp(1.0, np.arange(E - K + 1, E + 1))  # exact powers of two
        if z:
            mags = np.concatenate(([0.0], mags))
        sse = stats.sse(mags)
        if best is None or sse < best[0]:
            best = (sse, E, mags)
    sse, E, mags = best
    values = np.concatenate((-mags[z:][::-1], mags)) + 0.0
    info = {"top_exponent": E, "sse": sse, "unused_levels": 0}
    return WeightCodebook.from_rule(w, values, *nearest_edges(values), "log", info)
