"""RefineCodebooksPass: least-squares codebook values for a fixed assignment, and the channel-scaled codebooks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.helpers import compile_and_compare, op_counts
from tests.model_factory import calib_data, tiny_cnn
from wqcompile.config import QuantConfig
from wqcompile.context import CompileContext
from wqcompile.graph import check_graph, export_model, import_graph
from wqcompile.pass_manager import PassManager
from wqcompile.passes import default_pipeline
from wqcompile.passes.correct_bias import dequantized_weights
from wqcompile.passes.refine_codebooks import collect_moments, output_error, refine_layer, symmetry_map
from wqcompile.passes.scale_codebooks import scaled_codebook
from wqcompile.quant import fit_weighted_entropy


def _fitted(mode="symmetric", **config):
    model, calib = tiny_cnn(), calib_data()
    ctx = CompileContext(config=QuantConfig(progress=False, weight_mode=mode, **config), calibration=calib,
                         source_model=model)
    graph = PassManager(default_pipeline()).run(import_graph(model), ctx, until="FitActivationsPass").graph
    moments = collect_moments(export_model(graph, ctx), graph, ctx, list(ctx.weight_layers), calib)
    return ctx, {name: m.factor() for name, m in moments.items()}


@pytest.mark.parametrize("mode,granularity", [("symmetric", "tensor"), ("per_sign", "tensor"), ("symmetric", "channel")])
@pytest.mark.parametrize("keep_symmetry", [True, False])
def test_refinement_never_increases_the_output_error_and_keeps_the_assignment(mode, granularity, keep_symmetry):
    ctx, factors = _fitted(mode, weight_bits=3, weight_granularity=granularity)
    for name, fitted in ctx.weights.items():
        refined = refine_layer(fitted, factors[name], keep_symmetry=keep_symmetry)
        before, after = output_error(fitted, factors[name]), output_error(refined, factors[name])
        # the ridge solution minimises error + λ‖c − c₀‖², so it is never above c₀ (1e-9: float64 rounding)
        assert after <= before * (1 + 1e-9), (name, before, after)
        for a, b in zip(fitted.codebooks, refined.codebooks):
            np.testing.assert_array_equal(a.indices, b.indices)


def test_symmetric_codebooks_stay_symmetric_when_asked():
    ctx, factors = _fitted("symmetric", weight_bits=4)
    for name, fitted in ctx.weights.items():
        values = refine_layer(fitted, factors[name], keep_symmetry=True).codebooks[0].values
        np.testing.assert_allclose(values, -values[::-1], atol=1e-12)


def test_symmetry_map_odd_levels_keep_the_zero():
    t = symmetry_map(7)
    c = t @ np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(c, [-3, -2, -1, 0, 1, 2, 3])


def test_refinement_recovers_the_exact_least_squares_solution_on_a_gemm():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 20))
    x = rng.standard_normal((50, 20)) @ rng.standard_normal((20, 20))        # correlated inputs
    cb = fit_weighted_entropy(w.ravel(), 8, mode="per_sign")
    from wqcompile.context import FittedWeights

    refined = refine_layer(FittedWeights([cb], 3, w), x[None], keep_symmetry=False).codebooks[0].values
    idx = np.asarray(cb.indices).reshape(w.shape)
    design = np.stack([(x @ (idx == k).T).ravel() for k in range(8)], axis=1)   # y = design · c
    used = design.any(axis=0)
    c_ls = np.linalg.lstsq(design[:, used], (x @ w.T).ravel(), rcond=None)[0]
    np.testing.assert_allclose(refined[used], c_ls, rtol=1e-4, atol=1e-6)      # ridge 1e-6 relative


def test_pipeline_with_refinement_passes_the_checker_and_rewrites_every_layer():
    result, (sqnr,) = compile_and_compare(tiny_cnn(), calib_data(), weight_bits=4, act_bits=4, codebook_refinement=True)
    counts = op_counts(result.model)
    assert counts["QConv"] == 2 and counts["QGemm"] == 2 and counts["Conv"] == 0
    check_graph(result.model)
    assert result.context.refined_layers == set(result.context.weight_layers)
    assert sqnr > 5, sqnr     # 4-bit weights and activations on a random tiny CNN: ~10 dB measured either way


def test_channel_scaled_codebooks_are_one_shared_codebook_times_a_scale():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 9)) * np.array([0.01, 0.1, 1.0, 10.0, 0.5])[:, None]
    fitted = scaled_codebook(w, 3, fit_weighted_entropy, mode="symmetric")
    assert len(fitted.codebooks) == 1
    np.testing.assert_allclose(fitted.row_scale, np.sqrt(np.mean(w**2, axis=1)))
    shared = fitted.codebooks[0]
    np.testing.assert_array_equal(shared.quantize((w / fitted.row_scale[:, None]).ravel()), shared.indices)
    np.testing.assert_allclose(dequantized_weights(fitted), fitted.row_scale[:, None] * shared.dequantize().reshape(5, 9))
    result, _ = compile_and_compare(tiny_cnn(), calib_data(), weight_bits=4, act_bits=4, weight_granularity="channel-scaled")
    check_graph(result.model)
    conv1 = next(n for n in result.model.graph.node if n.name == "conv1")
    inits = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    assert inits[conv1.input[2]].shape[0] == 1                     # one shared codebook ...
    assert inits[conv1.input[6]].shape == (8,)                     # ... and one int32 scale per output channel
    assert inits[conv1.input[6]].max() == 2**22


def _fp32_target_layers(granularity: str):
    """Yields ``(ctx, layer, joint moments with S_ff)`` per weight layer of the tiny CNN at 3 bits, in topological
    order. Each layer's simulation is built when it is reached, so a caller may replace ``ctx.weights`` as it goes."""
    from wqcompile.passes.refine_codebooks import collect_joint_moments, fp32_session
    from wqcompile.passes.sequential_calibrate import simulation_model

    model, calib = tiny_cnn(), calib_data()
    ctx = CompileContext(config=QuantConfig(progress=False, weight_bits=3, weight_granularity=granularity),
                         calibration=calib, source_model=model)
    graph = PassManager(default_pipeline()).run(import_graph(model), ctx, until="FitActivationsPass").graph
    base = export_model(graph, ctx)
    fp = fp32_session(base, ctx)
    acts = {a.output for a in ctx.act_layers.values()}
    for name in [n.name for n in graph.nodes if n.name in ctx.weights]:
        sim = simulation_model(base, ctx, [d for d in ctx.weights if d != name], acts)
        yield ctx, name, collect_joint_moments(sim, fp, graph, ctx, [name], calib, keep_fp=True)[name]


def test_fp32_target_refinement_never_increases_the_fp32_target_error():
    from wqcompile.passes.refine_codebooks import target_error

    for granularity in ("tensor", "channel", "channel-scaled"):
        for ctx, name, jm in _fp32_target_layers(granularity):
            fitted = ctx.weights[name]
            refined = refine_layer(fitted, jm.factor(), cross=jm.cross)
            before, after = target_error(fitted, jm), target_error(refined, jm)
            # minimiser of error + λ‖c − c₀‖² (λ = 1e-6·mean diag G): never above c₀ up to float rounding
            assert after <= before * (1 + 1e-9) + 1e-9, (granularity, name, before, after)
            for a, b in zip(fitted.codebooks, refined.codebooks):
                np.testing.assert_array_equal(a.indices, b.indices)
            assert (refined.row_scale is None) == (granularity != "channel-scaled")
            if refined.row_scale is not None:
                assert len(refined.codebooks) == 1 and np.all(refined.row_scale >= 0)
            ctx.weights[name] = refined
        # the first layer sees the (unsimulated) float input: x_q == x_fp, so fp32 == same-input there


def test_fp32_target_equals_same_input_when_inputs_coincide():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 20))
    x = rng.standard_normal((50, 20))
    cb = fit_weighted_entropy(w.ravel(), 8, mode="per_sign")
    from wqcompile.context import FittedWeights

    fitted = FittedWeights([cb], 3, w)
    a = refine_layer(fitted, x[None]).codebooks[0].values
    b = refine_layer(fitted, x[None], cross=(x.T @ x)[None]).codebooks[0].values
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("sequential", [False, True])
def test_pipeline_with_fp32_target_refinement(sequential):
    result, (sqnr,) = compile_and_compare(tiny_cnn(), calib_data(), weight_bits=4, act_bits=4, codebook_refinement=True,
                                          refinement_target="fp32", sequential_calibration=sequential)
    check_graph(result.model)
    assert result.context.refined_layers == set(result.context.weight_layers)
    assert sqnr > 5, sqnr


def test_refinement_is_skipped_for_a_calibration_source_that_can_be_read_once():
    from wqcompile.passes.refine_codebooks import rereadable

    calib = calib_data()
    assert rereadable(calib) and rereadable([calib]) and not rereadable(iter([calib]))
    result, _ = compile_and_compare(tiny_cnn(), (b for b in [calib]), {k: v[:8] for k, v in calib.items()},
                                   weight_bits=4, act_bits=4)
    assert not result.context.refined_layers


@pytest.mark.parametrize("granularity", ["tensor", "channel", "channel-scaled"])
def test_gptq_then_refit_lowers_the_fp32_target_error_below_the_refit_alone(granularity):
    from wqcompile.passes.refine_codebooks import refit_layer, target_error

    total = {False: 0.0, True: 0.0}
    for ctx, name, jm in _fp32_target_layers(granularity):
        for gptq in (False, True):
            refit = refit_layer(ctx.weights[name], jm, gptq=gptq)
            total[gptq] += target_error(refit, jm)
            assert all(cb.info.get("gptq", False) == gptq for cb in refit.codebooks)
    assert total[True] < total[False], total


def test_pipeline_with_gptq_passes_the_checker():
    result, (sqnr,) = compile_and_compare(tiny_cnn(), calib_data(), weight_bits=4, act_bits=4, gptq=True)
    check_graph(result.model)
    assert all(cb.info.get("gptq") for f in result.context.weights.values() for cb in f.codebooks)
    assert sqnr > 5, sqnr
