"""Every layer form the rewrite handles, checked against onnxruntime's FP32 result; and what it leaves alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.helpers import compile_and_compare, op_counts, run_fp32, sqnr_db
from tests.model_factory import _init, make_model
from wqcompile.api import compile_model
from wqcompile.config import LayerOverride, QuantConfig
from wqcompile.errors import ConfigError
from wqcompile.graph import check_graph
from wqcompile.reference import ReferenceSession

RNG = np.random.default_rng(20261122)
# k-means 8-bit codebooks reach ~42 dB weight SQNR on Gaussian weights (measured); one layer's output tracks that.
# A wrong attribute (pads, strides, dilation, group, transposition) drops the SQNR to ~0 dB, so 30 dB separates them.
ATTRIBUTE_SQNR_DB = 30.0


def conv_model(c_in=4, c_out=6, k=(3, 3), hw=(9, 10), relu=True, bias=True, **attrs):
    group = attrs.get("group", 1)
    w = RNG.standard_normal((c_out, c_in // group, *k)).astype(np.float32)
    inits = [_init("w", w)] + ([_init("b", RNG.standard_normal(c_out).astype(np.float32))] if bias else [])
    nodes = [helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["c"], name="conv", **attrs)]
    out = "c"
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"], name="relu"))
        out = "y"
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c_in, *hw])],
                      [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", "C", "H", "W"])], inits)


@pytest.mark.parametrize("attrs", [
    dict(pads=[1, 1, 1, 1]),
    dict(pads=[0, 2, 1, 0], strides=[2, 1]),
    dict(dilations=[2, 2], pads=[2, 2, 2, 2]),
    dict(group=2, pads=[1, 1, 1, 1]),
    dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(auto_pad="SAME_LOWER"),
    dict(auto_pad="VALID"),
])
def test_conv_attributes(attrs):
    model = conv_model(**attrs)
    calib = {"x": RNG.standard_normal((16, 4, 9, 10)).astype(np.float32)}
    result, (sqnr,) = compile_and_compare(model, calib, weight_bits=8, act_bits=8, weight_quantizer="kmeans")
    assert op_counts(result.model)["QConv"] == 1
    assert sqnr > ATTRIBUTE_SQNR_DB, (attrs, sqnr)


def test_depthwise_and_pointwise_without_bias():
    model = conv_model(c_in=8, c_out=8, group=8, pads=[1, 1, 1, 1], bias=False)
    calib = {"x": RNG.standard_normal((16, 8, 9, 10)).astype(np.float32)}
    _, (sqnr,) = compile_and_compare(model, calib, weight_bits=8, act_bits=8, weight_quantizer="kmeans")
    assert sqnr > ATTRIBUTE_SQNR_DB
    model = conv_model(c_in=8, c_out=5, k=(1, 1), relu=False)
    _, (sqnr,) = compile_and_compare(model, calib, weight_bits=8, act_bits=8, weight_quantizer="kmeans")
    assert sqnr > ATTRIBUTE_SQNR_DB


def gemm_model(trans_a=0, trans_b=0, alpha=1.0, beta=1.0, c_shape=(7,), m=5, k=12, n=7):
    b = RNG.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    inits = [_init("B", b)]
    inputs = ["a", "B"]
    if c_shape is not None:
        inits.append(_init("C", RNG.standard_normal(c_shape).astype(np.float32)))
        inputs.append("C")
    node = helper.make_node("Gemm", inputs, ["y"], name="gemm", transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    a_shape = [k, "N"] if trans_a else ["N", k]
    return make_model([node], [helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", "N"])], inits)


@pytest.mark.parametrize("kw", [
    dict(), dict(trans_b=1), dict(alpha=0.5, beta=2.0), dict(c_shape=(1, 7)), dict(c_shape=()), dict(c_shape=None),
])
def test_gemm_forms(kw):
    model = gemm_model(**kw)
    calib = {"a": RNG.standard_normal((32, 12)).astype(np.float32)}
    result, (sqnr,) = compile_and_compare(model, calib, weight_bits=8, act_bits=8, weight_quantizer="kmeans")
    assert op_counts(result.model)["QGemm"] == 1
    assert sqnr > ATTRIBUTE_SQNR_DB, (kw, sqnr)


def test_gemm_trans_a_inserts_a_transpose():
    model = gemm_model(trans_a=1)
    calib = {"a": RNG.standard_normal((12, 32)).astype(np.float32)}
    result, (sqnr,) = compile_and_compare(model, calib, calib, weight_bits=8, act_bits=8, weight_quantizer="kmeans")
    assert op_counts(result.model)["Transpose"] == 1
    assert sqnr > ATTRIBUTE_SQNR_DB


def test_gemm_with_a_full_matrix_c_is_left_alone():
    model = gemm_model(c_shape=(5, 7))
    calib = {"a": RNG.standard_normal((5, 12)).astype(np.float32)}
    result = compile_model(model, calib, QuantConfig(progress=False))
    assert op_counts(result.model)["Gemm"] == 1
    assert "not a per-output bias" in result.context.skipped["gemm"]


def test_matmul_with_nd_input_and_constant_weight():
    w = RNG.standard_normal((12, 9)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"), helper.make_node("Relu", ["m"], ["y"], name="r")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 9])], [_init("w", w)])
    calib = {"x": RNG.standard_normal((16, 3, 12)).astype(np.float32)}
    result, (sqnr,) = compile_and_compare(model, calib, weight_bits=8, act_bits=8, weight_quantizer="kmeans")
    assert op_counts(result.model)["QGemm"] == 1 and op_counts(result.model)["QDecode"] == 1
    assert sqnr > 25  # 8-bit log activations on the output add ~2 dB of loss over the weights alone


def residual_model():
    """conv → relu → (conv2 → relu2) + relu → sigmoid: a relu output feeds ours and an Add; graph output is a relu."""
    w1 = RNG.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    w2 = RNG.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Add", ["r2", "r1"], ["s"], name="add"),
        helper.make_node("Sigmoid", ["s"], ["y"], name="sigmoid"),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8]),
                       helper.make_tensor_value_info("r2", TensorProto.FLOAT, ["N", 4, 8, 8])],
                      [_init("w1", w1), _init("w2", w2)])


def test_decode_before_foreign_consumers_and_graph_outputs():
    model = residual_model()
    calib = {"x": RNG.standard_normal((16, 4, 8, 8)).astype(np.float32)}
    result, sqnrs = compile_and_compare(model, calib, weight_bits=8, act_bits=8)
    counts = op_counts(result.model)
    assert counts["QConv"] == 2 and counts["Add"] == 1 and counts["Sigmoid"] == 1
    assert counts["QDecode"] == 2           # r1 for the Add, r2 for the Add and the graph output
    assert [o.name for o in result.model.graph.output] == ["y", "r2"]
    conv2 = next(n for n in result.model.graph.node if n.name == "conv2")
    assert conv2.input[0] == "r1.levels"    # conv2 reads levels, not the decoded float
    assert min(sqnrs) > 20, sqnrs


def test_exclusions_by_name_op_type_and_regex():
    from tests.model_factory import calib_data, tiny_cnn

    for pattern, kept in [("conv1", {"conv1"}), ("Gemm", {"fc1", "fc2"}), (r"fc\d", {"fc1", "fc2"}), ("relu.*", set())]:
        result = compile_model(tiny_cnn(), calib_data(), QuantConfig(progress=False, exclude=(pattern,)))
        assert {n for n in result.context.skipped if result.context.skipped[n].startswith("excluded")} >= kept
        names = {n.name: n.op_type for n in result.model.graph.node}
        for k in kept:
            assert names[k] in ("Conv", "Gemm")
        if pattern == "relu.*":
            assert op_counts(result.model)["Relu"] == 3
        check_graph(result.model)


def test_per_layer_bit_overrides():
    from tests.model_factory import calib_data, tiny_cnn

    cfg = QuantConfig(progress=False, weight_bits=4, act_bits=4,
                      overrides=(LayerOverride.parse("conv1=wbits:8"), LayerOverride.parse("Gemm=wbits:2"),
                                 LayerOverride.parse("relu3=abits:f")))
    result = compile_model(tiny_cnn(), calib_data(), cfg)
    bits = {n.name: {a.name: a.i for a in n.attribute if a.name == "w_bits"} for n in result.model.graph.node}
    assert bits["conv1"]["w_bits"] == 8 and bits["conv2"]["w_bits"] == 4
    assert bits["fc1"]["w_bits"] == 2 and bits["fc2"]["w_bits"] == 2
    assert "relu3" in result.context.skipped and op_counts(result.model)["Relu"] == 1


def test_unsupported_ops_stay_and_the_model_still_runs():
    w = RNG.standard_normal((4, 4, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("AveragePool", ["r"], ["p"], name="avg", kernel_shape=[2, 2]),
        helper.make_node("Conv", ["p", "w"], ["c2"], name="conv_dyn_weight_free"),
        helper.make_node("Softmax", ["c2"], ["y"], name="softmax", axis=1),
    ]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 2, 2])], [_init("w", w)])
    calib = {"x": RNG.standard_normal((8, 4, 8, 8)).astype(np.float32)}
    result, (sqnr,) = compile_and_compare(model, calib, weight_bits=8, act_bits=8)
    counts = op_counts(result.model)
    assert counts["AveragePool"] == 1 and counts["Softmax"] == 1 and counts["QDecode"] == 1
    assert sqnr > 20


def test_batchnorm_is_folded_exactly():
    from wqcompile.graph import export_model, import_graph
    from wqcompile.context import CompileContext
    from wqcompile.pass_manager import PassManager
    from wqcompile.passes import CanonicalizePass, FoldBatchNormPass

    c = 6
    w = RNG.standard_normal((c, 3, 3, 3)).astype(np.float32)
    inits = [_init("w", w), _init("b", RNG.standard_normal(c).astype(np.float32)),
             _init("g", RNG.uniform(0.5, 2, c).astype(np.float32)), _init("beta", RNG.standard_normal(c).astype(np.float32)),
             _init("mu", RNG.standard_normal(c).astype(np.float32)), _init("var", RNG.uniform(0.5, 2, c).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "mu", "var"], ["bn"], name="bn", epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["y"], name="relu")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", "N"])], inits)
    ctx = CompileContext(config=QuantConfig(progress=False), source_model=model)
    result = PassManager([CanonicalizePass(), FoldBatchNormPass()]).run(import_graph(model), ctx)
    folded = export_model(result.graph, ctx)
    assert op_counts(folded)["BatchNormalization"] == 0
    feeds = {"x": RNG.standard_normal((4, 3, 8, 8)).astype(np.float32)}
    (ref,), (got,) = run_fp32(model, feeds), run_fp32(folded, feeds)
    # folding reassociates (x·W)·s into x·(W·s): float32 rounding only, ~1e-7 relative
    assert sqnr_db(ref, got) > 100


@pytest.mark.parametrize("group,depthwise", [(8, True), (2, False), (1, False)])
def test_depthwise_selector_matches_only_depthwise_convs(group, depthwise):
    model = conv_model(c_in=8, c_out=8, group=group, pads=[1, 1, 1, 1])
    calib = {"x": RNG.standard_normal((8, 8, 9, 10)).astype(np.float32)}
    cfg = QuantConfig(progress=False, weight_bits=4, act_bits=4, weight_quantizer="kmeans",
                      overrides=(LayerOverride.parse("@depthwise=wbits:8"),), exclude=("@depthwise",) if group == 2 else ())
    result = compile_model(model, calib, cfg)
    bits = {a.name: a.i for n in result.model.graph.node for a in n.attribute if a.name == "w_bits"}
    assert bits == {"w_bits": 8 if depthwise else 4}


def _expand_depthwise_project():
    """1x1 expansion -> ReLU6 -> 3x3 depthwise -> ReLU6 -> 1x1 projection (a MobileNetV2 block without its skip)."""
    c = 8
    inits = [_init("we", RNG.standard_normal((c, 4, 1, 1)).astype(np.float32)),
             _init("wd", RNG.standard_normal((c, 1, 3, 3)).astype(np.float32)),
             _init("wp", RNG.standard_normal((4, c, 1, 1)).astype(np.float32)),
             _init("lo", np.float32(0)), _init("hi", np.float32(6))]
    nodes = [helper.make_node("Conv", ["x", "we"], ["e"], name="expand"),
             helper.make_node("Clip", ["e", "lo", "hi"], ["e6"], name="expand_relu6"),
             helper.make_node("Conv", ["e6", "wd"], ["d"], name="dw", group=c, pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["d", "lo", "hi"], ["d6"], name="dw_relu6"),
             helper.make_node("Conv", ["d6", "wp"], ["y"], name="project")]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 9, 10])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 9, 10])], inits)


def test_depthwise_input_selector_matches_only_activations_read_by_depthwise_convs():
    calib = {"x": RNG.standard_normal((8, 4, 9, 10)).astype(np.float32)}
    cfg = QuantConfig(progress=False, weight_bits=4, act_bits=4, weight_quantizer="kmeans",
                      overrides=(LayerOverride.parse("@depthwise-input=abits:8"),))
    result = compile_model(_expand_depthwise_project(), calib, cfg)
    assert {n: a.bits for n, a in result.context.act_layers.items()} == {"expand_relu6": 8, "dw_relu6": 4}
    cfg = QuantConfig(progress=False, weight_bits=4, act_bits=4, weight_quantizer="kmeans",
                      exclude=("@depthwise-input",))
    result = compile_model(_expand_depthwise_project(), calib, cfg)
    assert set(result.context.act_layers) == {"dw_relu6"}
    assert "excluded" in result.context.skipped["expand_relu6"]


@pytest.mark.parametrize("group", [8, 1])
def test_granularity_override_makes_only_the_matched_layers_channel_scaled(group):
    model = conv_model(c_in=8, c_out=8, group=group, pads=[1, 1, 1, 1])
    calib = {"x": RNG.standard_normal((8, 8, 9, 10)).astype(np.float32)}
    cfg = QuantConfig(progress=False, weight_bits=4, act_bits=4,
                      overrides=(LayerOverride.parse("@depthwise=granularity:channel-scaled"),))
    result = compile_model(model, calib, cfg)
    (conv,) = [n for n in result.model.graph.node if n.op_type == "QConv"]
    assert (len(conv.input) >= 7 and conv.input[6] != "") == (group == 8)
    assert result.context.weight_layers[conv.name].granularity == ("channel-scaled" if group == 8 else "tensor")
    assert (result.context.weights[conv.name].row_scale is not None) == (group == 8)


def test_granularity_override_is_validated():
    with pytest.raises(ConfigError, match="granularity must be one of tensor, channel, channel-scaled"):
        LayerOverride.parse("@depthwise=granularity:rows")
    assert LayerOverride.parse("conv1=wbits:8,granularity:channel").granularity == "channel"
