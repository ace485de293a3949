"""OptSearch: weighted-entropy clustering of weight magnitudes (wq-algorithm.md §2.3, §2.5, §8).

The magnitudes are sorted and run-length encoded into distinct values ``u_j`` with counts; cluster
boundaries live on that distinct-value grid (so equal magnitudes are never split). With exclusive
prefix sums ``CN`` (counts, int64) and ``CS`` (Σ m², float64) the term of a cluster ``[a, b)`` is

    φ(a, b) = −(T / N) · ln(n / (den · N)),   n = CN[b] − CN[a],   T = CS[b] − CS[a],

and OptSearch maximises ``S(c) = Σ_{k ≥ z} φ(c_{k−1}, c_k)`` by coordinate ascent from equal-count
boundaries. ``z = 1`` makes cluster 0 a zero cluster that is left out of the entropy.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

SearchMode = Literal["exact", "bisect"]


@dataclasses.dataclass(frozen=True, eq=False)
class OptSearchResult:
    """Result of :func:`optsearch` for one group of magnitudes.

    Attributes:
        slices: int64, per cluster the exclusive end index over the *sorted magnitudes* (units of
            weights, i.e. ``CN[c_k]``; the last one is N). Unused (padded) clusters end at N.
        r: float64 representatives ``sqrt(T_k / n_k)``; ``r[0] = 0`` for a zero cluster; unused
            clusters repeat the top used representative.
        b: float64 thresholds: ``b[0] = 0``, ``b[k]`` = smallest member magnitude of cluster k;
            ``+inf`` for unused clusters (so nothing is ever assigned to them).
        S: objective value ``Σ_{k ≥ z} φ`` of the returned state.
        passes: number of coordinate-ascent passes executed (0 when no search was needed).
        used: number of clusters that can receive weights (``< len(r)`` only when padded).
        trace: with ``trace=True``, one dict per boundary update: ``pass``, ``k``, ``j`` (candidate
            slices in weight units) and ``f`` (local objective of each evaluated candidate).
    """

    slices: np.ndarray
    r: np.ndarray
    b: np.ndarray
    S: float
    passes: int
    used: int
    trace: list[dict[str, Any]] | None = None


def _run_length(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and counts of an ascending array (``np.unique`` without re-sorting)."""
    starts = np.flatnonzero(np.concatenate(([True], m[1:] != m[:-1])))
    counts = np.diff(np.append(starts, m.size))
    return m[starts], counts


class _Objective:
    """Prefix-sum evaluator of cluster terms on the distinct grid (O(1) per candidate)."""

    def __init__(self, u: np.ndarray, cnt: np.ndarray, den: float) -> None:
        self.CN = np.concatenate(([0], np.cumsum(cnt, dtype=np.int64)))
        self.CNf = self.CN.astype(np.float64)  # exact below 2^53 elements; avoids int->float per call
        self.sq = cnt * (u * u)  # Σ m² per distinct value
        self.CS = np.concatenate(([0.0], np.cumsum(self.sq)))
        self.N = int(self.CN[-1])
        self.log_den_n = float(np.log(den * self.N))

    def phi(self, a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
        """Cluster term φ(a, b) for non-empty clusters ``a < b`` (vectorised over a or b)."""
        n = self.CNf[b] - self.CNf[a]
        t = self.CS[b] - self.CS[a]
        # −(T/N)·ln(n/(den·N)) written as (ln n − ln(den·N))·T·(−1/N), the same arithmetic as local().
        return (np.log(n) - self.log_den_n) * t * (-1.0 / self.N)

    def local(self, lo: int, hi: int, ja: int, jb: int, count_lower: bool) -> np.ndarray:
        """Objective of the two clusters touched by a boundary at ``j ∈ [ja, jb)`` between ``lo`` and ``hi``.

        Contiguous slices and in-place arithmetic: the exact scan runs this over ~2M candidates
        per pass, so it avoids gathers and temporaries. Every element is computed with the same
        operations whatever the slice length, so a single-candidate call (bisection) returns the
        same value as the full scan.
        """
        cn, cs = self.CNf[ja:jb], self.CS[ja:jb]
        if ja == lo + 1 and jb == hi and self.CN[hi] - self.CN[lo] == hi - lo:
            # Full scan without ties: the lower sizes are 1..K and the upper sizes K..1, so one
            # table of logs serves both terms (the same values the general branch computes).
            log_lower = np.log(np.arange(1.0, hi - lo))
            log_lower -= self.log_den_n
            log_upper = log_lower[::-1]
        else:
            log_upper = np.log(self.CNf[hi] - cn)  # size of the upper cluster [j, hi)
            log_upper -= self.log_den_n
            log_lower = None
        f = self.CS[hi] - cs
        f *= log_upper
        if count_lower:
            if log_lower is None:
                log_lower = np.log(cn - self.CNf[lo])  # size of the lower cluster [lo, j)
                log_lower -= self.log_den_n
            g = cs - self.CS[lo]
            g *= log_lower
            f += g
        f *= -1.0 / self.N
        return f

    def total(self, c: np.ndarray, z: int) -> float:
        starts = np.concatenate(([0], c[:-1]))
        terms = self.phi(starts[z:], c[z:])
        return float(np.sum(terms))


def _equal_count_init(CN: np.ndarray, H: int) -> np.ndarray:
    """Equal-count boundaries ``floor(N(k+1)/H)`` mapped onto the distinct grid, made strictly increasing."""
    M = CN.size - 1
    N = int(CN[-1])
    targets = (N * np.arange(1, H + 1, dtype=np.int64)) // H
    c = np.searchsorted(CN, targets, side="left").astype(np.int64)
    c[-1] = M
    # Repair: cluster k needs c_k in [k+1, M−(H−1−k)]; then enforce strict increase upward.
    k = np.arange(H)
    c = np.clip(c, k + 1, M - (H - 1 - k))
    for i in range(1, H):
        c[i] = max(c[i], c[i - 1] + 1)
    return c


def _bisect(obj: _Objective, lo: int, hi: int, count_lower: bool, rec: list | None) -> int:
    """The code's slope bisection (caffe-WQ ``recUpdate``) over candidates ``lo+1 .. hi−1``.

    While the range has ≥ 3 candidates compare f(center) and f(center+1) and keep the side of the
    larger (ties go right); with two candidates left take the larger (ties take the right one).
    """
    begin, end = lo + 1, hi - 1

    def f(j: int) -> float:
        val = float(obj.local(lo, hi, j, j + 1, count_lower)[0])
        if rec is not None:
            rec.append((j, val))
        return val

    while end - begin >= 2:
        center = (begin + end) // 2
        if f(center) > f(center + 1):
            end = center
        else:
            begin = center
    if end - begin == 1:
        return begin if f(begin) > f(end) else end
    return begin


def _finish(
    obj: _Objective, u: np.ndarray, c: np.ndarray, z: int, H: int, S: float, passes: int, trace
) -> OptSearchResult:
    """Turn distinct-grid boundaries ``c`` (used clusters only) into slices, r, b; pad to H clusters."""
    used = c.size
    starts = np.concatenate(([0], c[:-1]))
    r = np.zeros(used)
    for k, (a, e) in enumerate(zip(starts, c)):
        if e > a:
            # RMS from a direct per-cluster sum (no prefix-difference cancellation), clipped into
            # [min, max] of the members: exact for single-valued clusters, and every r_k stays in
            # its own threshold cell [b_k, b_{k+1}) despite rounding.
            rms = np.sqrt(np.sum(obj.sq[a:e]) / (obj.CN[e] - obj.CN[a]))
            r[k] = min(max(rms, u[a]), u[e - 1])
    if z:
        r[0] = 0.0
    b = np.where(starts < u.size, u[np.minimum(starts, u.size - 1)], np.inf)
    b[0] = 0.0
    slices = obj.CN[c]
    pad = H - used
    if pad:
        top = r[-1] if used else 0.0
        r = np.concatenate((r, np.full(pad, top)))
        b = np.concatenate((b, np.full(pad, np.inf)))
        slices = np.concatenate((slices, np.full(pad, obj.N, dtype=np.int64)))
    return OptSearchResult(slices=slices, r=r, b=b, S=S, passes=passes, used=used, trace=trace)


def optsearch(
    magnitudes: np.ndarray,
    clusters: int,
    *,
    den: float = 2.0,
    zero_cluster: bool = False,
    search: SearchMode = "exact",
    max_passes: int = 10000,
    rtol: float = 1e-12,
    trace: bool = False,
) -> OptSearchResult:
    """Weighted-entropy OptSearch over one group of non-negative, finite magnitudes.

    Args:
        magnitudes: ``|w|`` of the group (any order, any shape; must be finite and ``>= 0``).
        clusters: number of magnitude clusters including the zero cluster (symmetric mode:
            ``H = (L+1)//2``).
        den: the ``2`` of ``ln(n/(2N))`` in symmetric mode; ``1`` for ``per_sign`` groups.
        zero_cluster: cluster 0 is a zero cluster (``r_0 = 0``, excluded from S); odd L.
        search: ``"exact"`` scans every admissible j (ties → smallest j); ``"bisect"`` is the
            code's slope bisection (ties → right).
        max_passes: cap on coordinate-ascent passes.
        rtol: stop when a pass raises S by no more than ``rtol`` relative.
        trace: record every boundary update (for tests and debugging).

    Returns:
        An :class:`OptSearchResult`. All-zero input gives zero representatives and ``S = 0``; with
        too few distinct magnitudes every distinct value gets its own cluster and no search runs.
    """
    if clusters < 1 or (zero_cluster and clusters < 2):
        raise ValueError(f"optsearch: invalid number of clusters {clusters} (zero_cluster={zero_cluster})")
    if search not in ("exact", "bisect"):
        raise ValueError(f"optsearch: unknown search mode {search!r}")
    m = np.sort(np.asarray(magnitudes, dtype=np.float64).ravel())
    if m.size == 0:
        raise ValueError("optsearch: empty magnitude group")
    # Scale by a power of two so that max m is in [0.5, 1): exact, so every comparison and the
    # argmax decisions are unchanged, but m² can neither overflow nor underflow for extreme inputs.
    e = math.frexp(float(m[-1]))[1] if m[-1] > 0 else 0
    res = _search(np.ldexp(m, -e), clusters, int(bool(zero_cluster)), den, search, max_passes, rtol, trace)
    # S and f are quadratic in m; back in input units they may under/overflow for extreme inputs.
    with np.errstate(over="ignore", under="ignore"):
        r, b, S = np.ldexp(res.r, e), np.ldexp(res.b, e), float(np.ldexp(res.S, 2 * e))
        if res.trace is not None:
            for entry in res.trace:
                entry["f"] = np.ldexp(entry["f"], 2 * e)
    return dataclasses.replace(res, r=r, b=b, S=S)


def _search(
    m: np.ndarray, H: int, z: int, den: float, search: str, max_passes: int, rtol: float, trace: bool
) -> OptSearchResult:
    """OptSearch on sorted, scaled magnitudes (see :func:`optsearch`)."""
    u, cnt = _run_length(m)
    obj = _Objective(u, cnt, den)
    M = u.size
    rec: list[dict[str, Any]] | None = [] if trace else None

    if obj.CS[-1] == 0.0:  # all magnitudes are zero: one cluster of zeros, no search
        return _finish(obj, u, np.array([M]), z, H, 0.0, 0, rec)

    nonzero_start = 1 if u[0] == 0.0 else 0
    if (z == 0 and M <= H) or (z == 1 and M - nonzero_start <= H - 1):
        # Few distinct magnitudes: one cluster per distinct value (lossless), no search. With a zero
        # cluster, cluster 0 holds the exact zeros (possibly none: then c_0 = 0 and it is empty).
        c = np.arange(1, M + 1, dtype=np.int64)
        if z == 1 and nonzero_start == 0:
            c = np.concatenate(([0], c))
        return _finish(obj, u, c, z, H, obj.total(c, z), 0, rec)

    c = _equal_count_init(obj.CN, H)
    S = obj.total(c, z)
    best_S, best_c = S, c.copy()
    # Boundary k's argmax depends only on its neighbours; skip re-scans while they are unchanged.
    dirty = np.ones(max(H - 1, 0), dtype=bool)
    passes = 0
    while passes < max_passes and H > 1:
        passes += 1
        for k in range(H - 1):
            lo = int(c[k - 1]) if k > 0 else 0
            hi = int(c[k + 1])
            if hi - lo <= 2:
                continue  # degenerate range: zero or one admissible j, nothing to choose
            if search == "exact" and not dirty[k]:
                continue  # neighbours unchanged since the last scan: same argmax
            count_lower = k >= z
            if search == "exact":
                f = obj.local(lo, hi, lo + 1, hi, count_lower)
                new = lo + 1 + int(np.argmax(f))  # first maximum = smallest j
                if rec is not None:
                    rec.append({"pass": passes - 1, "k": k, "j": obj.CN[lo + 1 : hi].copy(), "f": f})
            else:
                pairs: list | None = [] if rec is not None else None
                new = _bisect(obj, lo, hi, count_lower, pairs)
                if rec is not None:
                    js, fs = zip(*pairs) if pairs else ((), ())
                    rec.append({"pass": passes - 1, "k": k, "j": obj.CN[list(js)], "f": np.array(fs)})
            dirty[k] = False
            if new != c[k]:
                c[k] = new
                if k > 0:
                    dirty[k - 1] = True
                if k + 1 < H - 1:
                    dirty[k + 1] = True
        S_new = obj.total(c, z)
        if S_new > best_S:
            best_S, best_c = S_new, c.copy()
        if not S_new > S * (1.0 + rtol):
            break
        S = S_new
    else:
        if H > 1:
            logger.warning("OptSearch stopped at max_passes=%d before converging", max_passes)
    return _finish(obj, u, best_c, z, H, best_S, passes, rec)
