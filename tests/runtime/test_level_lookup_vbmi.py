"""The uint8 level -> int16 mantissa lookups of QConv / QGemm inputs (`lookup`, `pair_levels`) on every ISA path,
including the AVX-512 VBMI byte-plane versions (64 levels per pair of vpermi2b, then unpacks): 256-entry tables
with negative entries and every byte pattern, levels 0..255 (both halves of each byte plane), planes longer and
shorter than 64 and not multiples of it, odd channel counts (the pair's high half 0), side padding (one call per
row) and none (one call per plane), depthwise and QGemm (`lookup`); the same cases with WQCOMPILE_NO_VBMI=1."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.oracles import pack_naive
from tests.runtime.helpers import ISAS, cpu_has, model_of, run_ort, same_bits
from wqcompile.runtime_ops.qconv import qconv_reference
from wqcompile.runtime_ops.qgemm import qgemm_reference

pytestmark = [pytest.mark.requires_ops_lib]

ISA_PARAMS = [pytest.param(i, marks=pytest.mark.skipif(not cpu_has(i), reason=f"CPU lacks {i}")) for i in ISAS]
ACC_MAX = 2**30 - 1


def _case(seed):
    rng = np.random.default_rng(5100 + seed)
    op = ["conv1x1", "conv3x3", "depthwise", "gemm"][seed % 4]
    c = int(rng.choice([1, 3, 4, 5, 8]))
    h, w = (int(v) for v in rng.choice([1, 3, 7, 8, 9, 16, 17, 33, 64, 65, 100], 2))
    size = int(rng.choice([2, 33, 129, 200, 256]))
    table = rng.integers(-32767, 32768, size).astype(np.int16)
    table[0] = 0
    if rng.random() < 0.3:
        table[rng.integers(1, size, 8)] = rng.choice(np.array([-32768 + 1, 32767, 255, 256, -256, -1], dtype=np.int16), 8)
    x_bound = int(np.abs(table.astype(np.int64)).max()) or 1
    x = rng.integers(0, size, (int(rng.integers(1, 3)), c, h, w)).astype(np.uint8)
    if op == "gemm":
        x = x.reshape(-1, w)
    k = {"conv1x1": c, "conv3x3": 9 * c, "depthwise": 9, "gemm": w}[op]
    m = c if op == "depthwise" else int(rng.integers(1, 20))
    cmax = max(1, min(32767, ACC_MAX // (x_bound * k)))
    bits = 4
    codebook = rng.integers(-cmax, cmax + 1, (1, 1 << bits)).astype(np.int16)
    w_shape = {"conv1x1": [m, c, 1, 1], "conv3x3": [m, c, 3, 3], "depthwise": [m, 1, 3, 3], "gemm": [m, w]}[op]
    idx = rng.integers(0, 1 << bits, w_shape)
    attrs = dict(w_bits=bits, w_shape=w_shape, w_shift=[int(rng.integers(0, 10))], x_shift=int(rng.integers(0, 10)),
                 x_max=32767)
    if op != "gemm":
        attrs.update(group=c if op == "depthwise" else 1, strides=[1, 1], dilations=[1, 1], auto_pad="NOTSET",
                     pads=[0, 0, 0, 0] if op == "conv1x1" else [1, 1, 1, 1])
    return op, dict(x=x, W=pack_naive(idx, bits), codebook=codebook, x_table=table, attrs=attrs)


def _run(op, case, isa):
    fn = qgemm_reference if op == "gemm" else qconv_reference
    want = fn(case["x"], case["W"], case["codebook"], case["x_table"], None, None, None, **case["attrs"])
    model = model_of("QGemm" if op == "gemm" else "QConv", [("X", case["x"]), ("W", case["W"]),
                     ("codebook", case["codebook"]), ("x_table", case["x_table"])], case["attrs"], np.float32)
    got = run_ort(model, {"X": case["x"]}, isa, threads=1)
    assert same_bits(got, want), f"{op} differs on {int(np.sum(got != want))} elements"


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(24))
def test_level_lookup(isa, seed):
    _run(*_case(seed), isa)


@pytest.mark.skipif(not cpu_has("avx512"), reason="CPU lacks avx512")
@pytest.mark.parametrize("seed", range(0, 24, 3))
def test_level_lookup_without_vbmi(seed, monkeypatch):
    monkeypatch.setenv("WQCOMPILE_NO_VBMI", "1")
    _run(*_case(seed), "avx512")


def _add_decode_qrelu_model(n, table, thresholds):
    from onnx import TensorProto, helper, numpy_helper
    from wqcompile.runtime_ops import DOMAIN
    nodes = [helper.make_node("QDecode", ["L", "table"], ["D"], domain=DOMAIN),
             helper.make_node("Add", ["A", "D"], ["S"]),
             helper.make_node("QRelu", ["S", "thresholds"], ["Y"], domain=DOMAIN)]
    graph = helper.make_graph(nodes, "add_decode_qrelu",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n]),
                               helper.make_tensor_value_info("L", TensorProto.UINT8, [n])],
                              [helper.make_tensor_value_info("Y", TensorProto.UINT8, None)],
                              [numpy_helper.from_array(table, "table"), numpy_helper.from_array(thresholds, "thresholds")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                             ir_version=8)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(8))
def test_add_decode_qrelu_tables(isa, seed, monkeypatch):
    """QRelu(A + QDecode(L)) (fused into AddDecodeQRelu): tables of 33..256 entries (the VBMI byte planes) and
    of up to 32 (the permute), lengths with tails, log-spaced and arbitrary thresholds."""
    if seed % 4 == 3:
        monkeypatch.setenv("WQCOMPILE_NO_VBMI", "1")
    rng = np.random.default_rng(5300 + seed)
    size = int(rng.choice([17, 33, 200, 256]))
    table = np.concatenate([[0], np.sort(np.exp2(rng.uniform(-8, 4, size - 1)))]).astype(np.float32)
    n = int(rng.choice([1, 63, 64, 65, 1000, 4099]))
    lv = rng.integers(0, size, n).astype(np.uint8)
    a = (rng.standard_normal(n) * 4).astype(np.float32)
    if seed % 2:
        thresholds = np.nextafter(np.exp2(np.arange(255) / 8 - 20).astype(np.float32), np.float32(np.inf))
    else:
        thresholds = np.sort(rng.uniform(0.01, 20, int(rng.choice([15, 100, 255])))).astype(np.float32)
    s = a + table[lv]
    want = (thresholds[None, :] <= s[:, None]).sum(-1).astype(np.uint8)
    got = run_ort(_add_decode_qrelu_model(n, table, thresholds), {"A": a, "L": lv}, isa, threads=1 + seed % 2)
    assert np.array_equal(got, want), f"{int((got != want).sum())} levels differ"
