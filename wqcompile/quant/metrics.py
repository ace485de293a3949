"""Quantization quality metrics."""

from __future__ import annotations

import logging
import math

import numpy as np

logger = logging.getLogger(__name__)


def sqnr_db(w: np.ndarray, wq: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio ``10·log10(Σw² / Σ(w − wq)²)`` in dB.

    Args:
        w: reference values (any shape).
        wq: quantized values, same shape as ``w``.

    Returns:
        The SQNR in dB, computed in float64. ``+inf`` when ``wq == w`` exactly (this includes an
        all-zero ``w`` reproduced exactly); ``-inf`` when ``w`` is all zero but ``wq`` is not.
    """
    w = np.asarray(w, dtype=np.float64)
    wq = np.asarray(wq, dtype=np.float64)
    if w.shape != wq.shape:
        raise ValueError(f"sqnr_db: shape mismatch {w.shape} vs {wq.shape}")
    signal = float(np.sum(w * w))
    noise = float(np.sum((w - wq) ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)
