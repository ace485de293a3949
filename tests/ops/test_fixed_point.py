"""Compile-time snapping (op-contract §1, §3, §5) against exact rational arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from tests.ops.oracles import ACC_MAX, acc_bound, quantize_input_naive, real_level
from wqcompile.runtime_ops.fixed_point import (
    ACC_LIMIT, UNREACHABLE, accumulator_bound, float32_thresholds, int_thresholds, mantissas, quantize_float_input,
    scale_shift,
)

SHIFTS = (-1100, -200, -60, -13, -1, 0, 1, 7, 16, 29, 45, 80, 200, 1100)
F32 = np.float32


def wq_thresholds(fsr: int, step: int, levels: int) -> np.ndarray:
    """WQ LogQuant thresholds (wq-algorithm §3.2) in real units: zero|1 at FSR−h, n|n+1 at FSR+(n−1)·step+h."""
    h = step / 2
    t = [fsr - h] + [fsr + (n - 1) * step + h for n in range(1, levels - 1)]
    return np.exp2(np.array(t) / 16)


def _ldexp(k: int, e: int) -> float:
    try:
        return math.ldexp(k, e)
    except OverflowError:
        return math.inf


def threshold_sets(shift: int):
    """Realistic and adversarial real threshold vectors for one accumulator shift."""
    rng = np.random.default_rng(shift + 5000)
    yield wq_thresholds(-40, 6, 16)
    yield wq_thresholds(int(rng.integers(-200, 40)), 2 * int(rng.integers(1, 8)), 32)
    yield np.sort(np.exp2(rng.uniform(-40, 40, 20)))
    # exact ties: t · 2^shift is an integer, so an accumulator can sit exactly on the real threshold
    # (for |shift| > 1000 some overflow float64 and are dropped, or round in the subnormal range: still valid)
    ties = [_ldexp(k, -shift) for k in (-7, -1, 0, 1, 2, 3, 1000, 2**29, 2**30 - 1, 2**30, 2**31)]
    yield np.array([t for t in ties if math.isfinite(t)])
    # extreme magnitudes: overflow / underflow of t · 2^shift, and signed zeros
    yield np.array([-1e300, -1e-300, -0.0, 0.0, 5e-324, 1e-300, 1e-30, 1e30, 1e300, 1.7976931348623157e308])
    yield np.array([-np.inf, 1.0, np.inf])


def accumulator_candidates(ints: np.ndarray, real: np.ndarray, shift: int, rng) -> list[int]:
    """Accumulators at, just below and just above every threshold, the ±2^30−1 ends, and random values."""
    cands = {0, 1, -1, ACC_MAX, -ACC_MAX}
    for t in real:
        if math.isfinite(t):
            v = Fraction(float(t)) * Fraction(2) ** shift
            cands.update(math.floor(v) + d for d in (-1, 0, 1, 2))
    for T in ints:
        cands.update(int(T) + d for d in (-1, 0, 1))
    cands.update(int(v) for v in rng.integers(-ACC_MAX, ACC_MAX + 1, 200))
    return sorted(c for c in cands if -ACC_MAX <= c <= ACC_MAX)


@pytest.mark.parametrize("shift", SHIFTS)
def test_int_thresholds_equal_the_real_quantizer_exactly(shift):
    rng = np.random.default_rng(abs(shift) + 17)
    for real in threshold_sets(shift):
        ints = int_thresholds(real, shift)
        assert ints.dtype == np.int32 and ints.shape == real.shape
        assert ints.min() >= -ACC_LIMIT and ints.max() <= UNREACHABLE
        for acc in accumulator_candidates(ints, real, shift, rng):
            y = Fraction(acc) * Fraction(2) ** -shift
            assert int(np.sum(acc >= ints.astype(np.int64))) == real_level(y, real), (shift, acc, real)


@pytest.mark.parametrize("shift", (-20, 0, 3, 12, 40))
def test_int_thresholds_tie_rules(shift):
    """acc exactly on t0·2^s stays below (strict); exactly on tj·2^s goes up (≥)."""
    t = np.array([math.ldexp(5, -shift), math.ldexp(9, -shift)])
    assert int_thresholds(t, shift).tolist() == [6, 9]


@pytest.mark.parametrize("shift", (-5, 0, 4, 11, 30))
def test_clip_folding_makes_thresholds_above_the_clip_unreachable(shift):
    rng = np.random.default_rng(shift + 99)
    real = wq_thresholds(-16, 8, 16)                                   # 2^-1.25 .. 2^6.75
    for clip in (6.0, float(real[5]), float(real[0]), float(np.nextafter(real[7], 0)), 0.75, 1000.0):
        ints = int_thresholds(real, shift, clip_max=clip)
        above = np.array([t >= clip if j == 0 else t > clip for j, t in enumerate(real)])
        assert np.all(ints[above] == UNREACHABLE)
        assert np.all(ints[~above] == int_thresholds(real, shift)[~above])
        for acc in accumulator_candidates(ints, real, shift, rng):
            y = Fraction(acc) * Fraction(2) ** -shift
            y_clipped = min(max(y, Fraction(0)), Fraction(clip))            # Clip(0, m) before the quantizer
            assert int(np.sum(acc >= ints.astype(np.int64))) == real_level(y_clipped, real), (clip, acc)


def test_clip_at_a_threshold_strict_vs_ge():
    real = np.array([1.0, 2.0, 4.0])
    # min(y, 1) > 1 never holds: t0 = m is unreachable; min(y, 2) ≥ 2 does hold for y ≥ 2: t1 = m is reachable
    assert int_thresholds(real, 3, clip_max=1.0).tolist() == [UNREACHABLE] * 3
    assert int_thresholds(real, 3, clip_max=2.0).tolist() == [9, 16, UNREACHABLE]


# --- float32 thresholds for QRelu ------------------------------------------------------------------------------


def _float32_neighbourhood(t: float, steps: int = 24) -> np.ndarray:
    """Every float32 within ``steps`` ulps of float32(t) (and ±0, ±inf)."""
    with np.errstate(over="ignore"):
        centre = F32(t)
        out = [centre, F32(0.0), F32(-0.0), F32(np.inf), F32(-np.inf)]
        for direction in (F32(np.inf), F32(-np.inf)):
            v = centre
            for _ in range(steps):
                v = np.nextafter(v, direction)
                out.append(v)
    return np.array(out, dtype=np.float32)


def _adversarial_thresholds() -> np.ndarray:
    rng = np.random.default_rng(7)
    f32_max = float(np.finfo(np.float32).max)
    exact = [1.0, 0.75, 2.0**-126, 2.0**-149, 3 * 2.0**-149, f32_max, -1.0, -2.0**-149]
    # exactly halfway between two consecutive float32: the float64 → float32 conversion rounds half to even
    halfway = [(float(F32(v)) + float(np.nextafter(F32(v), F32(np.inf)))) / 2 for v in (1.0, 1.5, 3.0, 1e-40, -2.5, 1e30)]
    other = [0.0, -0.0, 1e-50, -1e-50, 0.1, 1 / 3, f32_max * (1 + 2.0**-25), f32_max * (1 + 2.0**-23), 1e39, -1e39]
    return np.concatenate([exact, halfway, other, wq_thresholds(-40, 6, 16), np.exp2(rng.uniform(-130, 128, 64)),
                           -np.exp2(rng.uniform(-130, 128, 16))])


def _random_float32(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bit_patterns = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return np.concatenate([bit_patterns, rng.standard_normal(n).astype(np.float32) * F32(8)])


@pytest.mark.parametrize("t", _adversarial_thresholds().tolist())
def test_float32_threshold_is_exact_per_threshold(t):
    """For every float32 x: ``x ≥ F0 ⇔ x > t`` (strict t0), ``x ≥ Fj ⇔ x ≥ t`` (j ≥ 1), x compared in float64."""
    with np.errstate(over="ignore"):
        f = float32_thresholds(np.array([t, t]))
    assert f.dtype == np.float32
    xs = np.concatenate([_float32_neighbourhood(t), _random_float32(2000, 3)])
    with np.errstate(invalid="ignore"):
        x64 = xs.astype(np.float64)
        np.testing.assert_array_equal(xs >= f[0], x64 > t)
        np.testing.assert_array_equal(xs >= f[1], x64 >= t)


def test_float32_threshold_is_the_smallest_such_float():
    for t in _adversarial_thresholds():
        with np.errstate(over="ignore"):
            f0, f1 = float32_thresholds(np.array([t, t]))
            below0, below1 = np.nextafter(f0, F32(-np.inf)), np.nextafter(f1, F32(-np.inf))
        assert float(f0) > t and not float(below0) > t or np.isinf(f0)
        assert float(f1) >= t and not float(below1) >= t or np.isinf(f1)


@pytest.mark.parametrize("seed", range(4))
def test_float32_thresholds_give_the_real_level_on_random_float32(seed):
    rng = np.random.default_rng(seed)
    real = wq_thresholds(int(rng.integers(-120, 40)), 2 * int(rng.integers(1, 9)), int(rng.choice([2, 4, 16, 64, 128])))
    f = float32_thresholds(real)
    assert np.all(np.diff(f) >= 0)
    xs = np.concatenate([_random_float32(50_000, seed), *(_float32_neighbourhood(t, 8) for t in real),
                         np.array([np.nan, np.inf, -np.inf], np.float32)])
    with np.errstate(invalid="ignore"):
        x64 = xs.astype(np.float64)
        got = (xs[:, None] >= f[None, :]).sum(axis=1)
        want = (x64 > real[0]).astype(np.int64) + (x64[:, None] >= real[None, 1:]).sum(axis=1)
    np.testing.assert_array_equal(got, want)
    assert got[-3:].tolist() == [0, len(real), 0]                      # NaN → 0, +Inf → top, -Inf → 0


@pytest.mark.parametrize("clip", [6.0, 1.0, 0.5, 2.0**0.125])
def test_float32_clip_folding_on_finite_inputs(clip):
    real = wq_thresholds(-32, 4, 32)
    f = float32_thresholds(real, clip_max=clip)
    above = np.array([t >= clip if j == 0 else t > clip for j, t in enumerate(real)])
    assert len(f) == max(1, int((~above).sum())) and np.all(np.isfinite(f[: int((~above).sum())]))  # unreachable ones dropped
    xs = np.concatenate([_random_float32(20_000, 11), *(_float32_neighbourhood(t, 8) for t in (*real, clip)),
                         np.array([np.inf], np.float32)])
    xs = xs[~np.isnan(xs)]
    x64 = np.minimum(np.maximum(xs.astype(np.float64), 0.0), clip)        # Clip(0, m), exact in float64
    got = (xs[:, None] >= f[None, :]).sum(axis=1)
    want = (x64 > real[0]).astype(np.int64) + (x64[:, None] >= real[None, 1:]).sum(axis=1)
    np.testing.assert_array_equal(got, want)


def test_float32_clip_folding_on_positive_infinity():
    real = np.array([0.5, 1.0, 2.0, 4.0])
    f = float32_thresholds(real, clip_max=1.5)
    assert int(np.sum(F32(np.inf) >= f)) == real_level(1.5, real)


# --- scale_shift ------------------------------------------------------------------------------------------------


def _is_largest_shift(value: float, bits: int, s: int) -> bool:
    top = Fraction(2**bits - 1)
    v = Fraction(value)
    return v * Fraction(2) ** s <= top < v * Fraction(2) ** (s + 1)


@pytest.mark.parametrize("bits", range(1, 16))
def test_scale_shift_is_the_largest_fitting_shift(bits):
    rng = np.random.default_rng(bits)
    top = 2**bits - 1
    values = [math.ldexp(1.0, k) for k in range(-1074, 1024, 37)] + [1.0, 2.0, 0.5, float(top), float(top + 1)]
    values += [math.ldexp(top, k) for k in (-1000, -60, -3, -1, 1, 5, 900)]
    values += [5e-324, 1e-310, 2.2250738585072014e-308, 1.7976931348623157e308]
    values += list(np.exp2(rng.uniform(-1070, 1020, 60)))
    values += [math.nextafter(v, d) for v in list(values) for d in (0.0, math.inf)]
    for v in values:
        if 0 < v < math.inf:
            assert _is_largest_shift(v, bits, scale_shift(v, bits)), (v, bits)


def test_scale_shift_edge_values():
    assert scale_shift(1.0, 15) == 14                 # 2^14 ≤ 32767 < 2^15
    assert scale_shift(32767.0, 15) == 0
    assert scale_shift(math.nextafter(32767.0, math.inf), 15) == -1
    assert scale_shift(0.25, 8) == 9                  # 0.25 · 2^9 = 128 ≤ 255 < 256
    assert scale_shift(255.0 / 1024, 8) == 10
    assert scale_shift(0.0, 15) == 0                  # an all-zero tensor


def test_mantissas_round_half_to_even():
    got = mantissas(np.array([0.5, 1.5, 2.5, -0.5, -2.5, 0.3]), 1)      # · 2 → 1, 3, 5, -1, -5, 0.6
    assert got.dtype == np.int64 and got.tolist() == [1, 3, 5, -1, -5, 1]
    assert mantissas(np.array([0.25, 0.75, -0.25, -0.75]), 1).tolist() == [0, 2, 0, -2]


# --- float input quantization -----------------------------------------------------------------------------------


@pytest.mark.parametrize("x_max", (1, 127, 255, 32767))
def test_quantize_float_input_fixed_cases(x_max):
    x = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 0.49999997, np.nan, np.inf, -np.inf, -0.0, 1e38, -1e38],
                 dtype=np.float32)
    want = [0, 2, 2, 4, 0, -2, -2, 0, 0, x_max, -x_max, 0, x_max, -x_max]
    with np.errstate(over="ignore"):
        got = quantize_float_input(x, 0, x_max)
    assert got.dtype == np.int32
    assert got.tolist() == [int(np.clip(v, -x_max, x_max)) for v in want]


@pytest.mark.parametrize("x_shift", (-30, -3, 0, 1, 4, 10, 15, 40, 130, 200))
@pytest.mark.parametrize("x_max", (1, 127, 32767))
def test_quantize_float_input_matches_the_exact_oracle(x_shift, x_max):
    rng = np.random.default_rng(x_shift * 7 + x_max + 1000)
    ties = (np.arange(-x_max - 3, x_max + 4, max(1, x_max // 50)) + 0.5) * 2.0**-x_shift   # exact halves
    near = np.array([x_max - 0.5, x_max + 0.5, x_max, x_max + 1, -x_max - 0.5, -x_max + 0.5]) * 2.0**-x_shift
    with np.errstate(over="ignore", invalid="ignore"):      # saturating inputs overflow x · 2^s: intended
        x = np.concatenate([_random_float32(20_000, x_shift + 1000), (rng.standard_normal(2000) * x_max * 2.0**-x_shift),
                            ties, near]).astype(np.float32)
        got = quantize_float_input(x, x_shift, x_max)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.astype(np.int64), quantize_input_naive(x, x_shift, x_max))


def test_accumulator_bound_matches_the_oracle():
    rng = np.random.default_rng(0)
    wm = rng.integers(-4000, 4000, (7, 30))
    bias = rng.integers(-10**6, 10**6, 7).astype(np.int32)
    assert accumulator_bound(wm, 1234, bias) == acc_bound(wm, 1234, bias)
    assert accumulator_bound(wm, 1234, None) == acc_bound(wm, 1234, None)
