"""The 8-bit quantizer's gather-free octave-class index (ThresholdTable::octave_ok, AVX-512 VBMI) against
#{j : T_j <= acc}: log-spaced threshold sets (WQ LogQuant: the same fractional positions in every octave, up to
the integer rounding), sets whose octaves alternate between two patterns (two classes), thresholds on bucket
starts and ends, a partial top octave, the 2^30 clamp, duplicates below 256 (octave_small) and first thresholds
above it, through the K = 1 layers of test_thresholds.py (QGemm -> edge_levels, 1x1 QConv -> the register-tiled
edge, depthwise). `octave_index` is a numpy model of build_octave_index and of the level formula: the generated
sets are checked to qualify (so the kernel takes the octave path on a VBMI CPU) and the formula is checked
against the definition on a million accumulators per set. WQCOMPILE_NO_VBMI=1 runs the same cases on the packed
gather path."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.helpers import ISAS, cpu_has
from tests.runtime.helpers import model_of, run_ort
from tests.runtime.threshold_cases import BIAS_MAX, check_levels, probe_biases
from wqcompile.runtime_ops.qrelu import qrelu_reference

pytestmark = [pytest.mark.requires_ops_lib]

ISA_PARAMS = [pytest.param(i, marks=pytest.mark.skipif(not cpu_has(i), reason=f"CPU lacks {i}")) for i in ISAS]
P = 5


def octave_index(t):
    """(octave lo/class per e, class table [2][32] of (L, D), small[256], reach) or None (build_octave_index)."""
    t = np.asarray(t, dtype=np.int64)
    reach = int((t < 2**30).sum())
    r = t[:reach]
    if reach < 1 or r[0] < 1:
        return None
    classes, octs, members = [], {}, []
    for e in range(8, 30):
        lo = int(np.searchsorted(r, 2**e))
        if lo == reach:   # L - [frac < D] >= -1: base lo + 1, then clamped
            octs[e] = (lo + 1, 0)
            continue
        k = e - P
        cells = []
        for m in range(32):
            start, width = (32 + m) << k, 1 << k
            if start + width <= r[0]:
                cells.append(None)
            elif start > r[-1]:
                cells.append(("min", reach - lo))
            else:
                a, b = int(np.searchsorted(r, start)), int(np.searchsorted(r, start + width))
                if b - a > 1:
                    return None
                if b == a:
                    cells.append(("exact", a - lo, 0, 0, -1))
                else:
                    res = int(r[a]) - start
                    cells.append(("exact", a - lo + 1, max(0, ((res - 1) << (24 - k)) + 1), res << (24 - k), -1))
        for ci, c in enumerate(classes):
            s, up, c, shifted = _shifted(c, cells)
            merged = [_merge(x, y) for x, y in zip(c, shifted)]
            if all(m is not False for m in merged):
                classes[ci] = merged
                for f in members:
                    if octs[f][1] == ci:
                        octs[f] = (octs[f][0] - up, ci)
                octs[e] = (lo - s, ci)
                members.append(e)
                break
        else:
            if len(classes) == 2:
                return None
            merged = [_merge(None, y) for y in cells]
            if any(m is False for m in merged):
                return None
            classes.append(merged)
            octs[e] = (lo, len(classes) - 1)
            members.append(e)
    table = np.zeros((2, 32, 2), dtype=np.int64)
    for ci in range(2):
        for m, c in enumerate(classes[ci] if ci < len(classes) else (classes[0] if classes else [None] * 32)):
            if c is None:
                continue
            if c[0] == "min":
                table[ci, m] = (c[1], 0)
            else:
                table[ci, m] = (c[1], c[2])
    small = np.searchsorted(t, np.arange(256), side="right")
    return octs, table, small, reach


def _up(cells, s):
    out = []
    for n in cells:
        if n is None:
            out.append(None)
        elif n[0] == "min":
            out.append(("min", n[1] + s))
        else:
            out.append(("exact", n[1] + s, n[2], n[3], n[4] if n[4] < 0 else n[4] + s))
    return out


def _shifted(cls, cells):
    """OctaveClasses::assign: s = the difference of L in the first cell exact in both; (s, raised, class raised,
    cells shifted): a negative s raises the class instead."""
    s = next((c[1] - n[1] for c, n in zip(cls, cells) if c is not None and n is not None and c[0] == n[0] == "exact"), 0)
    up = max(0, -s)
    return s + up, up, _up(cls, up), _up(cells, s + up)


def _merge(c, n):
    """Cells: None (free), ("min", lmin), ("exact", L, dlo, dhi, lmin); False when they conflict."""
    if n is None:
        return c
    if c is None:
        c = n
    elif c[0] == "min" and n[0] == "min":
        c = ("min", max(c[1], n[1]))
    elif c[0] == "min" or n[0] == "min":
        ex, mn = (n, c) if c[0] == "min" else (c, n)
        c = (*ex[:4], max(ex[4], mn[1]))
    else:
        if c[1] != n[1] or max(c[2], n[2]) > min(c[3], n[3]):
            return False
        c = ("exact", c[1], max(c[2], n[2]), min(c[3], n[3]), max(c[4], n[4]))
    if c[0] == "exact" and c[4] >= 0 and c[1] - (1 if c[2] > 0 else 0) < c[4]:
        return False
    return c


def octave_levels(index, t0, v):
    """The kernel's formula on int64 accumulators v (|v| < 2^30)."""
    octs, table, small, reach = index
    v = np.asarray(v, dtype=np.int64)
    out = np.zeros(v.shape, dtype=np.int64)
    big = v >= 256
    e = np.floor(np.log2(np.maximum(v, 1))).astype(np.int64)
    lo = np.array([octs.get(int(x), (0, 0))[0] for x in range(31)])[e]
    cl = np.array([octs.get(int(x), (0, 0))[1] for x in range(31)])[e]
    m = (v >> np.maximum(e - P, 0)) & 31
    frac = (v << np.maximum(29 - e, 0)) & 0xFFFFFF
    L, D = table[cl, m, 0], table[cl, m, 1]
    lv = np.minimum(lo + L - (frac < D), reach)
    out[big] = lv[big]
    out[~big] = small[np.clip(v[~big], 0, 255)]
    out[v < t0] = 0
    return out


def _log_spaced(rng, count):
    """WQ LogQuant: levels 2^((fsr + n·step)/16) scaled, thresholds at the geometric or linear midpoints, T_0 =
    floor + 1 and T_j = ceil; the top between 2^12 and 2^29.9, some folded Clip clamps to 2^30."""
    step = int(rng.choice([1, 2, 2, 4, 8]))
    top = float(rng.uniform(12, 29.9))
    n = np.arange(count + 1, dtype=np.float64)
    levels = np.exp2(top + (n - count) * step / 16)
    mid = np.sqrt(levels[:-1] * levels[1:]) if rng.random() < 0.5 else (levels[:-1] + levels[1:]) / 2
    t = np.ceil(mid)
    t[0] = np.floor(mid[0]) + 1
    if rng.random() < 0.3:
        t[-int(rng.integers(1, 20)):] = 2**30
    return t


def _two_patterns(rng, count):
    """Each octave from 8 on takes one of two random sets of fractional positions (at most one per 1/32 bucket,
    some exactly on a bucket start or just below the next one); below 256 small integers with duplicates."""
    def pattern():
        ms = np.sort(rng.choice(32, int(rng.integers(1, 9)), replace=False))
        f = (32 + ms + np.where(rng.random(ms.size) < 0.2, 0.0, np.where(rng.random(ms.size) < 0.2, 0.999999,
                                                                                rng.random(ms.size)))) / 32
        return f
    pats = [pattern(), pattern()]
    e0 = int(rng.integers(8, 12))
    out = list(np.sort(rng.integers(1, 256, int(rng.integers(0, 40)))))
    e = e0
    while len(out) < count and e < 30:
        out += list(np.ceil(pats[int(rng.integers(0, 2))] * 2.0**e))
        e += 1
    t = np.array(out[:count], dtype=np.float64)
    if t.size < count:
        t = np.concatenate([t, np.full(count - t.size, 2**30)])
    return np.minimum(t, 2**30)


def _rows(seed):
    rng = np.random.default_rng(9900 + seed)
    count = 255 if seed % 3 else int(rng.choice([16, 31, 64, 200]))
    make = _log_spaced if seed % 2 == 0 else _two_patterns
    rows = []
    while len(rows) < 3:
        t = np.sort(np.clip(make(rng, count), 1, 2**30)).astype(np.int64)
        if octave_index(t) is not None:
            rows.append(t)
    return rng, np.array(rows, dtype=np.int64).astype(np.int32)


def _probes(rng, t):
    u = np.unique(t).astype(np.int64)
    e = rng.integers(0, 30, 64)
    m = rng.integers(0, 32, 64)
    starts = np.where(e >= P, (32 + m) << np.maximum(e - P, 0), 1 + rng.integers(0, 300, 64))
    return np.concatenate([u, u - 1, u + 1, starts, starts - 1, np.int64(2) ** np.arange(31) - 1,
                           np.int64(2) ** np.arange(31), np.arange(250, 260)])


@pytest.mark.parametrize("seed", range(24))
def test_octave_formula(seed):
    """The numpy model of the index reproduces #{j : T_j <= v} on edges and a million random accumulators."""
    rng, rows = _rows(seed)
    for t in rows.astype(np.int64):
        index = octave_index(t)
        v = np.concatenate([_probes(rng, t), rng.integers(-2**30 + 1, 2**30, 400_000),
                            np.exp2(rng.uniform(0, 30, 600_000)).astype(np.int64)])
        v = np.clip(v, -(2**30) + 1, 2**30 - 1)
        want = np.searchsorted(t, v, side="right")
        got = octave_levels(index, t[0], v)
        assert np.array_equal(got, want), f"{int((got != want).sum())} levels differ"


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("op", ["QGemm", "QConv", "depthwise"])
def test_octave_index_edges(isa, seed, op):
    rng, rows = _rows(seed)
    bias, row_of = probe_biases(rng, rows, _probes)
    check_levels(rng, rows[row_of], bias, op, isa, threads=1 + seed % 2)


@pytest.mark.skipif(not cpu_has("avx512"), reason="CPU lacks avx512")
@pytest.mark.parametrize("seed", range(0, 12, 3))
@pytest.mark.parametrize("op", ["QGemm", "QConv"])
def test_octave_sets_on_gather_path(seed, op, monkeypatch):
    """The same sets with the VBMI paths off (WQCOMPILE_NO_VBMI=1): the packed gather index."""
    monkeypatch.setenv("WQCOMPILE_NO_VBMI", "1")
    rng, rows = _rows(seed)
    bias, row_of = probe_biases(rng, rows, _probes)
    check_levels(rng, rows[row_of], bias, op, "avx512", threads=1)


# ---- QRelu / AddQRelu: the same index on the float32 bits (FloatThresholds::octave_ok) ----

def float_octave_ok(t) -> bool:
    """build_float_octave_index's acceptance: finite positive thresholds within 32 octaves of t[0] whose octaves
    (1/32-octave buckets, at most one threshold each) fit at most two classes."""
    bits = np.asarray(t, dtype=np.float32).view(np.int32).astype(np.int64)
    if bits[0] <= 0 or bits[-1] >= 0x7F800000:
        return False
    e0 = int(bits[0] >> 23)
    if int(bits[-1] >> 23) > e0 + 32 or e0 + 33 > 255:
        return False
    classes, first = [], None
    for e in range(e0, e0 + 33):
        lo = int(np.searchsorted(bits, e << 23))
        if lo == bits.size:
            continue
        cells = []
        for m in range(32):
            start, width = (e << 23) | (m << 18), 1 << 18
            if start + width <= bits[0]:
                cells.append(None)
            elif start > bits[-1]:
                cells.append(("min", bits.size - lo))
            else:
                a, b = int(np.searchsorted(bits, start)), int(np.searchsorted(bits, start + width))
                if b - a > 1:
                    return False
                r = int(bits[a]) - start if b > a else 0
                cells.append(("exact", a - lo + (b - a), r, r, -1))
        for ci, c in enumerate(classes):
            if e == e0 + 32 and ci != first:   # the 33rd octave shares the first one's slot and class
                continue
            _, _, c, shifted = _shifted(c, cells)
            merged = [_merge(x, y) for x, y in zip(c, shifted)]
            if all(m is not False for m in merged):
                classes[ci] = merged
                first = ci if e == e0 else first
                break
        else:
            merged = [_merge(None, y) for y in cells]
            if len(classes) == 2 or e == e0 + 32 or any(m is False for m in merged):
                return False
            classes.append(merged)
            first = len(classes) - 1 if e == e0 else first
    return True


def _float_set(rng, count, wrap=False):
    if wrap:   # 255 levels 1/8 octave apart from the top of an octave: 33 octaves (the last shares the first's slot)
        j = np.arange(255, dtype=np.float64)
        t = (float(rng.uniform(1.75, 1.99)) * np.exp2(j / 8 + float(rng.integers(-100, 60)))).astype(np.float32)
        return np.nextafter(t, np.float32(np.inf))
    if rng.random() < 0.6:   # WQ: the smallest float32 >= 2^((fsr + j step)/16), strict first threshold
        step = int(rng.choice([1, 2, 4, 8]))
        j = np.arange(count, dtype=np.float64)
        t = np.exp2((float(rng.integers(-200, 0)) + j * step) / 16 + float(rng.choice([-120, -30, 0, 20, 60])))
        t32 = t.astype(np.float32)
        t32 = np.where(t32.astype(np.float64) < t, np.nextafter(t32, np.float32(np.inf)), t32)
        t32[0] = np.nextafter(t32[0], np.float32(np.inf))
        return t32
    # two mantissa patterns (bucket starts, ends, anywhere), octave by octave from a random exponent
    pats = []
    for _ in range(2):
        ms = np.sort(rng.choice(32, int(rng.integers(1, 9)), replace=False)).astype(np.int64)
        low = np.where(rng.random(ms.size) < 0.3, 0, np.where(rng.random(ms.size) < 0.3, 0x3FFFF,
                                                              rng.integers(0, 1 << 18, ms.size)))
        pats.append((ms << 18) | low)
    e = int(rng.integers(1, 200))
    out = []
    while len(out) < count:
        out += list((np.int64(e) << 23) | pats[int(rng.integers(0, 2))])
        e += 1
    return np.array(out[:count], dtype=np.int64).astype(np.int32).view(np.float32)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("op", ["QRelu", "AddQRelu"])
def test_qrelu_octave_index(isa, seed, op, monkeypatch):
    if seed % 4 == 3:
        monkeypatch.setenv("WQCOMPILE_NO_VBMI", "1")   # the same sets on the packed gather index
    rng = np.random.default_rng(9800 + seed)
    count = int(rng.choice([16, 17, 100, 255]))
    while True:
        t = _float_set(rng, count, wrap=seed % 3 == 1)
        if np.all(np.diff(t) > 0) and t[0] > 0 and float_octave_ok(t):
            break
    bits = t.view(np.int32).astype(np.int64)
    assert seed % 3 != 1 or (bits[-1] >> 23) - (bits[0] >> 23) == 32
    starts = ((bits[:, None] >> 18) + np.arange(-2, 3)[None, :]).ravel() << 18
    probes = [t, np.nextafter(t, np.float32(-np.inf)), np.nextafter(t, np.float32(np.inf)),
              np.float32([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3e38, -3e38]),
              np.clip(starts, 0, 0x7F800000).astype(np.int32).view(np.float32),
              np.clip(starts - 1, 0, 0x7F800000).astype(np.int32).view(np.float32),
              (rng.choice([-1, 1], 400) * np.exp2(rng.uniform(-149, 128, 400))).astype(np.float32),
              (t[rng.integers(0, count, 400)] * rng.uniform(0.5, 2, 400)).astype(np.float32)]
    x = np.concatenate([p.astype(np.float32) for p in probes])
    x = np.concatenate([x, np.zeros(-x.size % 16 + 5, np.float32)])
    with np.errstate(invalid="ignore"):
        want = (t[None, :] <= x[:, None]).sum(-1).astype(np.uint8)
    assert np.array_equal(qrelu_reference(x, t), want)
    if op == "QRelu":
        model = model_of("QRelu", [("X", x), ("thresholds", t)], {}, np.uint8)
        got = run_ort(model, {"X": x}, isa, threads=1 + seed % 2)
    else:   # QRelu(Add(A, B)) with B = 0: fused into AddQRelu by wqcompile.runtime
        got = run_ort(_add_qrelu_model(x, t), {"A": x, "B": np.zeros_like(x)}, isa, threads=1 + seed % 2)
    assert got.dtype == np.uint8 and np.array_equal(got, want), f"{int((got != want).sum())} levels differ"


def _add_qrelu_model(x, t):
    from onnx import TensorProto, helper, numpy_helper
    from wqcompile.runtime_ops import DOMAIN
    nodes = [helper.make_node("Add", ["A", "B"], ["S"]),
             helper.make_node("QRelu", ["S", "thresholds"], ["Y"], domain=DOMAIN)]
    graph = helper.make_graph(nodes, "add_qrelu", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [x.size]),
                                                   helper.make_tensor_value_info("B", TensorProto.FLOAT, [x.size])],
                              [helper.make_tensor_value_info("Y", TensorProto.UINT8, None)],
                              [numpy_helper.from_array(t, "thresholds")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                             ir_version=8)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(6))
def test_octave_index_wide_tiles(isa, seed):
    """1x1 QConv over wide images: tiles of 48 columns (three vectors per row, tails) and of 16, up to 8 rows, per
    image and across images (the register-tiled edge and the plain edge), thresholds near every accumulator."""
    from tests.ops.oracles import pack_naive
    from wqcompile.runtime_ops.qconv import qconv_reference
    rng, rows = _rows(seed)
    m = int(rng.integers(9, 30))
    row_of = rng.integers(0, 3, m)
    thresholds = rows[row_of]
    u = [np.unique(t).astype(np.int64) for t in rows]
    bias = np.array([int(rng.choice(u[g])) - int(rng.integers(-40000, 40000)) for g in row_of], dtype=np.int64)
    bias = np.clip(bias, -BIAS_MAX, BIAS_MAX).astype(np.int32)
    n, h, w = int(rng.integers(1, 3)), int(rng.choice([1, 3, 7])), int(rng.choice([13, 16, 48, 50, 97]))
    x = rng.integers(-32767, 32768, (n, 1, h, w)).astype(np.float32)
    codebook = np.ones((m, 2), dtype=np.int16)
    packed = pack_naive(np.zeros(m, dtype=np.int64), 1)
    attrs = dict(w_bits=1, w_shape=[m, 1, 1, 1], w_shift=[0] * m, x_shift=0, x_max=32767, group=1, strides=[1, 1],
                 pads=[0, 0, 0, 0], dilations=[1, 1], auto_pad="NOTSET")
    ref = qconv_reference(x, packed, codebook, None, bias, thresholds, **attrs)
    acc = x.astype(np.int64) + bias.astype(np.int64)[None, :, None, None]
    want = (thresholds[None, :, None, None, :] <= acc[..., None]).sum(-1)
    assert np.array_equal(ref, want.astype(np.uint8))
    model = model_of("QConv", [("X", x), ("W", packed), ("codebook", codebook), ("x_table", None), ("bias", bias),
                               ("thresholds", thresholds)], attrs, np.uint8)
    got = run_ort(model, {"X": x}, isa, threads=1 + seed % 2)
    assert np.array_equal(got, ref), f"{int((got != ref).sum())} levels differ"
