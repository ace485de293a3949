"""Baseline: uniform symmetric weight grid with an MSE-optimal clipping range."""

from __future__ import annotations

import logging

import numpy as np

from ._scalar_search import minimize_scale
from ._sorted_stats import SortedStats
from ._validate import all_zero_warning, as_finite_weights, check_levels
from .codebook import WeightCodebook, nearest_edges

logger = logging.getLogger(__name__)


def _pad_top(values: np.ndarray, levels: int) -> np.ndarray:
    return np.concatenate((values, np.full(levels - values.size, values[-1])))


def fit_linear_weights(w: np.ndarray, levels: int, *, name: str = "weights", **_) -> WeightCodebook:
    """Fit a uniform symmetric codebook with nearest-value assignment.

    For ``levels >= 3`` the grid is mid-tread, ``s·k`` for ``k = −m .. m`` with ``m = (levels−1)//2``
    (so ``2^b − 1`` used values for even ``levels``; the spare slot repeats the top value). The step
    ``s = α/m`` minimises the squared error over clipping ranges ``α ∈ (0, max|w|]`` (dense grid plus
    golden-section refinement). For ``levels == 2`` the grid is ``±s`` with the exact optimum
    ``s = mean|w|``.

    Args:
        w: weight tensor; levels: codebook size (2..256); name: tensor name for messages.
        **_: options of other fitters, ignored.

    Returns:
        A :class:`WeightCodebook` with ``method="linear"`` and ``info = {"step", "sse", "unused_levels"}``.
    """
    L = check_levels(levels)
    w = as_finite_weights(w, name)
    if all_zero_warning(w, name):
        values = np.zeros(L)
        return WeightCodebook.from_rule(w, values, *nearest_edges(values), "linear", {"step": 0.0, "sse": 0.0})
    stats = SortedStats(np.abs(w))
    amax = float(stats.x[-1])
    if L == 2:
        s = float(stats.s1[-1] / stats.size)  # argmin_s Σ(|w| − s)² = mean |w|
        used = np.array([-s, s])
        sse = stats.sse(np.array([s]))
    else:
        m = (L - 1) // 2
        k = np.arange(m + 1)
        alpha = minimize_scale(lambda a: stats.sse(a / m * k), amax)
        s = alpha / m
        used = s * np.arange(-m, m + 1) + 0.0
        sse = stats.sse(s * k)
    values = _pad_top(used, L)
    info = {"step": s, "sse": sse, "unused_levels": L - used.size}
    return WeightCodebook.from_rule(w, values, *nearest_edges(values), "linear", info)
