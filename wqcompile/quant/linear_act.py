"""Baseline: uniform unsigned activation grid with an MSE-optimal step (from the log histogram)."""

from __future__ import annotations

import logging
import math

import numpy as np

from ._scalar_search import minimize_scale
from ._sorted_stats import SortedStats
from .act_quantizer import ActQuantizer
from .log_grid import pow2_16
from .log_histogram import LogHistogram

logger = logging.getLogger(__name__)

# Significant bits kept in the step. Its thresholds (n + 1/2)·s are then dyadic numbers with ≤ 15 significant bits,
# exact in float32, and lowering turns them into exactly evenly spaced integers T_n = T_1 + (n - 1)·D whenever the
# accumulator spacing D is ≥ 64, which the runtime counts with arithmetic instead of a table lookup (ThresholdTable
# ::uniform_ok). Rounding moves the step by ≤ 1/64 of itself, where the squared error is flat (its minimum).
STEP_BITS = 6


def dyadic_step(s: float, bits: int = STEP_BITS) -> float:
    """``s`` rounded to ``bits`` significant bits."""
    if not s > 0 or not np.isfinite(s):
        return s
    e = math.floor(math.log2(s)) - (bits - 1)
    return math.ldexp(round(math.ldexp(s, -e)), e)


def fit_linear_act(hist: LogHistogram, levels: int, *, name: str = "activation", dyadic: bool = True,
                   **_) -> ActQuantizer:
    """Fit ``values = n·s`` (``n = 0 .. L−1``) with round-to-nearest thresholds.

    Thresholds are ``T_0 = 0.5·s`` (strict) and ``T_n = (n + 0.5)·s``; values above the top level clip.
    The step minimises the expected squared error computed from the histogram, each bin represented
    by its geometric centre ``2^((b + 0.5)/16)``; non-positive values quantize to 0 exactly and add
    no error, NaN and ``+inf`` are left out. ``s`` is searched over ``(0, max_value/(L−1)]`` (a dense
    grid plus golden-section refinement, deterministic), then rounded to ``STEP_BITS`` significant bits.

    Args:
        hist: calibration histogram; levels: L (2..256); name: tensor name for warnings; dyadic: round the
            step to ``STEP_BITS`` significant bits (off: the searched step, e.g. as a start for Lloyd).
        **_: options of other fitters, ignored.

    Returns:
        An :class:`ActQuantizer` with ``method="linear"`` (``fsr``/``step`` are None) and
        ``info = {"scale", "fitted_scale", "mse"}`` (the step used, the step searched); the all-zero quantizer when there are no finite positives.
    """
    L = int(levels)
    if not 2 <= L <= 256:
        raise ValueError(f"{name}: levels must be in [2, 256], got {levels!r}")
    nz = np.flatnonzero(hist.counts)
    if nz.size == 0:
        logger.warning("%s: no finite positive activations in calibration; quantizer outputs zeros", name)
        return ActQuantizer.zero(L, info={"scale": None})
    b = nz + hist.lo
    centres = np.sqrt(pow2_16(b) * pow2_16(b + 1))  # geometric bin centre 2^((b + 1/2)/16)
    stats = SortedStats(centres, weights=hist.counts[nz])
    n = np.arange(L)
    top = hist.max_value if hist.max_value > 0 else float(centres[-1])  # histograms built from counts
    fitted = minimize_scale(lambda x: stats.sse(x * n), top / (L - 1))
    s = dyadic_step(fitted) if dyadic else fitted
    values = s * n
    thresholds = (n[:-1] + 0.5) * s
    mse = stats.sse(values) / max(hist.total - hist.n_nan - hist.n_posinf, 1)
    return ActQuantizer(values, thresholds, "linear", info={"scale": s, "fitted_scale": fitted, "mse": mse})
