"""Lloyd-Max activation levels: the L values with the least expected squared error (an extension, not the paper's).

Any increasing level set with ``values[0] = 0`` fits the integer contract (int16 level mantissas, integer
thresholds; docs/op-contract.md), so the levels need not lie on a log or a linear grid. Lloyd's algorithm on the
calibration histogram alternates the two optimality conditions of a nearest-level quantizer: thresholds at the
midpoints of adjacent values, and every value (except the fixed zero) at the mean of its cell. Each iteration never
increases the error, so it converges to a local optimum. It is started from the MSE-optimal log grid, the
MSE-optimal uniform grid and the globally optimal levels of the histogram's bins (:mod:`.optimal_levels`, dynamic
programming on two points per bin), and the best result is kept. The third start is the one that matters on real
tensors: Lloyd's fixed points from the two grids were up to 21 % above it on MobileNetV2's ReLU6 outputs
(docs/decisions.md). A 1/16-octave bin is 4.4 % wide, wider than the level spacing of a fine (≥ 6-bit) quantizer,
so each bin's count is spread evenly over ``SUBPOINTS`` points inside it (a piecewise-uniform density) rather than
put on its centre: with point masses Lloyd would fit the bin centres, not the data. Non-positive activations
quantize to 0 exactly and add no error.
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np

from ._sorted_stats import SortedStats
from .act_quantizer import ActQuantizer
from .linear_act import fit_linear_act
from .log_histogram import LogHistogram
from .logquant_mse import fit_logquant_mse
from .optimal_levels import optimal_levels

logger = logging.getLogger(__name__)

MAX_ITERATIONS = 200
SUBPOINTS = 16   # points per histogram bin: 1/256-octave resolution
DP_SUBPOINTS = 2   # points per bin for the dynamic program's start (measured: 4 gains < 0.1 %, at 7x the time)
DP_MAX_LEVELS = 64   # the program costs O(L·N²): ~1 s at 64 levels; finer quantizers' Lloyd optima differ little


def _lloyd(stats: SortedStats, values: np.ndarray) -> tuple[np.ndarray, float]:
    """Lloyd iterations from ``values`` (``values[0] = 0`` stays); returns the values and their error."""
    values = np.array(values, dtype=np.float64)
    err = stats.sse(values)
    for _ in range(MAX_ITERATIONS):
        n, t1, _ = stats.cell_sums(values)
        new = values.copy()
        filled = n[1:] > 0
        new[1:][filled] = t1[1:][filled] / n[1:][filled]
        # an empty cell keeps its value; the order can only break through rounding, so restore it
        new = np.maximum.accumulate(new)
        if not np.all(np.diff(new) > 0):
            break
        new_err = stats.sse(new)
        if new_err >= err * (1 - 1e-12):
            if new_err <= err:
                values, err = new, new_err
            break
        values, err = new, new_err
    return values, err


def fit_lloyd_act(hist: LogHistogram, levels: int, *, name: str = "activation", **_) -> ActQuantizer:
    """Fit ``L`` unsigned levels (``values[0] = 0``) by Lloyd's algorithm on the histogram.

    Args:
        hist: calibration histogram; levels: L (2..256); name: tensor name for warnings.
        **_: options of other fitters, ignored.

    Returns:
        An :class:`ActQuantizer` with ``method="lloyd"`` (``fsr``/``step`` None), midpoint thresholds and
        ``info = {"mse", "start"}``; the all-zero quantizer when there are no finite positives.
    """
    L = int(levels)
    if not 2 <= L <= 256:
        raise ValueError(f"{name}: levels must be in [2, 256], got {levels!r}")
    nz = np.flatnonzero(hist.counts)
    if nz.size == 0:
        logger.warning("%s: no finite positive activations in calibration; quantizer outputs zeros", name)
        return ActQuantizer.zero(L, info={"mse": None})
    stats = SortedStats(*hist.spread_points(SUBPOINTS))
    # every start sees the same positive bins as above, so none is the all-zero quantizer here
    starts = [(start, fit(hist, L, name=name).values)
              for start, fit in (("logmse", fit_logquant_mse), ("linear", partial(fit_linear_act, dyadic=False)))]
    optimum = optimal_levels(*hist.spread_points(DP_SUBPOINTS), L) if L <= DP_MAX_LEVELS else None
    if optimum is not None:
        starts.append(("optimal", optimum))
    runs = [(*_lloyd(stats, values), start) for start, values in starts]
    values, err, start = min(runs, key=lambda r: r[1])     # ties keep the earlier start (logmse first, as before)
    thresholds = 0.5 * (values[1:] + values[:-1])
    mse = err / max(hist.total - hist.n_nan - hist.n_posinf, 1)
    return ActQuantizer(values, thresholds, "lloyd", info={"mse": mse, "start": start})
