"""Per-tensor weight codebook: sorted values plus one index per weight.

Every weight quantizer in :mod:`wqcompile.quant` returns a :class:`WeightCodebook`. Its assignment rule
is a monotone step function on the real line, stored as ``L − 1`` sorted edges: the index of ``x`` is
the number of edges it has passed, where a *strict* edge ``e`` is passed when ``x > e`` and a
non-strict edge when ``x >= e``. This one form covers both

* the WQ threshold rule (wq-algorithm.md §2.2: ``|w| >= b_k`` with ``sgn⁺``; negative-side edges are
  strict because ``w = −b_k`` belongs to the larger magnitude cluster), and
* nearest-value assignment (edges at midpoints, ties go up) used by the baselines.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _readonly(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.setflags(write=False)
    return view


def index_dtype(levels: int) -> type[np.unsignedinteger]:
    """Smallest unsigned dtype able to hold indices ``0 .. levels − 1`` (uint8 up to 256 levels)."""
    return np.uint8 if levels <= 256 else np.uint16


def assign_by_edges(x: np.ndarray, edges: np.ndarray, strict: np.ndarray, levels: int) -> np.ndarray:
    """Map ``x`` to codebook indices: the number of edges passed (see module docstring).

    Args:
        x: values to assign (any shape); compared in float64.
        edges: float64, sorted non-decreasing, length ``levels − 1``.
        strict: bool, same length; ``True`` means passed only when ``x > edge``.
        levels: number of codebook slots (sets the index dtype).

    Returns:
        Integer array of the shape of ``x``. NaN inputs land on the top index (they are never
        produced by the fitters, which reject NaN).
    """
    x = np.asarray(x, dtype=np.float64)
    # The count of passed edges decomposes over the two subsets, whatever their interleaving:
    # #{strict e < x} + #{non-strict e <= x}. Both subsets of a sorted array are sorted.
    idx = np.searchsorted(edges[strict], x, side="left")
    idx += np.searchsorted(edges[~strict], x, side="right")
    return idx.astype(index_dtype(levels), copy=False)


def nearest_edges(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges for nearest-value assignment over sorted ``values`` (ties go to the larger value).

    Repeated values (e.g. top padding) are never selected after their first occurrence: the edge
    between two equal slots is the midpoint to the next *distinct* value above, or ``+inf``.

    Returns:
        ``(edges, strict)`` with ``strict`` all ``False``.
    """
    values = np.asarray(values, dtype=np.float64)
    uniq = np.unique(values)
    nxt = np.searchsorted(uniq, values[:-1], side="right")  # index of the next distinct value
    has_next = nxt < uniq.size
    upper = uniq[np.minimum(nxt, uniq.size - 1)]
    edges = np.where(has_next, 0.5 * values[:-1] + 0.5 * upper, np.inf)
    return edges, np.zeros(edges.shape, dtype=bool)


@dataclasses.dataclass(frozen=True, eq=False)
class WeightCodebook:
    """A fitted per-tensor weight codebook.

    Attributes:
        values: float64, length ``levels``, sorted ascending (non-decreasing when padded). When the
            data has fewer distinct levels than slots, the unused slots repeat a used value
            (``info["unused_levels"]`` counts them) and are never selected by the assignment.
        indices: uint8 array with the shape of the fitted tensor, each in ``[0, levels)``.
        method: name of the fitter (``"wq"``, ``"linear"``, ``"log"``, ``"kmeans"``).
        info: fitter diagnostics (e.g. WQ ``slices``, ``r``, ``b``, ``S``, ``passes``).
        edges: float64, length ``levels − 1``: the assignment rule (module docstring).
        strict: bool, length ``levels − 1``: which edges are strict.

    Example:
        >>> import numpy as np
        >>> from wqcompile.quant import fit_weighted_entropy
        >>> cb = fit_weighted_entropy(np.array([-1.0, -0.5, 0.5, 1.0]), 4)
        >>> cb.values.tolist(), cb.dequantize().tolist()
        ([-1.0, -0.5, 0.5, 1.0], [-1.0, -0.5, 0.5, 1.0])
    """

    values: np.ndarray
    indices: np.ndarray
    method: str
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    edges: np.ndarray | None = None
    strict: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _readonly(np.asarray(self.values, dtype=np.float64)))
        object.__setattr__(self, "indices", _readonly(np.asarray(self.indices)))
        if self.edges is not None:
            edges = np.asarray(self.edges, dtype=np.float64)
            strict = np.zeros(edges.shape, bool) if self.strict is None else np.asarray(self.strict, bool)
            if edges.shape != (self.levels - 1,) or strict.shape != edges.shape:
                raise ValueError(f"WeightCodebook: need {self.levels - 1} edges, got {edges.shape}")
            object.__setattr__(self, "edges", _readonly(edges))
            object.__setattr__(self, "strict", _readonly(strict))

    @property
    def levels(self) -> int:
        """Number of codebook slots (``len(values)``)."""
        return int(self.values.shape[0])

    def dequantize(self) -> np.ndarray:
        """Return ``values[indices]`` (float64, the shape of the fitted tensor)."""
        return self.values[self.indices]

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Assign new values ``x`` to codebook indices with this codebook's rule.

        ``quantize(w)`` reproduces ``indices`` for the fitted tensor ``w``, and
        ``quantize(dequantize()) == indices`` (every used value lies in its own cell).
        """
        if self.edges is None:
            raise ValueError(f"codebook '{self.method}' carries no assignment edges")
        return assign_by_edges(x, self.edges, self.strict, self.levels)

    @classmethod
    def from_rule(
        cls,
        w: np.ndarray,
        values: np.ndarray,
        edges: np.ndarray,
        strict: np.ndarray,
        method: str,
        info: dict[str, Any],
    ) -> WeightCodebook:
        """Build a codebook whose ``indices`` are ``w`` assigned by ``(edges, strict)``."""
        values = np.asarray(values, dtype=np.float64)
        indices = assign_by_edges(w, np.asarray(edges, np.float64), np.asarray(strict, bool), values.size)
        return cls(values=values, indices=indices, method=method, info=info, edges=edges, strict=strict)
