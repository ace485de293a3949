"""Unsigned activation quantizer: level values plus threshold comparisons (wq-algorithm.md §3.2, §8).

An :class:`ActQuantizer` maps an activation ``x`` to a level in ``0 .. L−1`` by comparisons against
``L − 1`` increasing thresholds, in float64:

    level(x) = 0                                   if not (x > T_0)
             = 1 + #{n >= 1 : x >= T_n}            otherwise

For strictly increasing thresholds this is the code's ``[x > T_0] + Σ_{n≥1} [x >= T_n]``: a value
exactly on the zero threshold goes to level 0 (CUDA ``round(−0.5) = −1``) and a value exactly on any
other threshold goes up. NaN and ``x <= 0`` give level 0, ``+inf`` the top level. Do not use ONNX
``Round`` (half to even) to implement it: it disagrees at the ties.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from .log_grid import pow2_16

logger = logging.getLogger(__name__)


def _readonly(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.setflags(write=False)
    return view


@dataclasses.dataclass(frozen=True, eq=False)
class ActQuantizer:
    """A fitted per-tensor activation quantizer.

    Attributes:
        values: float64, length L; ``values[0] == 0`` and strictly increasing.
        thresholds: float64, length L − 1, non-decreasing; ``thresholds[0]`` is strict (module docs).
        method: ``"wq"``, ``"linear"``, ``"miyashita"`` or ``"zero"``.
        fsr: WQ LogQuant parameter: exponent of the *lowest* non-zero level in 1/16 octaves (None for
            quantizers that are not on the 2^(k/16) grid).
        step: spacing between levels in 1/16 octaves (even; None when not on the grid).
        info: fitter diagnostics.

    Example:
        >>> q = ActQuantizer.log(-15, 6, 8)
        >>> [round(float(v), 4) for v in q([0.45, 0.7, 1.0, 5.0])]
        [0.0, 0.6771, 1.1388, 2.4837]
    """

    values: np.ndarray
    thresholds: np.ndarray
    method: str
    fsr: int | None = None
    step: int | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        thresholds = np.asarray(self.thresholds, dtype=np.float64)
        if values.ndim != 1 or not 2 <= values.size <= 256:
            raise ValueError(f"ActQuantizer: need 2..256 level values, got shape {values.shape}")
        if thresholds.shape != (values.size - 1,):
            raise ValueError(f"ActQuantizer: need {values.size - 1} thresholds, got {thresholds.shape}")
        if values[0] != 0.0 or not np.all(np.diff(values) > 0):
            raise ValueError("ActQuantizer: values must start at 0 and increase strictly")
        if np.any(thresholds[1:] < thresholds[:-1]) or np.isnan(thresholds).any():
            raise ValueError("ActQuantizer: thresholds must be non-decreasing")
        object.__setattr__(self, "values", _readonly(values))
        object.__setattr__(self, "thresholds", _readonly(thresholds))

    @property
    def levels(self) -> int:
        """Number of levels L (including level 0)."""
        return int(self.values.size)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Return the level index (uint8) of every element of ``x`` (compared in float64)."""
        x = np.asarray(x, dtype=np.float64)
        above_zero = x > self.thresholds[0]  # strict; False for NaN
        # side="right" counts thresholds T_n <= x, i.e. the non-strict comparisons x >= T_n.
        upper = np.searchsorted(self.thresholds[1:], x, side="right")
        return np.where(above_zero, upper + 1, 0).astype(np.uint8)

    def dequantize(self, idx: np.ndarray) -> np.ndarray:
        """Return the float64 level values ``values[idx]``."""
        return self.values[np.asarray(idx)]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Fake-quantize: ``dequantize(quantize(x))``."""
        return self.dequantize(self.quantize(x))

    @classmethod
    def log(cls, fsr: int, step: int, levels: int, *, method: str = "wq", info: dict | None = None) -> ActQuantizer:
        """WQ LogQuant: values ``0, 2^((fsr + (n−1)·step)/16)`` for ``n = 1 .. L−1``.

        Thresholds (``h = step/2``): ``T_0 = 2^((fsr − h)/16)`` and
        ``T_n = 2^((fsr + (n−1)·step + h)/16)`` for ``n = 1 .. L−2``: the code's round-half-away
        boundaries in ``t = 16·log2(x)``, all on the histogram's bin edges (:func:`pow2_16`).

        Args:
            fsr: exponent of the lowest non-zero level, in 1/16 octaves.
            step: even spacing in 1/16 octaves (2 .. 32 from the search; any even ``>= 2`` accepted).
            levels: L, 2..256.
        """
        fsr, step, levels = int(fsr), int(step), int(levels)
        if step < 2 or step % 2:
            raise ValueError(f"LogQuant step must be an even integer >= 2, got {step}")
        if not 2 <= levels <= 256:
            raise ValueError(f"LogQuant levels must be in [2, 256], got {levels}")
        h = step // 2
        n = np.arange(1, levels)
        values = np.concatenate(([0.0], pow2_16(fsr + (n - 1) * step)))
        thresholds = pow2_16(np.concatenate(([fsr - h], fsr + (n[:-1] - 1) * step + h)))
        return cls(values, thresholds, method, fsr=fsr, step=step, info=dict(info or {}))

    @classmethod
    def zero(cls, levels: int, *, info: dict | None = None) -> ActQuantizer:
        """The all-zero quantizer (no positive calibration data): every input maps to level 0.

        Values are the valid placeholder grid of ``fsr = 0, step = 2``; all thresholds are ``+inf``,
        and the strict first threshold keeps even ``+inf`` at level 0.
        """
        placeholder = cls.log(0, 2, levels)
        thresholds = np.full(levels - 1, np.inf)
        return cls(placeholder.values, thresholds, "zero", fsr=0, step=2, info=dict(info or {}))
