"""Baseline: 1-D k-means (Lloyd) weight codebook, Deep Compression style (linear initialisation)."""

from __future__ import annotations

import logging

import numpy as np

from ._sorted_stats import SortedStats
from ._validate import all_zero_warning, as_finite_weights, check_levels
from .codebook import WeightCodebook, nearest_edges

logger = logging.getLogger(__name__)


def _cell_means(stats: SortedStats, centers: np.ndarray) -> np.ndarray:
    """Lloyd update: mean of each centroid's run of sorted values; empty cells keep their centroid.

    Means come from prefix sums, so they are clipped into [min, max] of the run: that only undoes
    rounding (exact for constant runs) and keeps the centroids ordered.
    """
    c = stats.cells(centers)
    a, b = c[:-1], c[1:]
    n = b - a
    full = n > 0
    means = centers.copy()
    mean = (stats.s1[b[full]] - stats.s1[a[full]]) / n[full]
    means[full] = np.clip(mean, stats.x[a[full]], stats.x[b[full] - 1])
    return means


def fit_kmeans_weights(
    w: np.ndarray,
    levels: int,
    *,
    max_iter: int = 300,
    tol: float = 1e-10,
    name: str = "weights",
    **_,
) -> WeightCodebook:
    """Fit ``levels`` centroids to the weights with 1-D Lloyd iterations.

    Centroids start evenly spaced between ``min(w)`` and ``max(w)``. In 1-D the assignment is exact
    with sorted data: each centroid owns the run between the midpoints to its neighbours (ties go to
    the larger centroid), so one iteration costs ``O(levels · log N)`` with prefix sums. Empty
    clusters keep their previous centroid. Iteration stops when no centroid moves by more than
    ``tol · max|w|`` or after ``max_iter`` iterations.

    Args:
        w: weight tensor; levels: number of centroids (2..256).
        max_iter: iteration cap; tol: relative convergence tolerance.
        name: tensor name for messages; **_: options of other fitters, ignored.

    Returns:
        A :class:`WeightCodebook` with ``method="kmeans"``; coincident centroids are merged and the
        freed slots pad the top (``info["unused_levels"]``). ``info`` also has ``iterations``,
        ``converged``, ``sse`` and ``empty_clusters``.
    """
    L = check_levels(levels)
    w = as_finite_weights(w, name)
    all_zero_warning(w, name)
    stats = SortedStats(w)
    lo, hi = float(stats.x[0]), float(stats.x[-1])
    centers = np.linspace(lo, hi, L)
    threshold = tol * max(abs(lo), abs(hi))
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        new = np.sort(_cell_means(stats, centers))
        shift = float(np.max(np.abs(new - centers)))
        centers = new
        if shift <= threshold:
            converged = True
            break
    if not converged:
        logger.debug("%s: k-means stopped after %d iterations", name, it)
    uniq = np.unique(centers)
    values = np.concatenate((uniq, np.full(L - uniq.size, uniq[-1])))
    n, _t1, _t2 = stats.cell_sums(uniq)
    info = {
        "iterations": it,
        "converged": converged,
        "sse": stats.sse(uniq),
        "empty_clusters": int(np.count_nonzero(n == 0)),
        "unused_levels": L - uniq.size,
    }
    return WeightCodebook.from_rule(w, values, *nearest_edges(values), "kmeans", info)
