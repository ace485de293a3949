"""Deterministic 1-D minimisation of a scale parameter over ``(0, upper]``."""

from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np

logger = logging.getLogger(__name__)

_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0  # golden-section ratio 1/φ


def minimize_scale(f: Callable[[float], float], upper: float, *, grid: int = 512, iters: int = 80) -> float:
    """Minimise ``f`` over ``(0, upper]``: a dense grid, then golden-section around the best point.

    Quantization error as a function of the scale is piecewise smooth and not unimodal, so the grid
    finds the basin (``upper·i/grid``, ``i = 1..grid``; the first minimum wins) and golden-section
    refines inside ``[x_{i−1}, x_{i+1}]``. The refined point is kept only if it is strictly better.
    """
    xs = upper * np.arange(1, grid + 1) / grid
    fs = np.array([f(float(x)) for x in xs])
    i = int(np.argmin(fs))
    best_x, best_f = float(xs[i]), float(fs[i])
    a = float(xs[i - 1]) if i > 0 else 0.0
    b = float(xs[min(i + 1, grid - 1)])
    c, d = b - _INV_PHI * (b - a), a + _INV_PHI * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _INV_PHI * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _INV_PHI * (b - a)
            fd = f(d)
    for x, fx in ((c, fc), (d, fd)):
        if 0.0 < x <= upper and fx < best_f:
            best_x, best_f = x, fx
    return best_x
