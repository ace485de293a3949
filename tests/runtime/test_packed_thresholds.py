"""The 8-bit quantizer's 32-bit bucket index (ThresholdTable::packed: one dword gather per 16 accumulators on
AVX-512) against #{j : T_j <= acc}: threshold sets built to sit on its edges (duplicate small integers in width-1
buckets, thresholds at a bucket's first and last value, residuals up to 2^24 - 1 at 2^29, the 2^30 clamp, a
first threshold of 1) and accumulators at, around and between them, through the same K = 1 layers as
test_thresholds.py (QGemm, the register-tiled QConv edge, depthwise)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.helpers import ISAS, cpu_has, model_of, run_ort
from tests.runtime.threshold_cases import check_levels, probe_biases
from wqcompile.runtime_ops.qrelu import qrelu_reference

pytestmark = [pytest.mark.requires_ops_lib]

ISA_PARAMS = [pytest.param(i, marks=pytest.mark.skipif(not cpu_has(i), reason=f"CPU lacks {i}")) for i in ISAS]


def _wq_small_ints(rng, count):
    """WQ-like: the lowest levels round to 1, 2, 3 ... (duplicates in width-1 buckets), then log-spaced."""
    step = int(rng.choice([1, 2, 3]))
    j = np.arange(count, dtype=np.float64)
    t = np.ceil(np.exp2((j - count) * step / 16 + float(rng.uniform(18, 29.9))))
    t[0] = max(t[0], 1)
    return np.clip(t, 1, 2**30)


def _bucket_edges(rng, count):
    """One threshold per bucket at its first value, its last value or in between, e from 5 to 30."""
    e = np.sort(rng.integers(5, 31, count))
    m = rng.integers(0, 32, count)
    start = (32 + m).astype(np.int64) << (e - 5)
    width = np.int64(1) << (e - 5)
    where = rng.integers(0, 3, count)
    t = np.where(where == 0, start, np.where(where == 1, start + width - 1, start + width // 2))
    t = np.unique(np.minimum(t, 2**30))
    t = t[np.concatenate([[True], _bucket(t[1:]) != _bucket(t[:-1])])]   # one threshold per bucket
    return np.concatenate([t, np.full(count - t.size, 2**30)]) if t.size < count else t


def _bucket(v):
    """threshold_bucket for v >= 1: 1 + 32 e + the 5 bits below the leading one."""
    v = np.asarray(v, dtype=np.int64)
    e = np.floor(np.log2(v)).astype(np.int64)
    return 1 + 32 * e + ((v << 5) >> e) % 32


def _rows(seed):
    rng = np.random.default_rng(9100 + seed)
    count = int(rng.choice([16, 17, 64, 200, 255]))
    make = _wq_small_ints if seed % 2 == 0 else _bucket_edges
    return rng, np.array([np.sort(make(rng, count)) for _ in range(3)], dtype=np.int64).astype(np.int32)


def _probes(rng, t):
    e = rng.integers(0, 30, 24)
    m = rng.integers(0, 32, 24)
    starts = np.where(e >= 5, (32 + m).astype(np.int64) << np.maximum(e - 5, 0), 1 + rng.integers(0, 32, 24))
    powers = np.int64(2) ** np.arange(31)
    return np.concatenate([np.unique(t), starts, starts - 1, powers, powers - 1])


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("op", ["QGemm", "QConv", "depthwise"])
def test_packed_index_edges(isa, seed, op):
    rng, rows = _rows(seed)
    bias, row_of = probe_biases(rng, rows, _probes)
    check_levels(rng, rows[row_of], bias, op, isa, threads=1 + seed % 2)


# ---- QRelu: the same index on the float32 bits (FloatThresholds::packed) ----

def _float_rows(rng, count):
    kind = int(rng.integers(0, 3))
    if kind == 0:      # WQ-like: the smallest float32 >= 2^((fsr + j step)/16), strict first threshold
        step = int(rng.choice([1, 2, 3, 4]))
        j = np.arange(count, dtype=np.float64)
        t = np.exp2((float(rng.integers(-200, 0)) + j * step) / 16 + float(rng.integers(-30, 30)))
        t32 = t.astype(np.float32)
        t32 = np.where(t32.astype(np.float64) < t, np.nextafter(t32, np.float32(np.inf)), t32)
        t32[0] = np.nextafter(t32[0], np.float32(np.inf))
        return t32
    if kind == 1:      # one per key at the key's first or last float, up to 31.9 octaves above the first
        keys = np.sort(rng.choice(1023, count, replace=False)) + int(rng.integers(32 * 100, 32 * 140))
        low = np.where(rng.random(count) < 0.5, 0, 0x3FFFF) if rng.random() < 0.7 else rng.integers(0, 1 << 18, count)
        return ((keys.astype(np.int64) << 18) | low).astype(np.int32).view(np.float32)
    if rng.random() < 0.5:   # denormals and the smallest normals at the bottom
        keys = np.sort(rng.choice(1000, count, replace=False)) + int(rng.integers(0, 20))
        return ((keys.astype(np.int64) << 18) | rng.integers(1, 1 << 18, count)).astype(np.int32).view(np.float32)
    # the largest floats and +Inf on top (Inf's key is 8160)
    keys = np.sort(rng.choice(1000, count - 1, replace=False)) + 8160 - 1001
    bits = np.concatenate([(keys.astype(np.int64) << 18) | rng.integers(0, 1 << 18, count - 1), [0x7F800000]])
    return bits.astype(np.int32).view(np.float32)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(12))
def test_qrelu_packed_index(isa, seed):
    rng = np.random.default_rng(9400 + seed)
    count = int(rng.choice([16, 17, 100, 255]))
    t = _float_rows(rng, count)
    assert np.all(np.diff(t) > 0) and t[0] > 0
    probes = [t, np.nextafter(t, np.float32(-np.inf)), np.nextafter(t, np.float32(np.inf)),
              np.float32([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3e38, -3e38]),
              (rng.choice([-1, 1], 400) * np.exp2(rng.uniform(-149, 128, 400))).astype(np.float32),
              ((rng.integers(0, 1 << 13, 200).astype(np.int64) << 18) | rng.integers(0, 1 << 18, 200)).astype(np.int32).view(np.float32)]
    x = np.concatenate([p.astype(np.float32) for p in probes])
    x = np.concatenate([x, np.zeros(-x.size % 16 + 5, np.float32)])   # a tail shorter than a vector
    with np.errstate(invalid="ignore"):
        want = (t[None, :] <= x[:, None]).sum(-1).astype(np.uint8)
    assert np.array_equal(qrelu_reference(x, t), want)
    model = model_of("QRelu", [("X", x), ("thresholds", t)], {}, np.uint8)
    got = run_ort(model, {"X": x}, isa, threads=1 + seed % 2)
    assert got.dtype == np.uint8 and np.array_equal(got, want), f"{int((got != want).sum())} levels differ"
