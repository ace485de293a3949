"""LogQuant levels with the (FSR, step) that minimise the expected squared error (an extension, not the paper's).

The level family is WQ's exactly (``v_n = 2^((FSR + (n−1)·step)/16)``, step ∈ {2, …, 32}, the same thresholds and
the same shift-based integer contract); only the choice of ``(FSR, step)`` differs: instead of maximising the
weighted entropy ``−Σ v_n P_n ln P_n`` (wq-algorithm.md §3.3), which the paper pairs with fine-tuning, it minimises
``Σ_b count_b · (a_b − q(a_b))²`` over the calibration histogram, each 1/16-octave bin ``b`` represented by its
geometric centre ``a_b = 2^((b + ½)/16)`` (values inside a bin differ from it by at most ±2.2 %). Non-positive
activations quantize to 0 exactly and add no error. Search order: ``h = 1 … 16`` outer, FSR ascending inner, first
strict minimum wins, so the result is deterministic.
"""

from __future__ import annotations

import logging

import numpy as np

from .act_quantizer import ActQuantizer
from .log_histogram import LogHistogram

logger = logging.getLogger(__name__)

HALF_STEPS = range(1, 17)


def fit_logquant_mse(hist: LogHistogram, levels: int, *, name: str = "activation", **_) -> ActQuantizer:
    """Choose ``(FSR, step)`` of a LogQuant activation quantizer by minimum histogram MSE."""
    L = int(levels)
    if not 2 <= L <= 256:
        raise ValueError(f"{name}: levels must be in [2, 256], got {levels!r}")
    first, last = hist.first_bin, hist.last_bin
    if first is None:
        logger.warning("%s: no finite positive activations in calibration; quantizer outputs zeros", name)
        return ActQuantizer.zero(L, info={"mode": "mse", "fallback": "no_positive"})
    bins = np.arange(first, last + 1)
    counts = hist.counts[first - hist.lo:last - hist.lo + 1].astype(np.float64)
    keep = counts > 0
    bins, counts = bins[keep], counts[keep]
    centre = np.exp2((bins + 0.5) / 16)
    best = (np.inf, None)
    for h in HALF_STEPS:
        step = 2 * h
        span = (L - 2) * step                      # top level sits at FSR + span
        fsr = np.arange(first - span, last + step - span + 1)
        # level of each bin under each candidate: 0 below FSR − h, then one per step, clipped at L − 1
        rel = bins[None, :] - (fsr[:, None] - h)
        level = np.where(rel < 0, 0, np.minimum(rel // step + 1, L - 1))
        value = np.where(level > 0, np.exp2((fsr[:, None] + (level - 1) * step) / 16), 0.0)
        mse = ((centre[None, :] - value) ** 2 * counts[None, :]).sum(axis=1)
        i = int(np.argmin(mse))
        if mse[i] < best[0]:
            best = (float(mse[i]), (int(fsr[i]), step))
    (err, (fsr_best, step_best)) = best
    info = {"mode": "mse", "mse": err / max(hist.positive_count, 1), "first_bin": first, "last_bin": last}
    return ActQuantizer.log(fsr_best, step_best, L, info=info)
