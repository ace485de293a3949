"""QRelu / AddQRelu / AddDecodeQRelu on dense near-uniform 8-bit float thresholds (Lloyd-Max activation levels, the
compiler's default, and linear ones): FloatThresholds::packed at the per-table resolution P = packed_bits (5..9,
the coarsest at which every key holds at most one threshold), against level = #{j : t[j] <= x} (NaN -> 0).

The sets come from Lloyd's algorithm on samples of activation-like distributions (ReLU'd normals, heavy tails,
clusters of identical values), over many scales, plus linear sets and sets packed against the top of an octave or
the float range. The probes are the thresholds, one ulp below and above, the key starts of every resolution and
one ulp below them, NaN, +-Inf, +-0, denormals and draws from the distribution. ``WQCOMPILE_REQUIRE_THRESHOLD_INDEX``
makes the kernel fail when a table gets no O(1) index, so a set that should take the packed gather (or the octave
index) and falls back to the binary search fails here; sets that cannot be packed (duplicate thresholds) are
checked to be refused by it, so the switch is known to bite."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.runtime.helpers import ISAS, cpu_has, forced_isa
from wqcompile import runtime
from wqcompile.runtime_ops import DOMAIN

pytestmark = [pytest.mark.requires_ops_lib]

ISA_PARAMS = [pytest.param(i, marks=pytest.mark.skipif(not cpu_has(i), reason=f"CPU lacks {i}")) for i in ISAS]
REQUIRE = "WQCOMPILE_REQUIRE_THRESHOLD_INDEX"


def float_packed_bits(t) -> int | None:
    """build_float_thresholds' choice: the coarsest P in 5..9 with at most one threshold per key (bits >> 23 - P)
    and every key below the last of the 32 * 2^P; None when there is none (or t[0] <= 0)."""
    t = np.asarray(t, dtype=np.float32)
    if not t[0] > 0:
        return None
    bits = t.view(np.int32).astype(np.int64)
    for p in range(5, 10):
        k = (bits >> (23 - p)) - (bits[0] >> (23 - p))
        if k[-1] < (32 << p) - 1 and np.all(np.diff(k) > 0):
            return p
    return None


def _samples(rng, n):
    """Activation-like values (before the quantizer's ReLU): a scaled mixture, sometimes with clusters."""
    kind = int(rng.integers(0, 4))
    if kind == 0:
        x = rng.standard_normal(n)
    elif kind == 1:
        x = rng.laplace(0, 1, n)
    elif kind == 2:
        x = np.where(rng.random(n) < 0.8, rng.standard_normal(n), rng.lognormal(1, 0.7, n))
    else:
        x = rng.standard_t(3, n)
    if rng.random() < 0.4:   # clusters of identical values (saturated units, constant channels)
        at = rng.uniform(0.1, 3, int(rng.integers(1, 6)))
        pick = rng.random(n) < 0.15
        x[pick] = rng.choice(at, int(pick.sum()))
    return x * float(np.exp2(rng.uniform(-20, 20)))


def _lloyd(rng, count):
    """Lloyd-Max on positive samples (level 0 fixed at 0, as wqcompile.quant.lloyd_act): midpoint thresholds."""
    x = _samples(rng, 20000)
    x = np.sort(x[x > 0])
    levels = np.concatenate([[0.0], np.quantile(x, (np.arange(count) + 0.5) / count)])
    for _ in range(int(rng.integers(3, 25))):
        t = 0.5 * (levels[1:] + levels[:-1])
        cell = np.searchsorted(t, x, side="right")
        sums = np.bincount(cell, x, count + 1)
        n = np.bincount(cell, minlength=count + 1)
        new = levels.copy()
        new[1:][n[1:] > 0] = sums[1:][n[1:] > 0] / n[1:][n[1:] > 0]
        new = np.maximum.accumulate(new)
        if not np.all(np.diff(new) > 0):
            break
        levels = new
    return (0.5 * (levels[1:] + levels[:-1])).astype(np.float32), levels.astype(np.float32)


def _linear(rng, count):
    step = float(np.exp2(rng.uniform(-30, 30)))
    t = ((np.arange(count) + float(rng.uniform(0.3, 1))) * step).astype(np.float32)
    return t, np.concatenate([[0], t]).astype(np.float32)


def _octave_top(rng, count):
    """Linear thresholds ending just below a power of two, or reaching the largest floats and +Inf."""
    t, v = _linear(rng, count)
    e = float(rng.choice([rng.uniform(-60, 60), 127.999]))
    t = (t.astype(np.float64) / float(t[-1]) * np.exp2(e)).astype(np.float32)
    if e > 127:
        t[-1] = np.inf
    return np.sort(t), np.concatenate([[0], t[:-1]]).astype(np.float32)


def _thresholds(seed):
    rng = np.random.default_rng(12300 + seed)
    make = [_lloyd, _lloyd, _linear, _octave_top][seed % 4]
    while True:
        t, values = make(rng, 255)
        if t[0] > 0 and np.all(np.diff(t) > 0):
            return rng, t, values


def _probes(rng, t, values):
    bits = t.view(np.int32).astype(np.int64)
    fin = np.isfinite(t)
    starts = np.concatenate([(bits >> (23 - p)) << (23 - p) for p in range(5, 10)] +
                            [((bits >> (23 - p)) + 1) << (23 - p) for p in range(5, 10)])
    starts = np.clip(np.concatenate([starts, starts - 1]), 0, 0x7F800000).astype(np.int32).view(np.float32)
    probes = [t, np.nextafter(t, np.float32(-np.inf)), np.nextafter(t[fin], np.float32(np.inf)), starts,
              np.float32([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1.2e-38, 3.4e38, -3.4e38]),
              values, (values[rng.integers(0, values.size, 600)] * rng.uniform(0.9, 1.1, 600)).astype(np.float32),
              (rng.choice([-1, 1], 300) * np.exp2(rng.uniform(-149, 128, 300))).astype(np.float32)]
    x = rng.permutation(np.concatenate([p.astype(np.float32) for p in probes]))
    return np.concatenate([x, np.zeros(-x.size % 64 + 13, np.float32)])   # tails of every kind


def _want(t, x):
    with np.errstate(invalid="ignore"):
        return (t[None, :] <= x[:, None]).sum(-1).astype(np.uint8)


def _graph(op, n, t, table):
    inits = [numpy_helper.from_array(t, "T")]
    nodes, inputs = [], [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n])]
    if op == "QRelu":
        nodes.append(helper.make_node("QRelu", ["A", "T"], ["Y"], domain=DOMAIN))
    else:
        b = "B"
        if op == "AddDecodeQRelu":
            inits.append(numpy_helper.from_array(table, "D"))
            nodes.append(helper.make_node("QDecode", ["B", "D"], ["Bf"], domain=DOMAIN))
            inputs.append(helper.make_tensor_value_info("B", TensorProto.UINT8, [n]))
            b = "Bf"
        else:
            inputs.append(helper.make_tensor_value_info("B", TensorProto.FLOAT, [n]))
        nodes += [helper.make_node("Add", ["A", b], ["S"]), helper.make_node("QRelu", ["S", "T"], ["Y"], domain=DOMAIN)]
    graph = helper.make_graph(nodes, op, inputs, [helper.make_tensor_value_info("Y", TensorProto.UINT8, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                             ir_version=8)


def _run(op, t, x, rng, isa, threads, values):
    """The op's output and the definition's levels of what it quantizes (a + b in float32 for the fused ops)."""
    import onnxruntime as ort
    n = x.size
    feeds, s = {"A": x}, x
    table = None
    if op == "AddQRelu":   # b = 0 on half the elements (the probes exactly), small offsets on the others
        b = np.where(rng.random(n) < 0.5, 0, x * np.float32(2.0 ** -20)).astype(np.float32)
        feeds["B"], s = b, (x + b).astype(np.float32)
    elif op == "AddDecodeQRelu":   # the Lloyd level values as the decode table (> 32 entries: the VBMI decode)
        size = int(rng.choice([32, values.size]))
        table = np.concatenate([[0], values[1:size]]).astype(np.float32)
        lv = np.where(rng.random(n) < 0.5, 0, rng.integers(0, size, n)).astype(np.uint8)
        feeds["B"], s = lv, (x + table[lv]).astype(np.float32)
    model = _graph(op, n, t, table)
    fused, _ = runtime.with_add_qrelu(model)
    assert [nd.op_type for nd in fused.graph.node][-1] == op
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    with forced_isa(isa):
        got = runtime.InferenceSession(model, so).run(None, feeds)[0]
    return got, _want(t, s)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("op", ["QRelu", "AddQRelu", "AddDecodeQRelu"])
def test_dense_float_thresholds(isa, seed, op, monkeypatch):
    rng, t, values = _thresholds(seed)
    p = float_packed_bits(t)
    assert p is not None, "a dense 255-threshold set the packed index should take"
    monkeypatch.setenv(REQUIRE, "1")   # no O(1) index for this table: the kernel refuses
    if seed % 3 == 2:
        monkeypatch.setenv("WQCOMPILE_NO_VBMI", "1")
    x = _probes(rng, t, values)
    got, want = _run(op, t, x, rng, isa, 1 + seed % 2, values)
    assert got.dtype == np.uint8 and np.array_equal(got, want), f"{int((got != want).sum())} levels differ"


def test_dense_sets_need_finer_keys():
    """The Lloyd and linear 8-bit sets are denser than 1/32 octave at their top: without the per-table resolution
    they would have no packed index (the old fixed P = 5)."""
    ps = [float_packed_bits(_thresholds(seed)[1]) for seed in range(12)]
    assert all(p is not None for p in ps) and sum(p > 5 for p in ps) >= 10, ps


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(4))
def test_unpackable_float_thresholds(isa, seed, monkeypatch):
    """Duplicates (two thresholds in one key at every resolution), a first threshold <= 0, or a span over 32
    octaves: the binary search, still exact; the require switch reports the missing index."""
    rng, t, values = _thresholds(seed)
    if seed == 0:
        t = np.sort(np.concatenate([t[:-3], t[100:103]]))                     # duplicates
    elif seed == 1:
        t = np.sort(np.concatenate([[np.float32(-1.5), np.float32(0.0)], t[2:]]))   # t[0] <= 0
    elif seed == 2:
        t = np.sort(np.concatenate([t[:-1], [t[0] * np.float32(2.0 ** -33)]])).astype(np.float32)   # 33 octaves
    else:
        t = np.sort(np.concatenate([t[:-5], np.full(5, t[200])])).astype(np.float32)   # a run of equal ones
    assert float_packed_bits(t) is None
    x = _probes(rng, t, values)
    got, want = _run("QRelu", t, x, rng, isa, 1, values)
    assert np.array_equal(got, want), f"{int((got != want).sum())} levels differ"
    monkeypatch.setenv(REQUIRE, "1")
    with pytest.raises(Exception, match=REQUIRE):
        _run("QRelu", t, x, rng, isa, 1, values)
