"""LevelMaxPool on every instruction-set path against onnxruntime's own uint8 MaxPool, on planes wide enough to
exercise the vector loops (whole vectors, masked tails, the 2x2 stride-2 fast path) and the padded edges."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.runtime.helpers import ISAS, cpu_has, forced_isa, same_bits

pytestmark = pytest.mark.requires_ops_lib

ISA_PARAMS = [pytest.param(i, marks=pytest.mark.skipif(not cpu_has(i), reason=f"CPU lacks {i}")) for i in ISAS]
POOLS = [dict(kernel_shape=[2, 2], strides=[2, 2]),
         dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
         dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1]),
         dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]),
         dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
         dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
         dict(kernel_shape=[2, 3], strides=[1, 2], dilations=[1, 2]),
         dict(kernel_shape=[3, 2], strides=[3, 3])]
SHAPES = [(1, 2, 28, 28), (2, 3, 9, 131), (1, 1, 6, 64), (1, 2, 5, 67), (1, 1, 4, 2)]


def _fits(attrs, shape):
    k, s, d = attrs["kernel_shape"], attrs["strides"], attrs.get("dilations", [1, 1])
    pads = attrs.get("pads", [0, 0, 0, 0])
    return all(shape[2 + i] + pads[i] + pads[i + 2] >= (k[i] - 1) * d[i] + 1 for i in range(2))


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("attrs", POOLS, ids=[str(i) for i in range(len(POOLS))])
def test_level_maxpool_every_isa(isa, attrs):
    import onnxruntime as ort

    from wqcompile import runtime

    rng = np.random.default_rng(len(str(attrs)))
    for shape in SHAPES:
        if not _fits(attrs, shape):
            continue
        x = rng.integers(0, 256, shape).astype(np.uint8)
        node = helper.make_node("MaxPool", ["X"], ["Y"], **attrs)
        graph = helper.make_graph([node], "p", [helper.make_tensor_value_info("X", 2, list(x.shape))],
                                  [helper.make_tensor_value_info("Y", 2, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        expected = ort.InferenceSession(model.SerializeToString(),
                                        providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
        rewritten, changed = runtime.with_level_maxpool(model)
        assert changed == 1
        with forced_isa(isa):
            got = runtime.InferenceSession(rewritten).run(None, {"X": x})[0]
        assert same_bits(got, expected), (shape, attrs)
