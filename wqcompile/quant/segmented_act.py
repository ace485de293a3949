"""Piecewise-uniform activation levels: up to three runs of evenly spaced levels whose steps grow by powers of two.

Why: at 8 bits the minimum-MSE level set of a ReLU output is dense near zero and sparse in the tail. Lloyd's
algorithm gets there only from a good start (from a linear or log start its 255 levels barely move: measured on
Open-NSFW's 50 activations, 41.2 dB mean activation SQNR against 47.1 dB from a piecewise start), and its thresholds
are irregular, so the runtime needs a table lookup (a gather) per output. Runs of evenly spaced levels keep
nearly all of that accuracy (46.9 dB with three runs) and their integer thresholds are evenly spaced within each run,
which the runtime counts with arithmetic (ThresholdTable::runs): no lookup.

The values are ``s·g(n)`` with ``g`` an integer pattern: steps of 1 for the first ``k1`` levels, ``2^m1`` up to
level ``k2``, ``2^m2`` after it (one run is the linear quantizer, two runs drop the last). For every pattern of a
small grid the scale ``s`` is searched on the histogram (as the linear quantizer's), then the best pattern's scale is
refined and rounded to ``STEP_BITS`` significant bits, so that every threshold ``s·(g(n) + g(n+1))/2`` is an exact
dyadic number that lowers to exact integers (see linear_act.py).
"""

from __future__ import annotations

import logging

import numpy as np

from ._scalar_search import minimize_scale
from ._sorted_stats import SortedStats
from .act_quantizer import ActQuantizer
from .linear_act import dyadic_step
from .lloyd_act import SUBPOINTS
from .log_histogram import LogHistogram

logger = logging.getLogger(__name__)

MAX_STEP_EXPONENT = 4      # the last run's step is at most 2^4 times the first's


def run_pattern(levels: int, runs: tuple[tuple[int, int], ...]) -> np.ndarray:
    """``g(0..L-1)``: ``g(0) = 0`` and each ``(step_exponent, first_level_after_the_run)`` run adds its step."""
    steps = np.empty(levels - 1, dtype=np.int64)
    start = 0
    for exponent, end in runs:
        steps[start:end] = 1 << exponent
        start = end
    return np.concatenate([[0], np.cumsum(steps)])


def candidate_patterns(levels: int) -> list[np.ndarray]:
    """One run (linear), two runs and three runs on a grid of split levels (eighths of ``L``)."""
    L = int(levels)
    grid = sorted({max(1, round(L * i / 8)) for i in range(1, 8)} - {L - 1})
    patterns = [run_pattern(L, ((0, L - 1),))]
    for m in range(1, MAX_STEP_EXPONENT + 1):
        patterns += [run_pattern(L, ((0, k), (m, L - 1))) for k in grid]
    for m1 in range(1, MAX_STEP_EXPONENT):
        for m2 in range(m1 + 1, MAX_STEP_EXPONENT + 1):
            patterns += [run_pattern(L, ((0, k1), (m1, k2), (m2, L - 1))) for k1 in grid for k2 in grid if k2 > k1]
    return patterns


def fit_segmented_act(hist: LogHistogram, levels: int, *, name: str = "activation", **_) -> ActQuantizer:
    """Fit ``L`` unsigned piecewise-uniform levels (``values[0] = 0``) with midpoint thresholds.

    Args:
        hist: calibration histogram; levels: L (2..256); name: tensor name for warnings.
        **_: options of other fitters, ignored.

    Returns:
        An :class:`ActQuantizer` with ``method="segmented"`` and ``info = {"scale", "pattern", "mse"}``
        (``pattern`` = the integers ``g``); the all-zero quantizer when there are no finite positives.
    """
    L = int(levels)
    if not 2 <= L <= 256:
        raise ValueError(f"{name}: levels must be in [2, 256], got {levels!r}")
    if np.flatnonzero(hist.counts).size == 0:
        logger.warning("%s: no finite positive activations in calibration; quantizer outputs zeros", name)
        return ActQuantizer.zero(L, info={"scale": None})
    stats = SortedStats(*hist.spread_points(SUBPOINTS))
    top = hist.max_value if hist.max_value > 0 else float(stats.x[-1])

    def fit(g: np.ndarray, grid: int) -> tuple[float, float]:
        s = minimize_scale(lambda x: stats.sse(x * g), top / g[-1], grid=grid, iters=30)
        return stats.sse(s * g), s

    # a coarse scale search per pattern picks the pattern, a fine one its scale
    scored = [(fit(g, 48)[0], i, g) for i, g in enumerate(candidate_patterns(L))]
    _, _, g = min(scored, key=lambda r: (r[0], r[1]))
    s = dyadic_step(fit(g, 512)[1])
    values = s * g
    thresholds = s * (g[:-1] + g[1:]) / 2
    mse = stats.sse(values) / max(hist.total - hist.n_nan - hist.n_posinf, 1)
    return ActQuantizer(values.astype(np.float64), thresholds.astype(np.float64), "segmented",
                        info={"scale": s, "pattern": g.tolist(), "mse": mse})
