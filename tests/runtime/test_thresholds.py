"""The fused output quantizer's O(1) bucket index (ThresholdTable::bucket) against `np.searchsorted(T, acc, 'right')`
= #{j : T_j ≤ acc}, on every instruction-set path: WQ-like log-spaced thresholds and adversarial ones (duplicates,
clusters, ±2^30 clamps, negatives, uniform and log-uniform random), with accumulators at, one below and one above
every threshold and at random values. The accumulator is driven exactly through a K = 1 layer with weight 1:
acc = X + bias, X an integer in [-32767, 32767] (x_shift 0), bias per output; QGemm, a dense 1x1 QConv (the
register-tiled GEMM edge) and a depthwise 1x1 QConv (the depthwise kernel's fused edge)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.helpers import ISAS, cpu_has
from tests.runtime.threshold_cases import BIAS_MAX, DELTAS, check_levels, probe_biases

pytestmark = [pytest.mark.requires_ops_lib]

ISA_PARAMS = [pytest.param(i, marks=pytest.mark.skipif(not cpu_has(i), reason=f"CPU lacks {i}")) for i in ISAS]


def _wq_like(rng, count):
    step = float(rng.choice([1, 1, 2, 3, 4, 8, 0.5, 0.25]))   # < 1: denser than WQ's grid (search fallback)
    fsr = float(rng.integers(-64, 1))
    s = float(rng.integers(-2, 26))
    j = np.arange(count, dtype=np.float64)
    t = np.exp2((fsr + (j - 1) * step) / 16 + s)
    t = np.concatenate([[np.floor(t[0]) + 1], np.ceil(t[1:])])
    if rng.random() < 0.3:            # a folded Clip: the top thresholds become unreachable
        t[int(rng.integers(0, count)):] = 2**30
    return np.clip(t, -2**30, 2**30)


def _adversarial(rng, count):
    kind = int(rng.integers(0, 7))
    if kind == 0:                      # all equal
        t = np.full(count, rng.integers(-2**30, 2**30 + 1))
    elif kind == 1:                    # clustered within a few units
        t = rng.integers(-3, 4, count) + rng.integers(-2**29, 2**29)
    elif kind == 2:                    # clamps at both ends, a few duplicates in between
        t = rng.choice(np.concatenate([[-2**30, 2**30], rng.integers(1, 1 << 20, 4)]), count)
    elif kind == 3:                    # uniform
        t = rng.integers(-2**30, 2**30 + 1, count)
    elif kind == 4:                    # log-uniform of both signs
        t = np.rint(rng.choice([-1, 1], count) * np.exp2(rng.uniform(0, 30, count)))
    elif kind == 5:                    # small integers around 0 (buckets of width 1)
        t = rng.integers(-20, 40, count)
    else:                              # powers of two and their neighbours (bucket edges)
        e = rng.integers(0, 31, count)
        t = (2.0 ** e) + rng.integers(-1, 2, count)
    return np.clip(t, -2**30, 2**30)


def _threshold_rows(seed):
    rng = np.random.default_rng(7000 + seed)
    count = int(rng.choice([1, 15, 16, 17, 31, 63, 200, 255]))
    rows = [np.sort(_wq_like(rng, count) if rng.random() < 0.6 else _adversarial(rng, count)) for _ in range(3)]
    return rng, np.array(rows, dtype=np.int64).astype(np.int32)


def _probes(rng, t):
    """Each threshold (probed at and around it through DELTAS) and random values."""
    return np.concatenate([np.unique(t), rng.integers(-BIAS_MAX, BIAS_MAX + 1, 8),
                           np.rint(rng.choice([-1, 1], 8) * np.exp2(rng.uniform(0, 30, 8)))])


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(24))
@pytest.mark.parametrize("op", ["QGemm", "QConv", "depthwise"])
def test_levels_equal_searchsorted(isa, seed, op):
    rng, rows = _threshold_rows(seed)
    bias, row_of = probe_biases(rng, rows, _probes)
    n = bias.size
    thresholds = rows[row_of]                       # Gc = N: every output its own row
    acc, want = check_levels(rng, thresholds, bias, op, isa, threads=1 + seed % 2)
    for g in range(n):                              # the count is searchsorted(T, acc, side="right")
        a = np.moveaxis(acc, 1, 0)[g] if op != "QGemm" else acc[:, g]
        w = np.moveaxis(want, 1, 0)[g] if op != "QGemm" else want[:, g]
        assert np.array_equal(np.searchsorted(thresholds[g], a, side="right"), w)
