"""Input checks shared by the weight fitters."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

#: Largest supported number of levels (indices are stored as uint8).
MAX_LEVELS = 256


def check_levels(levels: int, *, minimum: int = 2) -> int:
    """Validate a level count (an int in ``[minimum, 256]``) and return it as ``int``."""
    if isinstance(levels, bool) or int(levels) != levels or not minimum <= levels <= MAX_LEVELS:
        raise ValueError(f"levels must be an integer in [{minimum}, {MAX_LEVELS}], got {levels!r}")
    return int(levels)


def as_finite_weights(w: np.ndarray, name: str) -> np.ndarray:
    """Return ``w`` as a non-empty float64 array, raising ``ValueError`` on NaN/Inf (naming ``name``)."""
    w = np.asarray(w)
    if w.size == 0:
        raise ValueError(f"{name}: cannot quantize an empty tensor")
    w = w.astype(np.float64, copy=False)
    if not np.isfinite(w).all():
        bad = int(np.count_nonzero(~np.isfinite(w)))
        raise ValueError(f"{name}: weights contain NaN/Inf ({bad} of {w.size} values are not finite)")
    return w


def all_zero_warning(w: np.ndarray, name: str) -> bool:
    """Warn and return True when every weight is zero (the fitters then emit a zero codebook)."""
    if np.any(w):
        return False
    logger.warning("%s: all %d weights are zero; emitting an all-zero codebook", name, w.size)
    return True
