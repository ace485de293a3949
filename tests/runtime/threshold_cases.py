"""The shared check of the threshold tests: one output per bias, each probing its own row of thresholds.

Every output is ``acc = x + bias`` (weight mantissa 1, one input channel), so choosing the biases chooses which
accumulator values the fused quantizer sees; the level must be ``#{j : T_j <= acc}`` in the numpy reference and in
the C++ kernel (QGemm, a 1x1 QConv, or a depthwise 1x1 QConv over n copies of the input).
"""

from __future__ import annotations

import numpy as np

from tests.ops.oracles import pack_naive
from tests.runtime.helpers import model_of, run_ort
from wqcompile.runtime_ops.qconv import qconv_reference
from wqcompile.runtime_ops.qgemm import qgemm_reference

BIAS_MAX = 2**30 - 32768          # |bias| + 32767 stays within the 2^30 - 1 accumulator bound
DELTAS = np.array([-32767, -4097, -2, -1, 0, 1, 2, 31, 4097, 32767], dtype=np.float32)


def probe_biases(rng, rows: np.ndarray, probes) -> tuple[np.ndarray, np.ndarray]:
    """One output per value of ``probes(rng, t)`` for each thresholds row ``t``: the int32 biases (clipped to
    ±BIAS_MAX, so they stand for accumulators) and the thresholds row of each."""
    values = [np.asarray(probes(rng, t), dtype=np.int64) for t in rows]
    row_of = np.concatenate([np.full(v.size, g) for g, v in enumerate(values)])
    return np.clip(np.concatenate(values), -BIAS_MAX, BIAS_MAX).astype(np.int32), row_of


def check_levels(rng, thresholds: np.ndarray, bias: np.ndarray, op: str, isa: str, threads: int):
    """Runs the case on the reference and on ``isa``; returns ``(acc, want)`` (axis 1 = output) for extra checks."""
    n = bias.size
    codebook = np.ones((n, 2), dtype=np.int16)
    packed = pack_naive(np.zeros(n, dtype=np.int64), 1)
    xs = np.concatenate([DELTAS, rng.integers(-32767, 32768, 22).astype(np.float32)])
    common = dict(w_bits=1, w_shift=[0] * n, x_shift=0, x_max=32767)
    if op == "QGemm":
        x = xs.reshape(-1, 1)
        attrs = dict(common, w_shape=[n, 1])
        ref = qgemm_reference(x, packed, codebook, None, bias, thresholds, **attrs)
        acc = x.astype(np.int64) + bias.astype(np.int64)[None, :]                 # [B, N]
        want = (thresholds[None, :, :] <= acc[..., None]).sum(-1)
    else:
        x = xs.reshape(1, 1, 4, -1)
        group = n if op == "depthwise" else 1
        if op == "depthwise":
            x = np.repeat(x, n, axis=1)
        attrs = dict(common, w_shape=[n, 1, 1, 1], group=group, strides=[1, 1], pads=[0, 0, 0, 0],
                     dilations=[1, 1], auto_pad="NOTSET")
        ref = qconv_reference(x, packed, codebook, None, bias, thresholds, **attrs)
        acc = x[:, :1].astype(np.int64) + bias.astype(np.int64)[None, :, None, None]    # [1, N, 4, W]
        want = (thresholds[None, :, None, None, :] <= acc[..., None]).sum(-1)
    assert np.array_equal(ref, want.astype(np.uint8))
    model = model_of("QGemm" if op == "QGemm" else "QConv", [("X", x), ("W", packed), ("codebook", codebook),
                     ("x_table", None), ("bias", bias), ("thresholds", thresholds)], attrs, np.uint8)
    got = run_ort(model, {"X": x}, isa, threads=threads)
    assert got.dtype == np.uint8 and np.array_equal(got, ref), f"{int((got != ref).sum())} levels differ"
    return acc, want
