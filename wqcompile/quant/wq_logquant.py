"""WQ weighted log quantization of activations: the (FSR, step) search (wq-algorithm.md §3.3-§3.6, §8).

Level ``n = 1 .. L−1`` has value ``v_n = 2^((FSR + (n−1)·step)/16)`` and, with ``h = step/2``, takes the
histogram bins ``[FSR + (n−1)·step − h, FSR + (n−1)·step + h)``; the top level takes every bin from
its lower edge up (clipping). The search maximises

    S_act(FSR, step) = − Σ_{n=1}^{L−1} v_n · P_n · ln P_n,

with ``P_n`` the fraction of strictly positive activations in level n (level 0 and non-positive
values excluded, ``0·ln 0`` skipped). Order as in the code: ``h = 1 .. 16`` outer, FSR ascending
inner, the first strict maximum wins (initial best ``S = 0``).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from .act_quantizer import ActQuantizer
from .log_grid import pow2_16
from .log_histogram import LogHistogram

logger = logging.getLogger(__name__)

#: The code's hard-coded lowest relative FSR index (Forward_gpu: ``fsr_rel = 40``), measured from
#: ``min_offset = first_nonempty − 1``.
CODE_FSR_MARGIN = 40

#: Half-steps searched: step = 2h in 1/16 octaves, from 1/8 to 2 octaves.
HALF_STEPS = range(1, 17)


def _scores(cum_below, values_at, fsr: np.ndarray, h: int, L: int, total: int) -> np.ndarray:
    """S_act for every FSR candidate at half-step ``h`` (one row per candidate, vectorised)."""
    n = np.arange(1, L)
    lower = fsr[:, None] + (2 * n[None, :] - 3) * h  # lower edge of level n: FSR + (n−1)·2h − h
    below = cum_below(lower)  # positives strictly below each lower edge
    counts = np.empty(lower.shape, dtype=np.int64)
    counts[:, :-1] = below[:, 1:] - below[:, :-1]  # level n ends where level n+1 starts
    counts[:, -1] = total - below[:, -1]  # top level: everything from its lower edge up (+inf too)
    p = counts / total
    # −P ln P with the P = 0 terms skipped (log of 1 instead of 0 gives exactly 0).
    ent = -p * np.log(np.where(p > 0, p, 1.0))
    v = values_at(fsr[:, None] + (n[None, :] - 1) * 2 * h)
    return np.sum(v * ent, axis=1)


def fit_wq_logquant(
    hist: LogHistogram,
    levels: int,
    *,
    mode: Literal["code", "robust"] = "code",
    name: str = "activation",
) -> ActQuantizer:
    """Choose the WQ LogQuant ``(FSR, step)`` of one activation tensor from its histogram.

    Args:
        hist: the calibration :class:`LogHistogram` of the tensor (e.g. a ReLU output).
        levels: number of levels L (``2^bits``, including the zero level), 2..256.
        mode: ``"code"`` reproduces caffe-WQ exactly, including the 40-bin margin (FSR starts at
            ``first_nonempty + 39``); ``"robust"`` starts FSR at ``first_nonempty − h + 1``.
        name: tensor name for warnings.

    Returns:
        ``ActQuantizer.log(FSR, step, L)`` with ``info`` holding ``S``, ``mode``, ``first_bin``,
        ``last_bin``, ``candidates`` and ``fallback``. With no positive activations, the all-zero
        quantizer (``FSR = 0``, ``step = 2`` placeholders) and a warning. When no candidate has
        ``S > 0`` (distribution too narrow), the fallback ``h = 1``, ``FSR = last − (2L − 5)`` and a
        warning.

    Notes:
        ``+inf`` activations are positive, so they count in the denominator of every ``P_n`` and
        always fall in the top level. They do not move ``last_nonempty`` (the search range is set by
        finite values only; an overflow must not stretch the levels to 2^128).
    """
    L = int(levels)
    if not 2 <= L <= 256:
        raise ValueError(f"{name}: levels must be in [2, 256], got {levels!r}")
    if mode not in ("code", "robust"):
        raise ValueError(f"{name}: unknown LogQuant search mode {mode!r}")
    if hist.n_nan:
        logger.warning("%s: %d NaN activations seen in calibration; they quantize to 0", name, hist.n_nan)
    first, last = hist.first_bin, hist.last_bin
    if first is None:
        logger.warning("%s: no finite positive activations in calibration; quantizer outputs zeros", name)
        return ActQuantizer.zero(L, info={"mode": mode, "S": 0.0, "fallback": "no_positive"})
    total = hist.positive_count
    prefix = np.concatenate(([0], np.cumsum(hist.counts)))

    def cum_below(t: np.ndarray) -> np.ndarray:
        # Count of finite positives in bins < t; below the grid 0, above it all of them.
        return prefix[np.clip(t - hist.lo, 0, hist.counts.size)]

    best_S, best = 0.0, None
    candidates = 0
    for h in HALF_STEPS:
        lo = first - 1 + CODE_FSR_MARGIN if mode == "code" else first - h + 1
        hi = last - h * (2 * L - 5)  # top level's lower edge FSR + h(2L−5) must be <= last
        if hi < lo:
            continue
        fsr = np.arange(lo, hi + 1, dtype=np.int64)
        candidates += fsr.size
        S = _scores(cum_below, pow2_16, fsr, h, L, total)
        i = int(np.argmax(S))  # first maximum: smallest FSR for this step
        if S[i] > best_S:  # strict: on ties the smaller step (earlier h) is kept
            best_S, best = float(S[i]), (int(fsr[i]), 2 * h)

    info = {"mode": mode, "S": best_S, "first_bin": first, "last_bin": last, "candidates": candidates}
    if best is None:
        fsr_fb = last - (2 * L - 5)
        logger.warning(
            "%s: activation range too narrow for a %d-level LogQuant search (%d candidates); "
            "falling back to step=2, FSR=%d",
            name,
            L,
            candidates,
            fsr_fb,
        )
        info["fallback"] = "narrow"
        return ActQuantizer.log(fsr_fb, 2, L, info=info)
    info["fallback"] = None
    logger.debug("%s: LogQuant L=%d FSR=%d step=%d S=%.6g", name, L, best[0], best[1], best_S)
    return ActQuantizer.log(best[0], best[1], L, info=info)
