"""The 8-bit quantizer's packed bucket index at finer resolutions (ThresholdTable::packed_bits 5..9, chosen per
table) against #{j : T_j <= acc}: near-uniform 255-threshold sets like the Lloyd and linear activation quantizers
produce (denser than 1/32 octave at their top end), with jitter, duplicates at the bottom and the 2^30 clamp, and
accumulators at, around and between them and at bucket starts of every resolution, through the same K = 1 layers
as test_packed_thresholds.py (QGemm, the register-tiled QConv edge, depthwise), with
WQCOMPILE_REQUIRE_THRESHOLD_INDEX=1 (a table without the packed or octave index is an error)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.helpers import ISAS, cpu_has
from tests.runtime.threshold_cases import check_levels, probe_biases

pytestmark = [pytest.mark.requires_ops_lib]

ISA_PARAMS = [pytest.param(i, marks=pytest.mark.skipif(not cpu_has(i), reason=f"CPU lacks {i}")) for i in ISAS]


def _linear(rng, count):
    """Uniform levels: t_j = round(offset + (j + 1) · step), step from 1 to 2^22 (the top is 1/255 of itself apart)."""
    step = float(np.exp2(rng.uniform(0, 22)))
    offset = float(rng.uniform(-0.5, 0.5)) * step
    return np.round(offset + np.arange(1, count + 1) * step)


def _lloyd(rng, count):
    """Lloyd-like: midpoints of levels whose spacing grows slowly (a peaked distribution), jittered."""
    top = float(np.exp2(rng.uniform(9, 29.9)))
    spacing = np.exp(np.linspace(0, float(rng.uniform(0, 2.5)), count)) * (1 + 0.2 * rng.random(count))
    levels = np.concatenate([[0], np.cumsum(spacing)])
    levels = levels / levels[-1] * top
    return np.round((levels[:-1] + levels[1:]) / 2)


def _dense_top(rng, count):
    """Linear thresholds ending just below 2^30 (clamped there), or packed against the top of an octave."""
    t = _linear(rng, count)
    if rng.random() < 0.5:
        t = t / t[-1] * float(rng.uniform(2**29, 2**30 + 2**28))
    return np.round(t)


def _rows(seed):
    rng = np.random.default_rng(9700 + seed)
    count = 255 if seed % 3 else int(rng.choice([16, 64, 200]))
    make = [_linear, _lloyd, _dense_top][seed % 3]
    rows = []
    for _ in range(3):
        t = np.clip(np.sort(make(rng, count)), 1, 2**30)
        rows.append(t)
    return rng, np.array(rows, dtype=np.int64).astype(np.int32)


def _starts(rng, n):
    """Bucket starts and ends at resolutions 5..9."""
    p = rng.integers(5, 10, n)
    e = rng.integers(0, 30, n)
    m = rng.integers(0, 1 << 9, n) % (np.int64(1) << p)
    return np.where(e >= p, ((np.int64(1) << p) + m) << np.maximum(e - p, 0), 1 + rng.integers(0, 512, n))


def _probes(rng, t):
    u = np.unique(t).astype(np.int64)
    mid = (u[:-1] + u[1:]) // 2
    s = _starts(rng, 48)
    return np.concatenate([u, u - 1, mid, s, s - 1, np.int64(2) ** np.arange(31) - 1])


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(9))
@pytest.mark.parametrize("op", ["QGemm", "QConv", "depthwise"])
def test_dense_thresholds(isa, seed, op, monkeypatch):
    # every row must get the packed (or octave) index: the kernel refuses a table left to the bucket search
    # (ThresholdTable::packed_bits chosen per table; the generic edge of baseline / AVX2 uses it too)
    monkeypatch.setenv("WQCOMPILE_REQUIRE_THRESHOLD_INDEX", "1")
    if seed % 4 == 3:
        monkeypatch.setenv("WQCOMPILE_NO_VBMI", "1")
    rng, rows = _rows(seed)
    bias, row_of = probe_biases(rng, rows, _probes)
    check_levels(rng, rows[row_of], bias, op, isa, threads=1 + seed % 2)
