"""SequentialCalibratePass: activation quantizers refit on the partially quantized model, layer by layer."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tests.helpers import compile_and_compare, op_counts
from tests.model_factory import calib_data, tiny_cnn
from wqcompile.config import QuantConfig
from wqcompile.graph import check_graph
from wqcompile.passes.sequential_calibrate import fake_quant_nodes
from wqcompile.quant import ActQuantizer


@pytest.mark.parametrize("quantizer", [ActQuantizer.log(-15, 6, 8), ActQuantizer.log(-40, 4, 16), ActQuantizer.log(3, 2, 5),
                                       ActQuantizer.zero(4)])
def test_fake_quant_nodes_match_the_quantizer(quantizer):
    nodes, inits = fake_quant_nodes("x", "y", quantizer, "fq")
    graph = helper.make_graph(nodes, "fq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    x = np.concatenate([np.random.default_rng(0).lognormal(0, 2, 2000), [0.0, -1.0, 1e9]]).astype(np.float32)
    x = x[~np.isin(x, np.float32(quantizer.thresholds[0]))]      # exact ties on the strict first threshold differ
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = quantizer(x.astype(np.float32)).astype(np.float32)
    # thresholds are compared in float32 here and in float64 by ActQuantizer: allow values that sit between the two
    thr32 = np.asarray(quantizer.thresholds, np.float32)
    near = np.isin(x, thr32)
    np.testing.assert_array_equal(got[~near], want[~near])


def test_sequential_mode_fits_the_first_layer_as_the_normal_mode_and_more_with_fp_weights():
    normal, _ = compile_and_compare(tiny_cnn(), calib_data(), weight_bits=None, act_bits=4)
    seq, _ = compile_and_compare(tiny_cnn(), calib_data(), weight_bits=None, act_bits=4, sequential_calibration=True)
    a, b = normal.context.activations["r1"], seq.context.activations["r1"]
    assert (a.fsr, a.step) == (b.fsr, b.step)
    np.testing.assert_array_equal(normal.context.stats["r1"].counts, seq.context.stats["r1"].counts)
    # a later layer sees the quantized first activation, so its histogram changes
    assert not np.array_equal(normal.context.stats["r3"].counts, seq.context.stats["r3"].counts)


@pytest.mark.parametrize("refine", [False, True])
def test_pipeline_with_sequential_calibration_passes_the_checker(refine):
    result, (sqnr,) = compile_and_compare(tiny_cnn(clip=True), calib_data(), weight_bits=4, act_bits=4,
                                          sequential_calibration=True, codebook_refinement=refine)
    counts = op_counts(result.model)
    assert counts["QConv"] == 2 and counts["QGemm"] == 2 and counts["Relu"] == 0 and counts["Clip"] == 0
    check_graph(result.model)
    assert (result.context.refined_layers == set(result.context.weight_layers)) == refine
    assert sqnr > 5, sqnr     # 4-bit weights and activations on a random tiny CNN: ~10 dB measured either way
