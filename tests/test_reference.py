"""ReferenceSession behaves like onnxruntime's session, and the fast standard ops equal onnx's own."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from tests.helpers import run_fp32
from tests.model_factory import make_model, tiny_cnn
from wqcompile.errors import ModelLoadError
from wqcompile.reference import ReferenceSession


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
@pytest.mark.parametrize("kernel,strides,pads", [((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (1, 1), (1, 1, 1, 1)),
                                                 ((3, 2), (2, 1), (0, 1, 2, 0)), ((1, 1), (1, 1), (0, 0, 0, 0))])
def test_fast_maxpool_equals_onnx_reference(dtype, kernel, strides, pads):
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=list(kernel), strides=list(strides), pads=list(pads))
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.UINT8
    model = make_model([node], [helper.make_tensor_value_info("x", elem, [2, 3, 7, 9])],
                       [helper.make_tensor_value_info("y", elem, ["A", "B", "C", "D"])], [])
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 3, 7, 9)) * 50).astype(dtype) if dtype == np.float32 else rng.integers(0, 16, (2, 3, 7, 9), dtype=np.uint8)
    (expected,) = ReferenceEvaluator(model).run(None, {"x": x})
    (got,) = ReferenceSession(model).run(None, {"x": x})
    assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_session_api_matches_onnxruntime_shape():
    model = tiny_cnn()
    x = np.random.default_rng(1).standard_normal((3, 3, 12, 12)).astype(np.float32)
    for source in (model, model.SerializeToString()):
        sess = ReferenceSession(source)
        assert [i.name for i in sess.get_inputs()] == ["input"] and sess.get_inputs()[0].shape == ["N", 3, 12, 12]
        assert [o.name for o in sess.get_outputs()] == ["logits"]
        (got,) = sess.run(None, {"input": x})
        (expected,) = run_fp32(model, {"input": x})
        # plain FP32 model: onnx.reference and onnxruntime differ only in float summation order
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        assert sess.run(["logits"], {"input": x})[0].shape == (3, 10)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="nope.onnx"):
        ReferenceSession(tmp_path / "nope.onnx")
