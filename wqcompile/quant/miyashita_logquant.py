"""Baseline: Miyashita et al. base-2 LogQuant (arXiv:1603.01025; wq-algorithm.md §3.1)."""

from __future__ import annotations

import logging
import math

from .act_quantizer import ActQuantizer
from .log_grid import BINS_PER_OCTAVE
from .log_histogram import LogHistogram

logger = logging.getLogger(__name__)


def fit_miyashita_logquant(hist: LogHistogram, levels: int, *, name: str = "activation", **_) -> ActQuantizer:
    """Fit Miyashita LogQuant: levels ``0, 2^(F−L+2) .. 2^F`` with rounding in the log domain.

    ``F`` (Miyashita's FSR, the **top** exponent in octaves) is ``round(log2 max_value)`` with halves
    rounded up; this choice follows §3.1's reading of FSR as the top of the range and clips at most
    half an octave of the largest activations. The ``L − 1`` non-zero levels are consecutive powers of
    two. Thresholds sit at ``2^(k − 1/2)`` between ``2^(k−1)`` and ``2^k``; values at or below
    ``2^(F−L+2−1/2)`` go to 0 and everything above the top threshold clips to ``2^F``.

    This is exactly the WQ LogQuant form with ``step = 16`` and ``fsr = 16·(F − L + 2)`` (lowest
    level, 1/16-octave units), so the returned quantizer carries those WQ-convention ``fsr``/``step``
    and works with the same shift-based kernels; ``info["top_exponent"]`` holds ``F``.

    Args:
        hist: calibration histogram; levels: L (2..256); name: tensor name for warnings.
        **_: options of other fitters, ignored.
    """
    L = int(levels)
    if not 2 <= L <= 256:
        raise ValueError(f"{name}: levels must be in [2, 256], got {levels!r}")
    if hist.max_value <= 0.0:
        logger.warning("%s: no finite positive activations in calibration; quantizer outputs zeros", name)
        return ActQuantizer.zero(L, info={"top_exponent": None})
    top = math.floor(math.log2(hist.max_value) + 0.5)
    q = ActQuantizer.log(BINS_PER_OCTAVE * (top - L + 2), BINS_PER_OCTAVE, L, method="miyashita")
    q.info["top_exponent"] = top
    return q
