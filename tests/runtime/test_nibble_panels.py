"""QGemm's nibble panels (AVX-512 vpermw over 4-bit indices, IsaKernels::gemv_nibbles) against the numpy reference,
bit for bit.

A QGemm layer gets nibble panels when the instruction set has them (AVX-512) and every 16 output columns take at
most 16 distinct decoded weights (b ≤ 4 with a codebook shared by those columns); batches of at most kNibbleRows
(2) rows then run on them. Every case runs three ways:

* ``WQCOMPILE_REQUIRE_NIBBLES=1``: creating (or, weights given as graph inputs, running) a layer that gets no nibble
  panels is an error, so a passing run of ≤ 2 rows proves the nibble kernel computed the output;
* ``WQCOMPILE_NO_NIBBLES=1``: the int16 panels, the A/B reference inside the library;
* neither.

Cases cover K with every remainder of its k-pairs modulo the 4 of a block (odd K: the pad column), N below, at and
past multiples of 16, 1..5 rows (3 and more: the int16 panels of a layer that has nibble panels), w_bits 1..4,
Gc = 1 and Gc = N with one codebook repeated (≤ 16 distinct weights per panel), level and float inputs, fused level
and float outputs, bias and row_scale, the extreme weights ±cmax with the largest mantissas, and 1 and 2 threads.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.cases import random_operands
from tests.ops.oracles import pack_naive
from tests.runtime.helpers import cpu_has, only_switches, run_layer_case, same_bits
from tests.runtime.test_parity import _row_scale, _thresholds
from wqcompile.runtime_ops.qgemm import qgemm_reference

pytestmark = [pytest.mark.requires_ops_lib,
              pytest.mark.skipif(not cpu_has("avx512"), reason="nibble panels need AVX-512")]

SWITCHES = ("WQCOMPILE_REQUIRE_NIBBLES", "WQCOMPILE_NO_NIBBLES")
MODES = {"nibbles": {"WQCOMPILE_REQUIRE_NIBBLES": "1"}, "int16": {"WQCOMPILE_NO_NIBBLES": "1"}, "auto": {}}
KS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 300, 3136)
NS = (1, 2, 15, 16, 17, 31, 33, 48, 100, 128)
BATCHES = ((), (1,), (2,), (3,), (4,), (2, 2), (5,))


def nibble_case(seed: int) -> dict:
    rng = np.random.default_rng(9000 + seed)
    k, n = KS[seed % len(KS)], NS[(seed // 3) % len(NS)]
    batch = BATCHES[seed % len(BATCHES)]
    gc = 1 if seed % 4 else n
    ops = random_operands(rng, (n, k), (*batch, k), k, bits=1 + seed % 4, gc=gc)
    if gc > 1:   # one codebook repeated per row: its panels still take ≤ 16 distinct weights
        ops.codebook[:] = ops.codebook[0]
        ops.w_shift = [ops.w_shift[0]] * gc
    if seed % 5 == 0:   # the extremes: every weight ±cmax, the largest input mantissa
        ops.idx[...] = rng.integers(0, 2, ops.idx.shape)
        cmax = int(np.abs(ops.codebook.astype(np.int64)).max())
        ops.codebook[:, 0], ops.codebook[:, 1] = cmax, -cmax
        ops.packed = pack_naive(ops.idx, ops.w_bits)
        if ops.x_table is not None:
            ops.x[...] = int(np.argmax(np.abs(ops.x_table.astype(np.int64))))
    attrs = dict(w_bits=ops.w_bits, w_shape=[n, k], w_shift=ops.w_shift, x_shift=ops.x_shift, x_max=ops.x_max)
    case = dict(x=ops.x, W=ops.packed, codebook=ops.codebook, x_table=ops.x_table, bias=ops.bias, thresholds=None,
                row_scale=_row_scale(seed, n, gc, seed % 3 == 0), attrs=attrs)
    if seed % 2:
        case["thresholds"] = _thresholds(rng, reference(case), ops.channel_shifts(), -1, gc)
    return case


def reference(case: dict) -> np.ndarray:
    return qgemm_reference(case["x"], case["W"], case["codebook"], case["x_table"], case["bias"], case["thresholds"],
                           case["row_scale"], **case["attrs"])


def run_case(case: dict, env: dict, *, as_inputs=False, threads=1) -> np.ndarray:
    with only_switches(SWITCHES, env):
        return run_layer_case("QGemm", case, as_inputs=as_inputs, threads=threads)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(60))
def test_nibble_panels_random(seed, mode):
    case = nibble_case(seed)
    expected = reference(case)
    got = run_case(case, MODES[mode], as_inputs=seed % 7 == 3, threads=1 + seed % 2)
    assert same_bits(got, expected), f"{case['attrs']} x {case['x'].shape}: {np.sum(got != expected)} elements differ"


def test_mnist_fc1_shape_at_batch_1_and_5():
    """fc1 of the MNIST CNN (3136 -> 128, 4-bit, level input, fused levels): 8 panels, 784 blocks."""
    rng = np.random.default_rng(3)
    ops = random_operands(rng, (128, 3136), (1, 3136), 3136, bits=4, gc=1, kind="level")
    attrs = dict(w_bits=4, w_shape=[128, 3136], w_shift=ops.w_shift, x_shift=ops.x_shift, x_max=ops.x_max)
    case = dict(x=ops.x, W=ops.packed, codebook=ops.codebook, x_table=ops.x_table, bias=ops.bias, thresholds=None,
                row_scale=None, attrs=attrs)
    case["thresholds"] = _thresholds(rng, reference(case), ops.channel_shifts(), -1, 1)
    for rows in (1, 5):
        case["x"] = rng.integers(0, ops.x_table.size, (rows, 3136)).astype(np.uint8)
        expected = reference(case)
        for env in MODES.values():
            assert same_bits(run_case(case, env, threads=2), expected)


def test_required_nibbles_refuse_a_panel_of_more_than_16_weights():
    """Gc = N with a different codebook per row: 16 columns take up to 256 distinct weights, so the layer keeps the
    int16 panels; WQCOMPILE_REQUIRE_NIBBLES names the node and the columns, and without it the output is exact."""
    rng = np.random.default_rng(4)
    ops = random_operands(rng, (20, 40), (1, 40), 40, bits=4, gc=20, kind="level")
    ops.codebook[:] = np.arange(20 * 16, dtype=np.int16).reshape(20, 16) - 160
    attrs = dict(w_bits=4, w_shape=[20, 40], w_shift=ops.w_shift, x_shift=ops.x_shift, x_max=ops.x_max)
    case = dict(x=ops.x, W=ops.packed, codebook=ops.codebook, x_table=ops.x_table, bias=ops.bias, thresholds=None,
                row_scale=None, attrs=attrs)
    with pytest.raises(Exception, match=r"node.*WQCOMPILE_REQUIRE_NIBBLES.*columns 0\.\.15 take more than 16"):
        run_case(case, MODES["nibbles"])
    assert same_bits(run_case(case, MODES["auto"]), reference(case))
