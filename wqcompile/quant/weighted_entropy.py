"""Weighted-entropy weight codebooks (WQ, Park et al. CVPR 2017; wq-algorithm.md §2).

Two modes:

* ``symmetric`` (default, caffe-WQ behaviour): one OptSearch over all ``|w|`` with ``H = (L+1)//2``
  magnitude clusters, mirrored codebook ``q(w) = sgn⁺(w)·r_k``. Even L has no zero level (exact zeros
  and −0.0 map to ``+r_0``); odd L makes cluster 0 a zero cluster.
* ``per_sign`` (the paper's text): separate searches over ``{w >= 0}`` and ``{−w : w < 0}`` with
  ``L/2`` clusters each (odd L: a shared zero level plus ``(L−1)/2`` clusters per sign).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from .codebook import WeightCodebook
from .optsearch import OptSearchResult, SearchMode, optsearch
from ._validate import all_zero_warning, as_finite_weights, check_levels

logger = logging.getLogger(__name__)

__all__ = ["OptSearchResult", "fit_weighted_entropy", "optsearch"]


def _result_info(res: OptSearchResult) -> dict:
    return {"slices": res.slices, "r": res.r, "b": res.b, "S": res.S, "passes": res.passes, "used": res.used}


def _negated(r: np.ndarray, z: int) -> np.ndarray:
    """The negative half of a codebook: ``−r_k`` for the non-zero clusters, ascending."""
    return -r[z:][::-1]


def _symmetric(w: np.ndarray, L: int, **search_kw) -> WeightCodebook:
    H, z = (L + 1) // 2, L % 2
    res = optsearch(np.abs(w), H, den=2.0, zero_cluster=bool(z), **search_kw)
    r, b = res.r, res.b
    # Even L: [−r_{H−1} .. −r_0, r_0 .. r_{H−1}]; odd L: [−r_{H−1} .. −r_1, 0, r_1 .. r_{H−1}].
    # "+ 0.0" turns the −0.0 of a zero representative into +0.0.
    values = np.concatenate((_negated(r, z), [0.0] * z, r[z:])) + 0.0
    # Negative-side edges −b_{H−1} .. −b_1 are strict: w = −b_k has |w| = b_k, the larger cluster.
    # Even L adds the sign edge at 0 (sgn⁺: w >= 0, including −0.0, is positive); positive-side
    # edges b_1 .. b_{H−1} are non-strict (|w| >= b_k).
    mid = [] if z else [0.0]
    edges = np.concatenate((-b[:0:-1], mid, b[1:]))
    strict = np.concatenate((np.ones(H - 1, bool), np.zeros(len(mid) + H - 1, bool)))
    info = {"mode": "symmetric", "zero_level": bool(z), "unused_levels": 2 * (H - res.used)}
    info.update(_result_info(res))
    return WeightCodebook.from_rule(w, values, edges, strict, "wq", info)


def _per_sign(w: np.ndarray, L: int, reassign_empty_sign: bool, **search_kw) -> WeightCodebook:
    z = L % 2
    neg, pos = -w[w < 0], w[w >= 0]  # −0.0 >= 0 holds, so −0.0 is in the non-negative group
    per_group = L // 2  # non-zero clusters per sign; odd L adds a shared zero cluster/level
    empty = "negative" if neg.size == 0 else "positive" if pos.size == 0 else None
    if empty and reassign_empty_sign:
        per_group = L - z
    kw = {"den": 1.0, "zero_cluster": bool(z), **search_kw}
    res_neg = optsearch(neg, per_group + z, **kw) if neg.size else None
    res_pos = optsearch(pos, per_group + z, **kw) if pos.size else None

    values: list = []
    edges: list = []
    strict: list = []
    if res_neg is not None:
        values.append(_negated(res_neg.r, z))
        edges.append(-res_neg.b[:0:-1])  # strict, as in symmetric mode
        strict.append(np.ones(res_neg.b.size - 1, bool))
    if z:
        values.append([0.0])
    if res_pos is not None:
        if res_neg is not None and not z:
            edges.append([0.0])  # sign edge between −r⁻_0 and +r⁺_0
            strict.append(np.zeros(1, bool))
        values.append(res_pos.r[z:])
        edges.append(res_pos.b[1:])
        strict.append(np.zeros(res_pos.b.size - 1, bool))
    values_a = np.concatenate(values) + 0.0
    edges_a = np.concatenate(edges).astype(np.float64)
    strict_a = np.concatenate(strict)
    pad = L - values_a.size  # a kept-but-empty sign group: its codes are unused (top padding)
    if pad:
        values_a = np.concatenate((values_a, np.full(pad, values_a[-1])))
        edges_a = np.concatenate((edges_a, np.full(pad, np.inf)))
        strict_a = np.concatenate((strict_a, np.zeros(pad, bool)))
    results = {"negative": res_neg, "positive": res_pos}
    info = {
        "mode": "per_sign",
        "zero_level": bool(z),
        "empty_sign": empty,
        "unused_levels": pad + sum(r.r.size - r.used for r in results.values() if r is not None),
        # Sum of the per-group objectives (each normalised by its own group size N_g).
        "S": float(sum(r.S for r in results.values() if r is not None)),
    }
    for g, res in results.items():
        if res is not None:
            info[g] = _result_info(res)
    return WeightCodebook.from_rule(w, values_a, edges_a, strict_a, "wq", info)


def fit_weighted_entropy(
    w: np.ndarray,
    levels: int,
    *,
    mode: Literal["symmetric", "per_sign"] = "symmetric",
    search: SearchMode = "exact",
    max_passes: int = 10000,
    rtol: float = 1e-12,
    reassign_empty_sign: bool = True,
    name: str = "weights",
) -> WeightCodebook:
    """Fit a weighted-entropy (WQ) codebook to one weight tensor.

    Args:
        w: the weight tensor (any shape, any float dtype); computed in float64.
        levels: number of codebook levels ``L`` (``2^bits``; odd L adds a zero level), 2..256.
        mode: ``"symmetric"`` (caffe-WQ, mirrored codebook) or ``"per_sign"`` (paper).
        search: ``"exact"`` (full scan per boundary) or ``"bisect"`` (code-parity bisection).
        max_passes: cap on coordinate-ascent passes.
        rtol: relative improvement of S below which the passes stop.
        reassign_empty_sign: ``per_sign`` only: when one sign group is empty, give all levels to the
            other group (default) instead of leaving ``L/2`` codes unused.
        name: tensor name used in error and warning messages.

    Returns:
        A :class:`WeightCodebook` with ``method="wq"``. ``info`` holds ``slices``, ``r``, ``b``,
        ``S`` and ``passes`` (per group under ``"positive"``/``"negative"`` in ``per_sign`` mode).

    Raises:
        ValueError: if ``w`` contains NaN/Inf, is empty, or an argument is invalid.

    Example:
        >>> import numpy as np
        >>> w = np.array([0.05, -0.1, 0.2, -0.3, 0.4, -0.5, 0.8, -1.2])
        >>> cb = fit_weighted_entropy(w, 8)
        >>> cb.info["slices"].tolist(), np.round(cb.dequantize(), 6).tolist()[-3:]
        ([4, 6, 7, 8], [-0.452769, 0.8, -1.2])
    """
    L = check_levels(levels)
    w = as_finite_weights(w, name)
    all_zero_warning(w, name)
    search_kw = {"search": search, "max_passes": max_passes, "rtol": rtol}
    if mode == "symmetric":
        cb = _symmetric(w, L, **search_kw)
    elif mode == "per_sign":
        cb = _per_sign(w, L, reassign_empty_sign, **search_kw)
    else:
        raise ValueError(f"{name}: unknown weighted-entropy mode {mode!r}")
    cb.info["search"] = search
    logger.debug("%s: WQ L=%d mode=%s S=%.6g passes=%s", name, L, mode, cb.info["S"], cb.info.get("passes"))
    return cb
