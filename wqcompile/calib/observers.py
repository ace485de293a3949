"""Streaming observers beyond the log histogram (:class:`wqcompile.quant.LogHistogram`)."""

from __future__ import annotations

import numpy as np


class ChannelMeanObserver:
    """Running per-channel mean of a tensor along ``axis`` (memory: one float64 per channel).

    Example:
        >>> obs = ChannelMeanObserver(axis=1)
        >>> obs.update(np.ones((2, 3, 4, 4), np.float32)); obs.mean.tolist()
        [1.0, 1.0, 1.0]
    """

    def __init__(self, axis: int) -> None:
        self.axis = axis
        self.sum: np.ndarray | None = None
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        axis = self.axis % x.ndim
        reduce = tuple(a for a in range(x.ndim) if a != axis)
        part = x.sum(axis=reduce, dtype=np.float64)
        self.sum = part if self.sum is None else self.sum + part
        self.count += x.size // x.shape[axis]

    @property
    def mean(self) -> np.ndarray:
        if self.sum is None or self.count == 0:
            raise ValueError("no data observed")
        return self.sum / self.count
