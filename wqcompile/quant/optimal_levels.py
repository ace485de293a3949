"""The globally optimal L-level nearest-value quantizer of weighted 1-D points, with level 0 fixed at zero.

Lloyd's algorithm only finds a local optimum, and on real activation tensors its fixed points differ a lot: on
MobileNetV2's ReLU6 outputs the best of its two starts (log and uniform grids) was up to 21 % above the optimum at 16
levels (docs/decisions.md). In one dimension the optimum is exact by dynamic programming, because a nearest-value
quantizer's cells are contiguous runs of the sorted points (the classic optimal 1-D k-means; Wang & Song, "Ckmeans.1d.dp",
R Journal 2011). Here the first cell's value is fixed at 0 (the activation contract's level 0), so its cost is
``Σ w·x²``; every other cell costs its weighted within-cell squared error about its mean:

    D_1(b) = Σ_{i<b} w_i x_i²,        D_k(b) = min_{a ≤ b} D_{k−1}(a) + SSE(a, b),        optimum D_L(N)

(``SSE(a, b)`` from prefix sums of ``w``, ``w·x``, ``w·x²``). The table is ``(N+1)²``, so more than
:data:`MAX_POINTS` points are first merged, consecutive ones, into their weighted means; the caller polishes the
result with Lloyd on the full points, which can only lower the error further.
"""

from __future__ import annotations

import numpy as np

from ._sorted_stats import SortedStats

MAX_POINTS = 2048    # (N+1)² float64 cost table: 34 MB at most; O(L·N²) time, ~0.3 s at 16 levels


def _merged(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_POINTS points: groups of consecutive points replaced by their weighted mean and total weight."""
    group = -(-x.size // MAX_POINTS)
    if group == 1:
        return x, w
    starts = np.arange(0, x.size, group)
    wsum = np.add.reduceat(w, starts)
    return np.add.reduceat(w * x, starts) / wsum, wsum


def optimal_levels(x: np.ndarray, w: np.ndarray, levels: int) -> np.ndarray | None:
    """The ``levels`` values (``values[0] = 0``, increasing) minimising ``Σ w·(x − nearest value)²``.

    Args:
        x: ascending positive points; w: their positive weights; levels: L ≥ 2.
    Returns:
        float64 ``[L]`` values, or None when there are fewer distinct points than non-zero levels (some cell would
        be empty: the optimum is then not unique and Lloyd's starts handle it).
    """
    x, w = _merged(np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64))
    n = x.size
    if n < levels - 1:
        return None
    prefix = SortedStats(x, w)                 # prefix sums of w, w·x, w·x² (x is already ascending)
    cw, c1, c2 = prefix.n, prefix.s1, prefix.s2
    a, b = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        dw = cw[b] - cw[a]
        sse = (c2[b] - c2[a]) - (c1[b] - c1[a]) ** 2 / dw
    # a cell [a, b) needs a < b (an empty cell would repeat a value); rounding can make a tiny SSE negative
    cost = np.where(a < b, np.maximum(np.nan_to_num(sse, nan=0.0), 0.0), np.inf)
    best = c2.copy()                       # D_1: the zero level takes the points [0, b)
    choice = []
    for _ in range(levels - 1):
        total = best[:, None] + cost       # [a, b]
        arg = np.argmin(total, axis=0)
        best = total[arg, np.arange(n + 1)]
        choice.append(arg)
    if not np.isfinite(best[n]):
        return None
    ends = [n]
    for arg in reversed(choice):
        ends.append(int(arg[ends[-1]]))
    ends.reverse()                         # ends[0]: end of the zero cell; ends[k]: end of cell k
    lo, hi = np.array(ends[:-1]), np.array(ends[1:])
    values = np.concatenate(([0.0], (c1[hi] - c1[lo]) / (cw[hi] - cw[lo])))
    return values if np.all(np.diff(values) > 0) else None
