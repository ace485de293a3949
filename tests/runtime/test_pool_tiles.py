"""QConvMaxPool's pool tiles (AVX-512: the 2x2, stride-2 max pool inside the GEMM tile, IsaKernels::
gemm_tile_pool_edge) against the numpy reference, QConv then the max pool over its levels, bit for bit.

wqcompile.runtime fuses a QConv with level output and its MaxPool into QConvMaxPool. With a 2x2, stride-2 pool
without pads, a dense layer and a short K (at most 32 int16 pairs or u8 quads) the kernel takes the pool tiles:
the pooled levels come straight from the tile's registers. Every case runs three ways:

* ``WQCOMPILE_REQUIRE_POOL_TILES=1``: a QConvMaxPool that does not take the pool tiles is an error (at kernel
  creation, or at the run for weights given as graph inputs), so a passing run
  proves the pool tiles computed the output;
* ``WQCOMPILE_NO_POOL_TILES=1``: the int32 accumulators, max_pool_i32 and the quantizer pass, the A/B reference
  inside the library;
* neither.

Cases cover the int16 pair and the u8 quad tiles, one input channel (tap pairs), 1..6 channels, kernels 1x1 to
5x5, conv strides and dilations 1..2, pads, conv outputs of odd height or width (the pool drops their last row or
column), pooled counts below, at and past multiples of the tile's 16 positions, M not a multiple of the tile's 8
rows, batches 1..5 at 1 and 2 threads (2 threads at batch 1: bands of pooled rows), shared and per-channel
quantizers, level and float inputs, and operands as initializers or graph inputs.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from tests.ops.cases import random_operands
from tests.ops.oracles import pack_naive
from tests.runtime.helpers import conv_maxpool_model, cpu_has, forced_isa, only_switches, same_bits
from tests.runtime.test_parity import _thresholds
from tests.runtime.test_u8_path import ACC_MAX, _maxpool_ref, s8_codebook, u8_levels, u8_table
from wqcompile import runtime
from wqcompile.runtime_ops.qconv import qconv_reference

pytestmark = [pytest.mark.requires_ops_lib,
              pytest.mark.skipif(not cpu_has("avx512"), reason="the pool tiles need AVX-512")]

SWITCHES = ("WQCOMPILE_REQUIRE_POOL_TILES", "WQCOMPILE_NO_POOL_TILES", "WQCOMPILE_REQUIRE_U8", "WQCOMPILE_NO_U8")
MODES = {"pool-tiles": {"WQCOMPILE_REQUIRE_POOL_TILES": "1"}, "no-pool-tiles": {"WQCOMPILE_NO_POOL_TILES": "1"},
         "auto": {}}
KERNELS = ((1, 1), (2, 2), (3, 3), (3, 1), (1, 3), (2, 3), (5, 5))


def _geometry(rng, kh: int, kw: int) -> tuple[list[int], list[int], list[int], int, int]:
    """Strides, dilations, pads and an input size whose conv output is at least 2x2."""
    while True:
        strides = [int(v) for v in rng.choice([1, 1, 2], 2)]
        dilations = [int(v) for v in rng.choice([1, 1, 2], 2)]
        pads = [int(v) for v in rng.integers(0, 3, 4)]
        h, w = (int(v) for v in rng.integers(2, 21, 2))
        oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
        ow = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
        if oh >= 2 and ow >= 2:
            return strides, dilations, pads, h, w


def make_case(rng, *, u8: bool, m: int, cg: int, kernel: tuple[int, int], x_shape: tuple[int, ...],
              strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0), bits: int = 4, gc: int = 1) -> dict:
    """A dense QConv with level output: int16 pairs (float or level input, w_bits 1..8) or u8 quads (level tables
    within 0..255, int8 weights: test_u8_path's operands, w_bits ≤ 5), with its thresholds."""
    kh, kw = kernel
    fan_in = cg * kh * kw
    if not u8:
        ops = random_operands(rng, (m, cg, kh, kw), x_shape, fan_in, bits=bits, gc=gc)
        x, packed, codebook, x_table, bias = ops.x, ops.packed, ops.codebook, ops.x_table, ops.bias
        w_shift, x_shift, x_max = list(ops.w_shift), ops.x_shift, ops.x_max
    else:
        bits = min(bits, 5)
        table = u8_table(rng, int(rng.choice([2, 16, 17, 64, 256])))
        x_top = int(table.max())
        codebook = s8_codebook(rng, gc, bits, fan_in, x_top, 2**10)
        packed = pack_naive(rng.integers(0, 1 << bits, (m, cg, kh, kw)), bits)
        room = max(0, min(2**10, ACC_MAX - x_top * fan_in * int(np.abs(codebook.astype(np.int64)).max())))
        bias = rng.integers(-room, room + 1, m).astype(np.int32)
        x, x_table = u8_levels(rng, x_shape, len(table)), table
        w_shift, x_shift, x_max = [int(v) for v in rng.integers(-3, 12, gc)], int(rng.integers(-4, 9)), 32767
    attrs = dict(w_bits=bits, w_shape=[m, cg, kh, kw], w_shift=w_shift, x_shift=x_shift, x_max=x_max, group=1,
                 strides=list(strides), pads=list(pads), dilations=list(dilations))
    case = dict(x=x, W=packed, codebook=codebook, x_table=x_table, bias=bias, thresholds=None, attrs=attrs, u8=u8)
    case["thresholds"] = _thresholds(rng, reference_conv(case), [s + x_shift for s in w_shift], 1, gc)
    return case


def pool_case(seed: int) -> dict:
    """A random layer short enough in K for the pool tiles: int16 pairs for even seeds, u8 quads for odd ones."""
    rng = np.random.default_rng(11000 + seed)
    kh, kw = KERNELS[seed % len(KERNELS)]
    cg = 1 if seed % 5 == 0 else int(rng.integers(1, 3 if kh * kw > 9 else 7))
    m = int(rng.choice([2, 3, 8, 9, 16, 17, 32, 40]))   # (M = 1 with one channel is depthwise)
    strides, dilations, pads, h, w = _geometry(rng, kh, kw)
    n = int(rng.choice([1, 1, 2, 3, 5]))
    return make_case(rng, u8=seed % 2 == 1, m=m, cg=cg, kernel=(kh, kw), x_shape=(n, cg, h, w), strides=strides,
                     dilations=dilations, pads=pads, bits=1 + seed % 8, gc=(1, m)[(seed // 2) % 2])


def reference_conv(case: dict) -> np.ndarray:
    return qconv_reference(case["x"], case["W"], case["codebook"], case["x_table"], case["bias"], case["thresholds"],
                           None, **case["attrs"])


def run_pooled(case: dict, env: dict, *, threads=1, as_inputs=False, pool=None, isa="avx512") -> np.ndarray:
    model, feeds = conv_maxpool_model(case, pool or dict(kernel_shape=[2, 2], strides=[2, 2]), as_inputs=as_inputs)
    assert runtime.with_qconv_maxpool(model)[1] == 1
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    # the u8 cases must take the u8 path, the int16 ones the int16 path
    env = {**env, ("WQCOMPILE_REQUIRE_U8" if case["u8"] else "WQCOMPILE_NO_U8"): "1"}
    with only_switches(SWITCHES, env), forced_isa(isa):
        return runtime.InferenceSession(model, so).run(None, feeds)[0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(48))
def test_pool_tiles_random(seed, mode):
    case = pool_case(seed)
    expected = _maxpool_ref(reference_conv(case), 2, 2, [0, 0, 0, 0])
    got = run_pooled(case, MODES[mode], threads=1 + (seed // 3) % 2, as_inputs=seed % 7 == 3)
    assert same_bits(got, expected), \
        f"{case['attrs']} x {case['x'].shape}: {int(np.sum(got != expected))} of {expected.size} differ"


@pytest.mark.parametrize("u8", [False, True])
@pytest.mark.parametrize("hw", [(4, 8), (8, 8), (9, 9), (10, 14), (14, 14), (28, 28)])
def test_pool_tiles_position_counts(hw, u8):
    """Pooled planes of 8, 16, 16, 35, 49 and 196 positions (below, at and past the tile's 16): one channel, 3x3,
    pad 1 (MNIST's conv1), 3 and 32 outputs, batch 1 and 2, at 1 and 2 threads."""
    rng = np.random.default_rng(hw[0] * 100 + hw[1])
    for m, batch in ((3, 1), (32, 1), (32, 2)):
        case = make_case(rng, u8=u8, m=m, cg=1, kernel=(3, 3), x_shape=(batch, 1, *hw), pads=(1, 1, 1, 1), bits=4,
                         gc=(1, m)[batch % 2])
        expected = _maxpool_ref(reference_conv(case), 2, 2, [0, 0, 0, 0])
        for threads in (1, 2):
            got = run_pooled(case, MODES["pool-tiles"], threads=threads)
            assert same_bits(got, expected), \
                f"{hw}, M {m}, batch {batch}, {threads} threads: {int(np.sum(got != expected))} differ"


@pytest.mark.parametrize("what, pool, isa, message", [
    ("3x3 pool", dict(kernel_shape=[3, 3], strides=[2, 2]), "avx512", "the pool is not 2x2 with stride 2 and no pads"),
    ("2x2 stride 1", dict(kernel_shape=[2, 2], strides=[1, 1]), "avx512", "the pool is not 2x2"),
    ("long K", None, "avx512", "its K is long"),
    ("AVX2", None, "avx2", "the avx2 instruction set has no pool tile"),
])
def test_pool_tiles_required_names_the_node_and_the_reason(what, pool, isa, message):
    """Without pool tiles the layer still runs (the int32 path, the same levels); with REQUIRE it is an error that
    names the node and why."""
    if isa == "avx2" and not cpu_has("avx2"):
        pytest.skip("CPU lacks AVX2")
    rng = np.random.default_rng(5)
    cg = 16 if what == "long K" else 2   # 16 channels x 3x3: 72 int16 pairs
    case = make_case(rng, u8=False, m=8, cg=cg, kernel=(3, 3), x_shape=(1, cg, 9, 9), pads=(1, 1, 1, 1))
    y = reference_conv(case)
    k, s = (pool or {}).get("kernel_shape", [2, 2])[0], (pool or {}).get("strides", [2, 2])[0]
    if min(y.shape[2:]) < k:
        pytest.skip("the pool does not fit this output")
    expected = _maxpool_ref(y, k, s, [0, 0, 0, 0])
    assert same_bits(run_pooled(case, MODES["auto"], pool=pool, isa=isa), expected)
    with pytest.raises(Exception, match=rf"QConvMaxPool 'conv'.*WQCOMPILE_REQUIRE_POOL_TILES is set, but {message}"):
        run_pooled(case, MODES["pool-tiles"], pool=pool, isa=isa)
