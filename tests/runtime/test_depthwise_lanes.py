"""Bit-exact parity of the channels-in-lanes depthwise QConv (AVX-512 VBMI ``depthwise_lanes``: 16 channels per
vector, the output edge in registers) and of the per-plane paths the other cases fall back to.

The lanes path takes uint8 level input with a fused level output and one shared thresholds row (Gc = 1, with or
without a row scale); every other depthwise case (float input or output, Gc = M) runs plane by plane. The cases
mix channel counts around the 16-lane blocks (1, 15, 16, 17, 33, 96, 150), small and large planes, strides,
asymmetric pads, dilations, kernel sizes, batches, level tables up to 256 entries with the extreme mantissas,
row scales with 0 and 2^22, and thresholds tables of each index kind (≤ 15 thresholds, log-spaced sets, dense
and random sets).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.cases import random_operands
from tests.runtime.helpers import ISAS, cpu_has, model_of, run_ort
from tests.runtime.test_parity import _check, _reference, _thresholds

pytestmark = [pytest.mark.requires_ops_lib]

ISA_PARAMS = [pytest.param(i, marks=pytest.mark.skipif(not cpu_has(i), reason=f"CPU lacks {i}")) for i in ISAS]
CHANNELS = (1, 15, 16, 17, 33, 96, 150)
KERNELS = ((3, 3), (3, 3), (3, 3), (5, 5), (1, 1), (2, 3), (7, 7), (3, 1))


def _log_thresholds(rng, acc_max: int) -> np.ndarray:
    """A WQ LogQuant-like set (1/16 .. 1/4 octave apart, geometric: the octave-class index) up to ~acc_max."""
    step = int(rng.choice([1, 2, 4])) / 16
    count = int(rng.choice([16, 31, 63, 127, 255]))
    top = np.log2(max(acc_max, 2))
    e0 = max(0.0, top - step * count + float(rng.uniform(-2, 2)))
    t = np.ceil(np.exp2(e0 + step * np.arange(count)))
    t[0] = np.floor(np.exp2(e0)) + 1
    return np.clip(t, 1, 2**30).astype(np.int32)[None, :]


def _linear_thresholds(rng, acc_max: int) -> np.ndarray:
    """A piecewise evenly spaced set of 1..5 runs (the arithmetic index, RunLanes<1|2|3|0>): from 1, or from a
    strict first threshold one above the grid, sometimes cut by the unreachable 2^30 of a folded Clip."""
    count = int(rng.choice([31, 100, 255]))
    runs = int(rng.choice([1, 1, 2, 3, 5]))   # the segmented quantizer's: steps growing by powers of two
    steps = np.ones(count - 1, dtype=np.int64)
    for cut in np.sort(rng.choice(np.arange(1, count - 1), runs - 1, replace=False)):
        steps[cut:] *= int(rng.choice([2, 4]))
    base = max(1, acc_max // int(steps.sum() + 1))
    t = 1 + np.concatenate([[0], np.cumsum(steps * base)])
    if rng.random() < 0.5:
        t[0] = t[1] - base + 1
    if rng.random() < 0.3:
        t[int(rng.integers(3, count)):] = 2**30
    return t.clip(1, 2**30).astype(np.int32)[None, :]


def _mutate_extremes(rng, ops):
    """Sometimes a 256-entry level table with ±32767 mantissas and inputs on its first and last levels."""
    r = rng.random()
    if r < 0.3:
        size = int(rng.choice([2, 16, 65, 256]))
        table = rng.integers(-32767, 32768, size).astype(np.int16)
        table[0] = 0
        table[-1] = int(rng.choice([32767, -32767]))
        x = rng.integers(0, size, ops.x.shape).astype(np.uint8)
        x[rng.random(x.shape) < 0.3] = size - 1
        # the accumulator bound: shrink the codebook to fit the larger max |X|
        fan_in = int(np.prod(ops.idx.shape[1:]))
        bias_max = int(np.abs(ops.bias.astype(np.int64)).max()) if ops.bias is not None else 0
        cmax = max(1, (2**30 - 1 - bias_max) // (32767 * fan_in))
        ops.codebook = np.clip(ops.codebook, -cmax, cmax).astype(np.int16)
        ops.x_table, ops.x = table, x


def lanes_case(seed: int) -> dict:
    rng = np.random.default_rng(7000 + seed)
    c = CHANNELS[seed % len(CHANNELS)]
    kh, kw = KERNELS[seed % len(KERNELS)]
    strides = [[1, 1], [2, 2], [1, 1], [2, 2], [1, 2], [3, 1]][seed % 6]
    dilations = [[1, 1], [1, 1], [1, 1], [2, 2], [2, 1], [1, 3]][(seed // 3) % 6]
    small = rng.random() < 0.75
    h, w = (int(v) for v in (rng.integers(1, 15, 2) if small else rng.integers(15, 60, 2)))
    pads = [int(v) for v in rng.integers(0, 3, 4)]
    eh, ew = (kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1
    h, w = max(h, eh - pads[0] - pads[2]), max(w, ew - pads[1] - pads[3])
    n = int(rng.choice([1, 1, 2, 3]))
    gc = 1 if seed % 7 else c
    ops = random_operands(rng, (c, 1, kh, kw), (n, c, h, w), kh * kw, bits=1 + seed % 8, gc=gc,
                          kind="float" if seed % 11 == 5 else "level")
    if ops.x_table is not None:
        _mutate_extremes(rng, ops)
    row_scale = None
    if gc == 1 and rng.random() < 0.6:
        row_scale = rng.integers(0, 2**22 + 1, c)
        special = rng.random(c)
        row_scale[special < 0.2] = 2**22
        row_scale[(special >= 0.2) & (special < 0.3)] = 0
        row_scale[(special >= 0.3) & (special < 0.4)] = rng.integers(1, 8, int(np.sum((special >= 0.3) & (special < 0.4))))
        row_scale = row_scale.astype(np.int32)
    attrs = dict(w_bits=ops.w_bits, w_shape=[c, 1, kh, kw], w_shift=ops.w_shift, x_shift=ops.x_shift, x_max=ops.x_max,
                 group=c, strides=strides, pads=pads, dilations=dilations)
    case = dict(op="QConv", x=ops.x, W=ops.packed, codebook=ops.codebook, x_table=ops.x_table, bias=ops.bias,
                thresholds=None, row_scale=row_scale, attrs=attrs)
    if seed % 13 != 6:   # mostly fused level outputs (the lanes path)
        y = _reference(case)
        assert not isinstance(y, Exception), y
        acc = np.abs(np.ldexp(y.astype(np.float64), int(ops.x_shift + ops.w_shift[0])))
        acc_max = int(min(np.nanmax(acc), 2**30)) if acc.size else 2
        if seed % 4 == 1 and gc == 1:
            case["thresholds"] = _log_thresholds(rng, acc_max)
        elif seed % 4 == 3 and gc == 1:
            case["thresholds"] = _linear_thresholds(rng, acc_max)
        else:
            case["thresholds"] = _thresholds(rng, y, ops.channel_shifts(), 1, gc)
    return case


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("seed", range(64))
def test_depthwise_lanes_random(isa, seed, monkeypatch):
    case = lanes_case(seed)
    t = case["thresholds"]
    if t is not None and seed % 4 == 3 and t.shape[0] == 1 and t.shape[1] > 15:
        # a piecewise evenly spaced set: the arithmetic index (RunLanes), never a lookup
        monkeypatch.setenv("WQCOMPILE_REQUIRE_THRESHOLD_INDEX", "arithmetic")
    _check(case, isa, as_inputs=seed % 10 == 3, threads=1 + seed % 2)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("c,hw,stride", [(960, (7, 7), 1), (576, (14, 14), 2), (144, (56, 56), 1),
                                         (96, (112, 112), 2), (40, (1, 1), 1), (17, (3, 40), 2)])
def test_depthwise_lanes_mobilenet_shapes(isa, c, hw, stride):
    """The MobileNetV2 layers' shapes (3x3, pads 1, levels in and out, one thresholds row), batch 2, row scaled."""
    rng = np.random.default_rng(c * 1000 + hw[0])
    ops = random_operands(rng, (c, 1, 3, 3), (2, c, *hw), 9, bits=4, gc=1, kind="level")
    attrs = dict(w_bits=4, w_shape=[c, 1, 3, 3], w_shift=ops.w_shift, x_shift=ops.x_shift, x_max=ops.x_max,
                 group=c, strides=[stride, stride], pads=[1, 1, 1, 1])
    row_scale = rng.integers(0, 2**22 + 1, c).astype(np.int32)
    row_scale[::7] = 2**22
    row_scale[3::11] = 0
    for rs in (None, row_scale):
        case = dict(op="QConv", x=ops.x, W=ops.packed, codebook=ops.codebook, x_table=ops.x_table, bias=ops.bias,
                    thresholds=None, row_scale=rs, attrs=attrs)
        y = _reference(case)
        for _ in range(2):
            case["thresholds"] = _thresholds(rng, y, ops.channel_shifts(), 1, 1)
            _check(case, isa, threads=2)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_depthwise_lanes_level_past_the_table(isa):
    """A level past the table in the last channel of a partial block is an error, as on the per-plane path."""
    rng = np.random.default_rng(3)
    c = 19
    ops = random_operands(rng, (c, 1, 3, 3), (1, c, 5, 5), 9, bits=3, gc=1, kind="level")
    x = ops.x.copy()
    x[0, c - 1, 4, 4] = len(ops.x_table)
    attrs = dict(w_bits=3, w_shape=[c, 1, 3, 3], w_shift=ops.w_shift, x_shift=ops.x_shift, x_max=ops.x_max,
                 group=c, pads=[1, 1, 1, 1])
    thresholds = np.array([[1, 10, 100]], dtype=np.int32)
    model = model_of("QConv", [("X", x), ("W", ops.packed), ("codebook", ops.codebook), ("x_table", ops.x_table),
                               ("bias", ops.bias), ("thresholds", thresholds)], attrs, np.uint8)
    with pytest.raises(Exception, match="out of range"):
        run_ort(model, {"X": x}, isa)
