"""Sorted values with prefix sums: O(K log N) squared error of a K-value nearest-level quantizer."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


class SortedStats:
    """Ascending float64 values (optionally with integer weights) and exclusive prefix sums.

    Every nearest-value quantizer assigns contiguous runs of the sorted values to each level, so
    its squared error needs only a binary search per level boundary and a few prefix differences.
    ``n``, ``s1`` and ``s2`` are the prefix sums of the weights, of ``w·x`` and of ``w·x²``.
    """

    def __init__(self, x: np.ndarray, weights: np.ndarray | None = None) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        if weights is None:
            self.x = np.sort(x)
            wts = np.ones(self.x.size)
        else:
            order = np.argsort(x, kind="stable")
            self.x = x[order]
            wts = np.asarray(weights, dtype=np.float64).ravel()[order]
        self.n = np.concatenate(([0.0], np.cumsum(wts)))
        self.s1 = np.concatenate(([0.0], np.cumsum(wts * self.x)))
        self.s2 = np.concatenate(([0.0], np.cumsum(wts * self.x * self.x)))

    @property
    def size(self) -> int:
        return int(self.x.size)

    def cell_sums(self, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per level: (weight, Σ w·x, Σ w·x²) of the values nearest to it."""
        c = self.cells(np.asarray(levels, dtype=np.float64))
        return (
            self.n[c[1:]] - self.n[c[:-1]],
            self.s1[c[1:]] - self.s1[c[:-1]],
            self.s2[c[1:]] - self.s2[c[:-1]],
        )

    def cells(self, levels: np.ndarray) -> np.ndarray:
        """Start indices (length K+1, last = N) of each level's run; midpoint ties go up."""
        mids = 0.5 * levels[1:] + 0.5 * levels[:-1]
        return np.concatenate(([0], np.searchsorted(self.x, mids, side="left"), [self.size]))

    def sse(self, levels: np.ndarray) -> float:
        """Σ w·(x − nearest level)² for sorted ``levels``."""
        levels = np.asarray(levels, dtype=np.float64)
        n, t1, t2 = self.cell_sums(levels)
        # Σ(x − r)² = Σx² − 2rΣx + n r²; clipped at 0 against cancellation in the prefix differences.
        return float(max(np.sum(t2 - 2.0 * levels * t1 + n * levels * levels), 0.0))
