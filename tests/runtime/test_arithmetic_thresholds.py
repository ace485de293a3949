"""The arithmetic threshold index (ThresholdRuns: ThresholdTable::runs, FloatThresholds::runs) against
#{j : T_j <= acc}.

Piecewise evenly spaced sets (the segmented and linear activation quantizers', whose step the compiler keeps to a
few significant bits so that their integer thresholds are exactly T_j = start_k + (j - j_k)·D_k within each of at
most 8 runs, or, on a coarse accumulator, T_j = ceil((X_k + (j - j_k)·p_k) / 2^q_k) for a dyadic spacing p / 2^q ≥ 1)
are counted with one float multiply and an integer correction instead of a lookup. The cases cover
one to eight runs with arbitrary jumps between them, the spacing from D = 1 to the int32 limit of (reach - 1)·D, a first
threshold apart from the grid (the strict T_0 = T_1 - D + 1) or equal to T_1, negative thresholds, the unreachable
2^30 tail, 16..255 thresholds, and accumulators on, just below, between and far outside the thresholds, through the
same K = 1 layers as the other threshold tests (QGemm, the register-tiled QConv edge, depthwise), with
WQCOMPILE_REQUIRE_THRESHOLD_INDEX=arithmetic (a table without the arithmetic index is an error). Sets one off the grid
must not get it and still count exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.helpers import ISAS, cpu_has, model_of, run_ort
from tests.runtime.threshold_cases import check_levels, probe_biases
from tests.ops.oracles import pack_naive

pytestmark = [pytest.mark.requires_ops_lib]

ISA_PARAMS = [pytest.param(i, marks=pytest.mark.skipif(not cpu_has(i), reason=f"CPU lacks {i}")) for i in ISAS]
LIMIT = 2**30


def _uniform_row(rng, count: int) -> np.ndarray:
    """T_1 + (j - 1)·D for j ≥ 1, T_0 on the grid, one above it (strict) or equal to T_1; some tails at 2^30."""
    reach = int(rng.integers(3, count + 1)) if rng.random() < 0.3 else count
    kind = rng.integers(0, 4)
    if kind == 0:      # the largest spacing the index takes: (reach - 1)·D < 2^31
        step = (2**31 - 1) // (reach - 1)
        t1 = -LIMIT
    elif kind == 1:    # tiny spacings
        step = int(rng.integers(1, 4))
        t1 = int(rng.integers(-1000, 1000))
    elif kind == 2:    # the compiler's dyadic steps: a small odd number times a power of two (p' · 2^z)
        step = int(rng.integers(1, 64)) * 2 ** int(rng.integers(0, 21))
        step = min(step, (2**31 - 1) // (reach - 1))
        t1 = int(rng.integers(-LIMIT, LIMIT - (reach - 1) * step)) if rng.random() < 0.3 else step // 2 + 1
    else:
        step = int(np.exp2(rng.uniform(0, 22)))
        t1 = int(rng.integers(-LIMIT, LIMIT - (reach - 1) * step)) if rng.random() < 0.3 else step // 2 + 1
    t = t1 + (np.arange(count, dtype=np.int64) - 1) * step
    t[0] = [t1 - step, t1 - step + 1, t1, t1 - int(rng.integers(0, 2 * step + 1))][int(rng.integers(0, 4))]
    t[0] = min(t[0], t1)
    t[reach:] = LIMIT
    # a set that runs into 2^30 is cut there (the compiler's clamp)
    return np.clip(t, -LIMIT, LIMIT)


def _runs_row(rng, count: int) -> np.ndarray:
    """Up to kMaxRuns = 8 runs with their own spacings (growing like the segmented quantizer's, or arbitrary),
    the jumps between runs of any size, a strict first threshold; sometimes a 2^30 tail."""
    runs = int(rng.integers(2, 9))
    cuts = np.sort(rng.choice(np.arange(2, count), size=min(runs - 1, count - 2), replace=False))
    t = np.empty(count, dtype=np.int64)
    base = int(rng.integers(-2**20, 2**20)) if rng.random() < 0.3 else int(rng.integers(1, 1000))
    step = int(np.exp2(rng.uniform(0, 12)))
    j = 1
    t[1] = base
    for end in list(cuts) + [count]:
        for i in range(j + 1, end):
            t[i] = t[i - 1] + step
        if end < count:
            t[end] = t[end - 1] + int(rng.integers(1, 3 * step + 2))   # the jump into the next run
            step = step * int(rng.choice([1, 2, 4])) if rng.random() < 0.7 else int(np.exp2(rng.uniform(0, 14)))
            j = end
    t[0] = t[1] - int(rng.integers(0, 2 * step + 1))
    if rng.random() < 0.3:
        t[int(rng.integers(3, count)):] = LIMIT
    return np.clip(t, -LIMIT, LIMIT)


def _dyadic_runs_row(rng, count: int) -> np.ndarray:
    """Runs of ceil((X + i·p) / 2^q): the integer thresholds of evenly spaced real ones whose spacing p / 2^q ≥ 1 is
    a dyadic fraction (q = 1..6; a narrow layer's coarse accumulator), as the compiler's int_thresholds makes them
    (ceil, or floor + 1 for the strict first), up to 8 runs with jumps, sometimes spacing ~1 and a 2^30 tail."""
    runs = int(rng.integers(1, 9))
    cuts = sorted(rng.choice(np.arange(2, count), size=min(runs - 1, count - 2), replace=False)) if runs > 1 else []
    t = np.empty(count, dtype=np.int64)
    start = float(rng.integers(-2**20, 2**20)) if rng.random() < 0.3 else float(rng.integers(1, 1000))
    j = 1
    for end in list(cuts) + [count]:
        q = int(rng.integers(1, 7))
        # p < 2^13: dyadic runs need the exact one-FMA quotient (ThresholdRuns::exact); the compiler's are far below
        p = int(rng.integers(2**q, 2**q + 2)) if rng.random() < 0.2 else int(rng.integers(2**q, min(2**13, 2**(q + 10))))
        x = start + rng.integers(0, 2**q) / 2**q
        t[j:end] = np.ceil(x + np.arange(end - j) * p / 2**q).astype(np.int64)
        start = float(t[end - 1] + int(rng.integers(1, 50)))
        j = end
    t[0] = t[1] - int(rng.integers(0, 3))
    if rng.random() < 0.3:
        t[int(rng.integers(3, count)):] = LIMIT
    return np.clip(t, -LIMIT, LIMIT)


def _rows(seed: int, off_grid: bool):
    rng = np.random.default_rng(4400 + seed)
    count = int(rng.choice([16, 17, 64, 200, 255, 255]))
    rows = []
    for _ in range(3):
        if seed % 4 == 3 and not off_grid:
            t = _dyadic_runs_row(rng, count)
        else:
            t = _uniform_row(rng, count) if seed % 2 == 0 or off_grid else _runs_row(rng, count)
        if off_grid:   # one threshold of the grid moved by one: no arithmetic index, the same levels
            reach = int(np.sum(t < LIMIT))
            j = int(rng.integers(2, max(reach - 1, 3)))
            if j < reach - 1 and t[j + 1] - t[j] > 1:
                t[j] += 1
            elif t[j] - t[j - 1] > 1:
                t[j] -= 1
        rows.append(t)
    return rng, np.array(rows, dtype=np.int64)


def _probes(rng, t):
    u = np.unique(t).astype(np.int64)
    mid = (u[:-1] + u[1:]) // 2
    spread = rng.integers(-LIMIT + 1, LIMIT, 24)
    return np.concatenate([u, u - 1, u + 1, mid, spread, [-LIMIT + 1, LIMIT - 1, 0, -1, 1]])


def _check_refusal(t: np.ndarray, monkeypatch, isa: str, want_uniform: bool, require: str = "arithmetic"):
    """A single-output QGemm with thresholds ``t``: runs under REQUIRE=``require`` iff ``want_uniform``."""
    n = 1
    monkeypatch.setenv("WQCOMPILE_REQUIRE_THRESHOLD_INDEX", require)
    attrs = dict(w_bits=1, w_shift=[0], x_shift=0, x_max=32767, w_shape=[n, 1])
    x = np.zeros((1, 1), dtype=np.float32)
    model = model_of("QGemm", [("X", x), ("W", pack_naive(np.zeros(n, dtype=np.int64), 1)),
                               ("codebook", np.ones((n, 2), dtype=np.int16)), ("x_table", None),
                               ("bias", np.zeros(n, dtype=np.int32)), ("thresholds", t[None, :].astype(np.int32))],
                     attrs, np.uint8)
    if want_uniform:
        run_ort(model, {"X": x}, isa)
    else:
        with pytest.raises(Exception, match=f"REQUIRE_THRESHOLD_INDEX={require}"):
            run_ort(model, {"X": x}, isa)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("op", ["QGemm", "QConv", "depthwise"])
def test_uniform_thresholds(isa, seed, op, monkeypatch):
    monkeypatch.setenv("WQCOMPILE_REQUIRE_THRESHOLD_INDEX", "arithmetic")
    rng, rows = _rows(seed, off_grid=False)
    bias, row_of = probe_biases(rng, rows, _probes)
    check_levels(rng, rows[row_of].astype(np.int32), bias, op, isa, threads=1 + seed % 2)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("op", ["QGemm", "QConv"])
def test_off_grid_sets_count_exactly(isa, seed, op):
    rng, rows = _rows(seed, off_grid=True)
    bias, row_of = probe_biases(rng, rows, _probes)
    check_levels(rng, rows[row_of].astype(np.int32), bias, op, isa, threads=1)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_which_sets_get_the_arithmetic_index(isa, monkeypatch):
    grid = 1000 + 37 * np.arange(255, dtype=np.int64)
    _check_refusal(grid, monkeypatch, isa, True)
    strict = grid.copy()
    strict[0] = grid[1] - 37 + 1          # the compiler's strict first threshold
    _check_refusal(strict, monkeypatch, isa, True)
    tail = grid.copy()
    tail[200:] = LIMIT                    # unreachable thresholds past a folded Clip
    _check_refusal(tail, monkeypatch, isa, True)
    moved = grid.copy()
    moved[100] += 1                       # splits the run in three
    _check_refusal(moved, monkeypatch, isa, True)
    scattered = grid.copy()
    scattered[10:250:25] += 1             # ten moved thresholds: more than 8 runs
    _check_refusal(scattered, monkeypatch, isa, False)
    step = (2**31 - 2) // 253            # all 255 reachable, but (reach - 1)·D ≥ 2^31: q·D could overflow
    wide = -LIMIT + step * (np.arange(255, dtype=np.int64) - 1)
    wide[0] = wide[1]
    assert wide[-1] < LIMIT and 254 * step >= 2**31
    _check_refusal(wide, monkeypatch, isa, False)
    few = grid[:15]                       # ≤ 15 thresholds: the in-register search, no index needed
    _check_refusal(few, monkeypatch, isa, True)
    eight = np.concatenate([1000 + (2 * k + 1) * np.arange(32, dtype=np.int64) * 64 + 10**6 * k for k in range(8)])
    _check_refusal(eight[:255], monkeypatch, isa, True)   # 8 runs
    nine = eight.copy()
    nine[250] += 1                        # a 9th run
    _check_refusal(nine[:255], monkeypatch, isa, False)
    dup = grid.copy()
    dup[50] = dup[49]                     # two equal thresholds: a run boundary between them, still arithmetic
    _check_refusal(dup, monkeypatch, isa, True)
    dup[51] = dup[49]                     # three: a run of spacing 0, no arithmetic on it
    _check_refusal(dup, monkeypatch, isa, False)
    half = np.ceil(1000.25 + 26.5 * np.arange(255)).astype(np.int64)   # spacing 26.5: not evenly spaced integers
    _check_refusal(half, monkeypatch, isa, True)                        # one run with a dyadic spacing
    fine = np.ceil(3.0 + (1 + 1 / 64) * np.arange(255)).astype(np.int64)   # spacing 65/64, steps of 1 and 2
    _check_refusal(fine, monkeypatch, isa, True)
    third = np.ceil(5.0 + 37.3333333 * np.arange(255)).astype(np.int64)     # not dyadic: 2^-6 cannot follow it
    _check_refusal(third, monkeypatch, isa, True)                          # for 255 thresholds, but a few runs can
    coarse = np.ceil(0.5 + (8192 + 0.5) * np.arange(255)).astype(np.int64)  # dyadic, but step 2·8192 + 1 ≥ 2^13:
    _check_refusal(coarse, monkeypatch, isa, False)                         # the one-FMA quotient is not exact
    rng = np.random.default_rng(0)
    ragged = 1000 + np.cumsum(rng.integers(20, 60, 255))              # no structure: far more than 8 runs
    _check_refusal(ragged, monkeypatch, isa, False)


# ---------------------------------------------------------------- the lines form (ThresholdRuns::lines)

def _segmented_row(rng, count: int, grow: bool = True) -> np.ndarray:
    """The segmented quantizer's integer thresholds: midpoints of level values spaced S_k in segment k (so one
    spacing of (S_k + S_{k+1}) / 2 between segments), S_0 = 2g, S_k = S_{k-1}·2 or ·4 (halved when not ``grow``),
    g a small odd number times a power of two; 1..4 segments, the strict first threshold one above the grid,
    sometimes a 2^30 tail."""
    g = int(rng.choice([1, 3, 31, 125])) * 2 ** int(rng.integers(0, 12))
    runs = int(rng.integers(1, 5)) if grow else int(rng.integers(2, 5))
    cuts = np.arange(8, count - 7, 8)   # segments of at least 8 levels (the compiler's have 30 or more)
    cuts = sorted(rng.choice(cuts, size=min(runs - 1, cuts.size), replace=False))
    spacing = 2 * g * (1 if grow else 2 ** (2 * runs))
    values, v = [], int(rng.integers(0, 4)) * g
    for end in list(cuts) + [count + 1]:
        while len(values) < end:
            values.append(v)
            v += spacing
        v -= spacing
        spacing = spacing * int(rng.choice([2, 4])) if grow else spacing // 2
        v += spacing
    values = np.array(values[:count + 1], dtype=np.int64)
    t = (values[:-1] + values[1:]) // 2
    t[0] = t[1] - (values[2] - values[1]) + 1
    if rng.random() < 0.25:
        t[int(rng.integers(count // 2, count)):] = LIMIT
    return np.clip(t, -LIMIT, LIMIT)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("op", ["QGemm", "QConv", "depthwise"])
def test_segmented_sets_count_in_lines(isa, seed, op, monkeypatch):
    """Growing spacings on one grid get the lines form (an error otherwise), and it counts exactly: thresholds, one
    below and one above each, midpoints and far values, as the arithmetic tests above."""
    monkeypatch.setenv("WQCOMPILE_REQUIRE_THRESHOLD_INDEX", "lines")
    rng = np.random.default_rng(8800 + seed)
    count = int(rng.choice([16, 64, 255, 255]))
    rows = np.array([_segmented_row(rng, count) for _ in range(3)], dtype=np.int64)
    bias, row_of = probe_biases(rng, rows, _probes)
    check_levels(rng, rows[row_of].astype(np.int32), bias, op, isa, threads=1 + seed % 2)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_which_sets_get_the_lines_form(isa, monkeypatch):
    """Lines need the runs' spacings to grow on one grid by powers of two: a set whose spacings shrink (not
    concave), or whose second spacing is 3/2 of the first, keeps the plain arithmetic index (and counts exactly)."""
    rng = np.random.default_rng(91)
    _check_refusal(_segmented_row(rng, 255), monkeypatch, isa, True, "lines")
    shrink = _segmented_row(rng, 255, grow=False)
    three_halves = np.concatenate([1000 + 64 * np.arange(128), 1000 + 64 * 128 + 96 * np.arange(127)]).astype(np.int64)
    for bad in (shrink, three_halves):
        _check_refusal(bad, monkeypatch, isa, False, "lines")
        _check_refusal(bad, monkeypatch, isa, True)   # still the arithmetic index
        monkeypatch.delenv("WQCOMPILE_REQUIRE_THRESHOLD_INDEX")
        bias, row_of = probe_biases(rng, bad[None, :], _probes)
        for op in ("QGemm", "depthwise"):
            check_levels(rng, bad[None, :][row_of].astype(np.int32), bias, op, isa, threads=1)


# ---------------------------------------------------------------- float thresholds (QRelu, AddQRelu, joins)

def _float_uniform(rng):
    """The linear quantizer's float32 thresholds: (2n + 1)·S·2^(e-1) with S of ≤ 6 bits, the first one nudged up
    by an ulp (strict), over the float range; sometimes from wqcompile's own fit and lowering."""
    from wqcompile.quant import LogHistogram, fit_linear_act, fit_segmented_act
    from wqcompile.runtime_ops.fixed_point import float32_thresholds

    if rng.random() < 0.5:
        h = LogHistogram()
        x = rng.standard_normal(20000) if rng.random() < 0.5 else rng.standard_t(3, 20000)
        h.update(np.maximum(x, 0) * float(np.exp2(rng.uniform(-20, 20))))
        fit = fit_segmented_act if rng.random() < 0.7 else fit_linear_act
        q = fit(h, int(rng.choice([32, 64, 256])))
        clip = float(q.values[-1]) * float(rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else None
        t = float32_thresholds(q.thresholds, clip)
        return t, q.values.astype(np.float32)
    count = int(rng.choice([31, 40, 255]))   # ≥ 32 level values: AddDecodeQRelu's decode table
    s = int(rng.integers(32, 65)) * float(np.exp2(rng.integers(-130, 100)))
    t = ((2 * np.arange(count) + 1) * (s / 2)).astype(np.float32)
    t[0] = np.nextafter(t[0], np.float32(np.inf))
    return t, (np.arange(count + 1) * s).astype(np.float32)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("op", ["QRelu", "AddQRelu", "AddDecodeQRelu"])
def test_uniform_float_thresholds(isa, seed, op, monkeypatch):
    from tests.runtime.test_dense_float_thresholds import REQUIRE, _probes, _run

    rng = np.random.default_rng(5500 + seed)
    while True:
        t, values = _float_uniform(rng)
        if t.size > 15 and np.all(np.isfinite(t)) and t[1] > 0 and np.isfinite(values).all():
            break
    monkeypatch.setenv(REQUIRE, "arithmetic")   # the arithmetic index or an error
    x = _probes(rng, t, values)
    got, want = _run(op, t, x, rng, isa, 1 + seed % 2, values)
    assert got.dtype == np.uint8 and np.array_equal(got, want), f"{int((got != want).sum())} levels differ"


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_float_sets_far_off_the_grid_get_no_arithmetic_index(isa, monkeypatch):
    from tests.runtime.test_dense_float_thresholds import REQUIRE, _probes, _run

    rng = np.random.default_rng(77)
    t = ((2 * np.arange(255) + 1) * 40.0 * 2.0**-10).astype(np.float32)
    t[0] = np.nextafter(t[0], np.float32(np.inf))
    values = (np.arange(256) * 80.0 * 2.0**-10).astype(np.float32)
    moved = t.copy()
    moved[10:250:25] = np.nextafter(moved[10:250:25], np.float32(np.inf))   # ten thresholds an ulp off: > 8 runs
    wide = t.copy()
    wide[-1] = np.float32(2.0**40)                                  # past 2^24 units
    for bad in (moved, wide):
        x = _probes(rng, bad, values)
        got, want = _run("QRelu", bad, x, rng, isa, 1, values)
        assert np.array_equal(got, want)
        monkeypatch.setenv(REQUIRE, "arithmetic")
        with pytest.raises(Exception, match="=arithmetic: 255 thresholds got"):
            _run("QRelu", bad, x, rng, isa, 1, values)
        monkeypatch.delenv(REQUIRE)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(8))
def test_row_scaled_conv_counts_runs_on_the_scaled_accumulator(isa, seed, monkeypatch):
    """A row-scaled QConv (one shared codebook: one thresholds row for every output channel) whose 255 thresholds
    are one to three runs: the tile edge scales each row (floor(acc · r / 2^22) + bias) before counting, all rows of
    a tile in one call (edge_tile_runs). Level input on the u8 path (odd seeds: s8 weights, levels within 0..255)
    or the int16 one, 8-row tiles and ragged ones, 1x1 and 3x3, 1 and 2 threads."""
    from tests.ops.cases import random_operands
    from wqcompile.runtime_ops.qconv import qconv_reference

    rng = np.random.default_rng(6600 + seed)
    runs = int(1 + seed % 3)
    for _ in range(50):   # operands whose accumulators spread (random_operands is sometimes degenerate on purpose)
        m, c, k = int(rng.choice([8, 19, 40])), int(rng.choice([4, 16, 33])), int(rng.choice([1, 3]))
        ops = random_operands(rng, (m, c, k, k), (2, c, 9, 13), c * k * k, bits=4, gc=1, kind="level")
        if seed % 2 and ops.x_table.max() > 255:
            continue
        codebook = np.clip(ops.codebook, -128, 127) if seed % 2 else ops.codebook
        r = rng.integers(1, 2**22 + 1, m).astype(np.int32)
        r[0] = 2**22
        attrs = dict(w_bits=ops.w_bits, w_shape=[m, c, k, k], w_shift=ops.w_shift, x_shift=ops.x_shift,
                     x_max=ops.x_max, pads=[k // 2] * 4)
        # the scaled accumulators' range (float edge · 2^shift), for thresholds that split it into many levels
        y = qconv_reference(ops.x, ops.packed, codebook, ops.x_table, ops.bias, None, r, **attrs)
        a = np.ldexp(y.astype(np.float64), ops.w_shift[0] + ops.x_shift)
        lo, hi = np.percentile(a, 2), np.percentile(a, 98)
        steps = np.repeat([1, 2, 4][:runs], -(-255 // runs))[:255]
        unit = max(1, int((hi - lo) / steps.sum()))
        t = (int(lo) + np.concatenate([[0], np.cumsum(steps[:-1])]) * unit).astype(np.int64)
        t = np.clip(t, -LIMIT, LIMIT).astype(np.int32)[None, :]
        want = qconv_reference(ops.x, ops.packed, codebook, ops.x_table, ops.bias, t, r, **attrs)
        if len(np.unique(want)) > 32:
            break
    else:
        pytest.fail("no operands with spread accumulators")
    monkeypatch.setenv("WQCOMPILE_REQUIRE_THRESHOLD_INDEX", "arithmetic")
    if seed % 2 and isa == "avx512":
        monkeypatch.setenv("WQCOMPILE_REQUIRE_U8", "1")
    model = model_of("QConv", [("X", ops.x), ("W", ops.packed), ("codebook", codebook), ("x_table", ops.x_table),
                               ("bias", ops.bias), ("thresholds", t), ("row_scale", r)], attrs, np.uint8)
    got = run_ort(model, {"X": ops.x}, isa, threads=1 + seed % 2)
    assert got.dtype == np.uint8 and np.array_equal(got, want), f"{int((got != want).sum())} levels differ"
