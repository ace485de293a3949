"""SimulationStream and the streamed fp32-target refinement: the same tensors and moments as a session per layer."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.model_factory import _init, make_model
from wqcompile.config import QuantConfig
from wqcompile.context import CompileContext
from wqcompile.graph import export_model, import_graph
from wqcompile.pass_manager import PassManager
from wqcompile.passes import default_pipeline
from wqcompile.passes.calibrate import augmented_session
from wqcompile.passes.refine_codebooks import (RefineCodebooksPass, collect_joint_moments, fp32_session,
                                               fp32_target_moments, refit_layer)
from wqcompile.passes.sequential_calibrate import simulation_model
from wqcompile.passes.simulation_stream import SimulationStream


def residual_net(seed: int = 0) -> onnx.ModelProto:
    """conv-BN-relu → depthwise conv-Clip(0, 6) → 1x1 conv (linear) + relu → relu → 1x1 conv-relu → GAP →
    Reshape to [Shape(input)[0], -1] (int64 tensors computed first, read last) → Gemm: MobileNetV2 in small."""
    rng = np.random.default_rng(seed)
    f = lambda *s: (rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:]))).astype(np.float32)  # noqa: E731
    v = lambda n, lo=-0.1, hi=0.1: rng.uniform(lo, hi, n).astype(np.float32)                     # noqa: E731
    inits = [_init("w1", f(8, 3, 3, 3)), _init("bn_s", v(8, 0.8, 1.2)), _init("bn_b", v(8)), _init("bn_m", v(8)),
             _init("bn_v", v(8, 0.5, 1.5)), _init("w2", f(8, 1, 3, 3)), _init("b2", v(8)), _init("w3", f(8, 8, 1, 1)),
             _init("b3", v(8)), _init("w5", f(16, 8, 1, 1)), _init("b5", v(16)), _init("w6", f(10, 16)),
             _init("b6", v(10)), _init("zero", np.array(0, np.float32)), _init("six", np.array(6, np.float32)),
             _init("i0", np.array(0, np.int64)), _init("ax0", np.array([0], np.int64)),
             _init("minus1", np.array([-1], np.int64))]
    nodes = [
        helper.make_node("Shape", ["input"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "i0"], ["n"], name="batch", axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["n1", "minus1"], ["flat_shape"], name="concat", axis=0),
        helper.make_node("Conv", ["input", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["n1c"], name="bn1"),
        helper.make_node("Relu", ["n1c"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="dw2", pads=[1, 1, 1, 1], group=8),
        helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], name="clip2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="pw3"),
        helper.make_node("Add", ["c3", "r1"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r4"], name="relu4"),
        helper.make_node("Conv", ["r4", "w5", "b5"], ["c5"], name="pw5"),
        helper.make_node("Relu", ["c5"], ["r5"], name="relu5"),
        helper.make_node("GlobalAveragePool", ["r5"], ["gap"], name="gap"),
        helper.make_node("Reshape", ["gap", "flat_shape"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "w6", "b6"], ["logits"], name="fc", transB=1),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 10, 10])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits, opset=13)


def calib(n: int = 70) -> dict[str, np.ndarray]:       # 3 batches of 32, 32, 6
    return {"input": np.random.default_rng(5).standard_normal((n, 3, 10, 10)).astype(np.float32)}


def _fitted(model, data, **config):
    ctx = CompileContext(config=QuantConfig(progress=False, weight_bits=3, act_bits=4, **config), calibration=data,
                         source_model=model)
    graph = PassManager(default_pipeline()).run(import_graph(model), ctx, until="FitActivationsPass").graph
    return ctx, graph


def _per_layer(graph, ctx, layers):
    """The reference: a fresh simulation model and session per layer (the refinement before SimulationStream)."""
    base = export_model(graph, ctx)
    fp = fp32_session(base, ctx)
    acts = {a.output for a in ctx.act_layers.values() if a.output in ctx.activations}
    for name in layers:
        sim = simulation_model(base, ctx, [d for d in ctx.weights if d != name], acts)
        yield name, collect_joint_moments(sim, fp, graph, ctx, [name], ctx.calibration, keep_fp=True)[name]


@pytest.mark.parametrize("granularity", ["tensor", "channel", "channel-scaled"])
def test_streamed_moments_and_refined_codebooks_equal_the_per_layer_simulation(granularity):
    model, data = residual_net(), calib()
    runs = {}
    for how in ("per_layer", "streamed"):
        ctx, graph = _fitted(model, data, weight_granularity=granularity)
        layers = [n.name for n in graph.nodes if n.name in ctx.weights]
        assert len(layers) == 5
        gen = (_per_layer(graph, ctx, layers) if how == "per_layer"
               else fp32_target_moments(graph, ctx, layers, keep_fp=True))
        moments = {}
        for name, jm in gen:
            moments[name] = jm
            ctx.weights[name] = refit_layer(ctx.weights[name], jm, gptq=True)   # later layers see the refit
        runs[how] = ctx, moments
    (ctx_a, ma), (ctx_b, mb) = runs["per_layer"], runs["streamed"]
    assert list(ma) == list(mb)
    for name in ma:
        a, b = ma[name], mb[name]
        assert a.q.count == b.q.count
        for x, y in ((a.q.s, b.q.s), (a.cross, b.cross), (a.fp.s, b.fp.s)):
            scale = np.abs(x).max()
            np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-6 * scale, err_msg=name)
        for ca, cb in zip(ctx_a.weights[name].codebooks, ctx_b.weights[name].codebooks):
            np.testing.assert_array_equal(ca.indices, cb.indices, err_msg=name)
            np.testing.assert_allclose(cb.values, ca.values, rtol=1e-5, atol=1e-7, err_msg=name)
    # the simulation is not trivial: later layers' x_q differ from their x_fp
    assert not np.allclose(mb["pw5"].q.s, mb["pw5"].fp.s, rtol=1e-3)


def test_the_pass_refines_every_layer_through_the_stream():
    ctx, graph = _fitted(residual_net(), calib(), refinement_target="fp32")
    before = {name: [cb.values.copy() for cb in fw.codebooks] for name, fw in ctx.weights.items()}
    RefineCodebooksPass().run(graph, ctx)
    assert ctx.refined_layers == set(ctx.weights)
    assert all(not np.array_equal(before[n][0], ctx.weights[n].codebooks[0].values) for n in ctx.weights)


def _chain(depth: int) -> onnx.ModelProto:
    """``depth`` residual blocks x ← x + relu(conv(x)), then a Relu: a long graph with a frontier of two tensors."""
    rng = np.random.default_rng(2)
    nodes, inits, x = [], [], "input"
    for i in range(depth):
        inits.append(_init(f"w{i}", (rng.standard_normal((4, 4, 3, 3)) * 0.2).astype(np.float32)))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"),
                  helper.make_node("Add", [x, f"r{i}"], [f"x{i}"], name=f"add{i}")]
        x = f"x{i}"
    nodes.append(helper.make_node("Relu", [x], ["y"], name="out"))
    return make_model(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4, 6, 6])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])], inits)


def test_each_node_runs_once_values_match_and_the_cache_stays_at_the_frontier():
    depth = 12
    model = _chain(depth)
    rng = np.random.default_rng(0)
    batches = [{"input": rng.standard_normal((n, 4, 6, 6)).astype(np.float32)} for n in (5, 5, 3)]
    targets = [f"c{i}" for i in range(depth)] + ["x3"]       # conv outputs, and one tensor requested late
    whole = augmented_session(model, targets + ["y"])
    stream = SimulationStream(model, batches, targets)
    for i in range(depth):
        got = stream.advance([f"c{i}"])[f"c{i}"]
        for b, batch in enumerate(batches):
            np.testing.assert_allclose(got[b], whole.run([f"c{i}"], batch)[0], rtol=1e-6, atol=1e-6)
        # kept: c{i} (its Relu still to run), the block input x{i-1} (read by the Add) and the pending x3
        assert set(stream.cache) <= {f"c{i}", "input" if i == 0 else f"x{i - 1}", "x3"}, (i, set(stream.cache))
    x3 = stream.advance(["x3"])["x3"]
    np.testing.assert_allclose(x3[2], whole.run(["x3"], batches[2])[0], rtol=1e-6, atol=1e-6)
    assert stream.cache == {}                     # nothing needed any more: all evicted
    assert stream.nodes_run == 3 * depth - 2      # every node up to c{depth-1} once; relu/add of the last block never
    with pytest.raises(KeyError, match="evicted"):
        stream.advance(["c0"])


def test_replacement_weights_are_read_when_a_node_first_runs():
    model = _chain(3)
    batch = {"input": np.random.default_rng(1).standard_normal((2, 4, 6, 6)).astype(np.float32)}
    swapped = {}
    stream = SimulationStream(model, [batch], ["c0", "c1", "c2"], weights=lambda name: swapped.get(name))
    stream.advance(["c0"])                       # conv0 runs now with the model's w0; a later swap cannot change it
    swapped["w0"] = np.zeros((4, 4, 3, 3), np.float32)
    swapped["w1"] = np.zeros((4, 4, 3, 3), np.float32)
    np.testing.assert_array_equal(stream.advance(["c1"])["c1"][0], 0.0)     # conv1 ran with the zero weights
    # x0 = input + relu(c0) with the original w0: c2's input is x1 = x0 + relu(0) = x0
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    for t in ref.graph.initializer:
        if t.name == "w1":
            t.CopyFrom(onnx.numpy_helper.from_array(swapped["w1"], "w1"))
    np.testing.assert_allclose(stream.advance(["c2"])["c2"][0], augmented_session(ref, ["c2"]).run(["c2"], batch)[0],
                               rtol=1e-6, atol=1e-6)


def test_outer_scope_tensors_of_a_subgraph_are_kept_for_it():
    """An If whose branches read ``a`` (computed before, in another segment) without listing it as an input."""
    branch = lambda op, name: helper.make_graph(                                      # noqa: E731
        [helper.make_node(op, ["a"], [f"{name}_out"])], name, [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Neg", ["x"], ["a"], name="neg"),
             helper.make_node("Abs", ["a"], ["b"], name="abs"),
             helper.make_node("If", ["cond"], ["c"], name="if", then_branch=branch("Relu", "then"),
                              else_branch=branch("Sigmoid", "else")),
             helper.make_node("Add", ["b", "c"], ["y"], name="add")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
                               helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [])
    batches = [{"x": np.array([[-1.0, 2.0, -3.0]], np.float32), "cond": np.array(c)} for c in (True, False)]
    stream = SimulationStream(model, batches, ["b", "y"])
    stream.advance(["b"])
    assert "a" in stream.cache                       # read by the If's branches, which have not run yet
    y = stream.advance(["y"])["y"]
    a = -batches[0]["x"]
    np.testing.assert_allclose(y[0], np.abs(a) + np.maximum(a, 0), rtol=1e-6)
    np.testing.assert_allclose(y[1], np.abs(a) + 1 / (1 + np.exp(-a)), rtol=1e-6)
    assert stream.cache == {}
