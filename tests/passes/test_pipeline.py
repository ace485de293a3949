"""The default pipeline on small CNNs: op types, the checker, numeric closeness, and the pass API."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.helpers import compile_and_compare, op_counts
from tests.model_factory import calib_data, tiny_cnn
from wqcompile.config import QuantConfig
from wqcompile.context import CompileContext
from wqcompile.errors import PassError, PostconditionError, PreconditionError
from wqcompile.graph import check_graph, import_graph
from wqcompile.pass_manager import Pass, PassManager, PassResult
from wqcompile.passes import FitWeightsPass, RewritePass, default_pipeline
from wqcompile.runtime_ops import DOMAIN


def test_default_pipeline_rewrites_every_layer():
    result, (sqnr,) = compile_and_compare(tiny_cnn(), calib_data(), weight_bits=8, act_bits=8)
    counts = op_counts(result.model)
    assert counts["QConv"] == 2 and counts["QGemm"] == 2
    assert counts["Relu"] == 0 and counts["Conv"] == 0 and counts["Gemm"] == 0
    # every Relu was fused into its producer, so no standalone quantizer or decode is needed
    assert counts["QRelu"] == 0 and counts["QDecode"] == 0
    check_graph(result.model)
    # MaxPool and Flatten run on uint8 level indices
    types = {vi.name: vi.type.tensor_type.elem_type for vi in onnx.shape_inference.infer_shapes(result.model).graph.value_info}
    pool = next(n for n in result.model.graph.node if n.op_type == "MaxPool")
    assert pool.input[0].endswith(".levels")
    # 8-bit WQ codebooks keep ~31 dB weight SQNR on Gaussian weights (measured); four layers stay above 20 dB
    assert sqnr > 20, sqnr


def test_relu6_clip_is_folded_into_thresholds():
    result, (sqnr,) = compile_and_compare(tiny_cnn(clip=True), calib_data(), weight_bits=8, act_bits=8)
    assert op_counts(result.model)["Clip"] == 0
    assert sqnr > 20, sqnr
    levels = result.context.activations["r2"]
    assert result.context.act_layers["clip2"].clip_max == 6.0
    assert levels.values[-1] > 0


@pytest.mark.parametrize("wbits,abits", [(8, None), (None, 8), (4, 4), (2, 3), (1, 2)])
def test_bit_configurations_run(wbits, abits):
    result, (sqnr,) = compile_and_compare(tiny_cnn(), calib_data(), weight_bits=wbits, act_bits=abits)
    counts = op_counts(result.model)
    if wbits is None:
        assert counts["QConv"] == 0 and counts["Conv"] == 2 and counts["QRelu"] == 3
    if abits is None:
        assert counts["QRelu"] == 0 and counts["Relu"] == 3
    assert np.isfinite(sqnr) or sqnr == float("inf")


def test_more_bits_is_closer_to_fp32():
    sq = {b: compile_and_compare(tiny_cnn(), calib_data(), weight_bits=b, act_bits=b)[1][0] for b in (2, 4, 8)}
    assert sq[2] < sq[4] < sq[8], sq


def _ctx(**config):
    return CompileContext(config=QuantConfig(progress=False, **config), calibration=calib_data(), source_model=tiny_cnn())


def test_run_until_a_pass_and_inspect_the_context():
    ctx = _ctx(weight_bits=3)
    PassManager(default_pipeline()).run(import_graph(tiny_cnn()), ctx, until="FitWeightsPass")
    assert set(ctx.weights) == {"conv1", "conv2", "fc1", "fc2"}
    cb = ctx.weights["conv1"].codebooks[0]
    assert len(cb.values) == 8 and cb.method
    assert "RewritePass" not in ctx.passes_run


def test_disable_and_add_passes():
    seen = []

    class CountNodes(Pass):
        kind = "analysis"

        def run(self, graph, ctx):
            seen.append(len(graph.nodes))
            return PassResult(graph, False)

    passes = default_pipeline()
    passes.insert(passes.index(next(p for p in passes if isinstance(p, RewritePass))) + 1, CountNodes())
    ctx = _ctx()
    PassManager(passes, disabled={"VerifyPass"}).run(import_graph(tiny_cnn()), ctx)
    assert seen and "VerifyPass" not in ctx.passes_run and ctx.passes_run[-1] == "CountNodes"
    with pytest.raises(PassError, match="unknown pass"):
        PassManager(default_pipeline(), disabled={"NoSuchPass"})


def test_preconditions_name_the_missing_analysis():
    with pytest.raises(PreconditionError, match="SelectLayersPass"):
        PassManager([RewritePass()]).run(import_graph(tiny_cnn()), _ctx())
    partial = default_pipeline()[:4] + [RewritePass()]          # calibrated but never fitted
    with pytest.raises(PreconditionError, match="FitWeightsPass"):
        PassManager(partial).run(import_graph(tiny_cnn()), _ctx())
    with pytest.raises(PreconditionError, match="SelectLayersPass"):
        PassManager([FitWeightsPass()]).run(import_graph(tiny_cnn()), _ctx())


def test_analysis_pass_that_edits_the_graph_is_caught():
    class Sneaky(Pass):
        kind = "analysis"

        def run(self, graph, ctx):
            graph.nodes.pop()
            return PassResult(graph, False)

    with pytest.raises(PostconditionError, match="Sneaky"):
        PassManager([Sneaky()]).run(import_graph(tiny_cnn()), _ctx())


def test_a_failing_pass_names_the_passes_already_run():
    class Broken(Pass):
        kind = "transform"

        def run(self, graph, ctx):
            raise RuntimeError("boom")

    passes = default_pipeline()[:2] + [Broken()]
    with pytest.raises(PassError, match=r"'Broken' pass after the following passes: \['CanonicalizePass', 'FoldBatchNormPass'\]"):
        PassManager(passes).run(import_graph(tiny_cnn()), _ctx())


def test_check_each_and_dump_dir(tmp_path):
    ctx = _ctx()
    PassManager(default_pipeline(), check_each=True, dump_dir=tmp_path).run(import_graph(tiny_cnn()), ctx)
    dumps = sorted(p.name for p in tmp_path.iterdir())
    assert dumps[0].startswith("00_CanonicalizePass") and any("RewritePass" in d for d in dumps)
    rewritten = onnx.load(str(next(tmp_path.glob("*_RewritePass.onnx"))))
    assert any(n.domain == DOMAIN for n in rewritten.graph.node)
