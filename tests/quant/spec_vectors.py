"""Inputs of the test vectors of wq-algorithm.md §2.7 and §7, built exactly as the spec describes."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from wqcompile.quant import LogHistogram

#: §2.7 worked example.
WORKED_W = np.array([0.05, -0.1, 0.2, -0.3, 0.4, -0.5, 0.8, -1.2])


def normal_quantile_weights() -> np.ndarray:
    """§7.2: ``w_i = 0.02·Φ⁻¹((i + 0.5)/1000)``, i = 0..999, with every ``|w|`` distinct.

    ``NormalDist.inv_cdf`` is odd-symmetric in ``p − 0.5``, so 295 of the 500 pairs ``±w`` come out
    as exact ties in ``|w|``. The spec's distinct-value grid (§2.3 step 2) must keep a tie together,
    while the §7.2 vectors split such pairs (e.g. the L=8 slice 663 is odd). The reference model's
    magnitudes were therefore all distinct; we reproduce that by moving the positive member of each
    exactly tied pair up by one ulp (a relative change of 1e-16, far below the listed digits).
    """
    nd = NormalDist()
    w = np.array([0.02 * nd.inv_cdf((i + 0.5) / 1000) for i in range(1000)])
    tied = (w > 0) & np.isin(w, -w[w < 0])
    w[tied] = np.nextafter(w[tied], np.inf)
    return w


def normal_quantile_weights_with_ties() -> np.ndarray:
    """§7.2 weights straight from ``NormalDist.inv_cdf`` (295 exact ``|w|`` ties)."""
    nd = NormalDist()
    return np.array([0.02 * nd.inv_cdf((i + 0.5) / 1000) for i in range(1000)])


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def relu_normal_histogram() -> LogHistogram:
    """§7.3: ``count[b] = round(1e6·2·(Φ(2^((b+1)/16)) − Φ(2^(b/16))))`` over b ∈ [−640, 383].

    The bottom bin starts at 0 (``Φ(0)``) and the top bin is open-ended (``Φ(∞) = 1``).
    """
    bins = range(-640, 384)
    counts = []
    for b in bins:
        lower = 0.5 if b == -640 else _phi(2.0 ** (b / 16))
        upper = 1.0 if b == 383 else _phi(2.0 ** ((b + 1) / 16))
        counts.append(round(1e6 * 2 * (upper - lower)))
    return LogHistogram.from_bin_counts(np.array(counts), -640)
