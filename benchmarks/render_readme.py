"""Regenerates the README's results section (between the results markers) from ``benchmarks.run_all``'s JSON.

    python -m benchmarks.render_readme [--results build/bench/results.json] [--readme README.md] [--check]

Compact: per model one table, bit configurations × the diagonal pairs of quantizers (cell = top-1 change against
FP32 in points and output SQNR; fidelity-only models: output SQNR and top-1 agreement), plus onnxruntime's INT8 row;
the full tables stay in ``results.md``. ``--check`` exits 1 if the README is not up to date (for CI).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
PAIRS = (("wq", "wq", "WQ + WQ LogQuant"), ("linear", "linear", "linear + linear"),
         ("log", "miyashita", "log + Miyashita"), ("kmeans", "linear", "k-means + linear"),
         ("wq", "logmse", "WQ + LogQuant-MSE"))
SHORT = {"mnist": "MNIST (ccexam)", "fashion": "Fashion-MNIST (ours)", "mobilenet": "MobileNetV2",
         "opennsfw": "Open-NSFW"}


def _num(v) -> float:
    return math.inf if v == "inf" else float(v)


def _cell(row: dict | None, fp32: dict) -> str:
    if row is None:
        return "–"
    if "error" in row:
        return "failed"
    sq = _num(row["sqnr_db"])
    sq_text = "inf" if math.isinf(sq) else f"{sq:.1f} dB"
    if "top1" in fp32:
        return f"{100 * (row['top1'] - fp32['top1']):+.2f} ({sq_text})".replace("-", "−")
    return f"{sq_text}, {100 * row['agree']:.0f} %".replace("-", "−")


def render(results: dict) -> str:
    rows = results["rows"]
    command = results["command"].replace(str(ROOT) + "/", "")      # repository-relative paths
    lines = [f"Measured with `{command}` ({results['total_s'] / 60:.0f} min on {results['env']['cpus']} "
             f"shared CPUs), then `python -m benchmarks.render_readme`. Post-training only, no fine-tuning. Full tables "
             "(every quantizer combination, top-5, file and entropy-coded sizes, compile time, peak memory) in "
             "`build/bench/results.md`; plots `build/bench/accuracy_vs_size_<model>.png` and "
             "`build/bench/figure1_<model>.png`.", "",
             "Cells: top-1 change against FP32 in points (output SQNR against the FP32 logits); Open-NSFW has no labels: "
             "output SQNR, top-1 agreement with FP32. Size: FP32 file ÷ compiled file (÷ entropy-coded size). "
             "– = not in the matrix (the default leaves out 8-bit WQ weights on the large models: `--full` adds "
             "them).", ""]
    for key, info in results["models"].items():
        every = [r for r in rows if r["model"] == key]
        mrows = [r for r in every if r.get("recipe", "paper") == "paper"]
        fp32 = next(r for r in mrows if r["method"] == "fp32")
        head = f"**{SHORT.get(key, key)}**: {info['notes']}; FP32 "
        head += (f"top-1 {100 * fp32['top1']:.2f} %" if "top1" in fp32 else "logits as reference")
        if "top5" in fp32:
            head += f", top-5 {100 * fp32['top5']:.0f} %"
        lines += [head + f", {fp32['file_bytes']:,} B.", ""]
        lines += ["| (w,a) | " + " | ".join(p[2] for p in PAIRS) + " | size × (coded) |",
                  "|---|" + "---|" * (len(PAIRS) + 1)]
        bits_order = [b for b in results["matrix"]["bits"] if any(r["bits"] == b for r in mrows)]
        for b in bits_order:
            cells = []
            sizes = None
            for w, a, _ in PAIRS:
                if b.endswith(",f"):
                    a = "f"
                row = next((r for r in mrows if r["bits"] == b and r["weights"] == w and r["acts"] == a), None)
                cells.append(_cell(row, fp32))
                if row is not None and "error" not in row and sizes is None:
                    sizes = f"{fp32['file_bytes'] / row['file_bytes']:.2f} ({fp32['file_bytes'] / row['coded_bytes']:.2f})"
            if b.endswith(",f"):  # activations in FP32: the last column would repeat the first
                cells[-1] = "= WQ"
            lines.append(f"| ({b}) | " + " | ".join(cells) + f" | {sizes or ''} |")
        ort = next((r for r in mrows if r["method"] == "ort-int8"), None)
        if ort is not None and "error" not in ort:
            lines.append(f"| ORT INT8 | {_cell(ort, fp32)} (QDQ, per-channel, MinMax) | | | | | "
                         f"{fp32['file_bytes'] / ort['file_bytes']:.2f} |")
        lines.append("")
        lines += _recipes(every, fp32)
    return "\n".join(lines)


def _recipes(rows: list[dict], fp32: dict) -> list[str]:
    """The post-training recipe rows of one model, each after the paper's WQ + WQ row at the same bits."""
    from benchmarks.run_all import RECIPE_LABELS

    recipes = [r for r in rows if r.get("recipe", "paper") != "paper"]
    if not recipes:
        return []
    metric = "top-1 Δ pts (SQNR)" if "top1" in fp32 else "SQNR, agreement"
    out = [f"Post-training recipes on WQ + WQ unless the row names other quantizers (what each technique beyond the paper "
           f"buys, and its compile time):", "",
           f"| (w,a) | pipeline | {metric} | agree % | size × | compile s |", "|---|---|---|---|---|---|"]
    shown: set[str] = set()
    for r in recipes:
        if r["bits"] not in shown:
            shown.add(r["bits"])
            paper = next((p for p in rows if p["bits"] == r["bits"] and p.get("recipe", "paper") == "paper"
                          and p["weights"] == "wq" and p["acts"] == ("f" if r["bits"].endswith(",f") else "wq")), None)
            if paper is not None and "error" not in paper:
                out.append(_recipe_line(paper, fp32, "paper (WQ codebooks, WQ LogQuant as fitted)"))
        label = f"{RECIPE_LABELS.get(r['recipe'], r['recipe'])}" + (f", {r['acts']} acts" if r["acts"] != "wq" else "")
        out.append(_recipe_line(r, fp32, label) if "error" not in r else f"| ({r['bits']}) | {label} | failed | | | |")
    return out + [""]


def _recipe_line(row: dict, fp32: dict, label: str) -> str:
    return (f"| ({row['bits']}) | {label} | {_cell(row, fp32)} | {100 * row['agree']:.1f} | "
            f"{fp32['file_bytes'] / row['file_bytes']:.2f} | {row['compile_s']:.1f} |")


def splice(readme: str, body: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README has no {START} ... {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.render_readme", description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=ROOT / "build" / "bench" / "results.json")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--check", action="store_true", help="exit 1 if the README differs from the rendered section")
    args = p.parse_args(argv)
    results = json.loads(args.results.read_text())
    old = args.readme.read_text()
    new = splice(old, render(results))
    if args.check:
        if new != old:
            print(f"{args.readme}: results section is out of date; run python -m benchmarks.render_readme",
                  file=sys.stderr)
            return 1
        return 0
    if new != old:
        args.readme.write_text(new)
    print(f"{args.readme}: results section {'updated' if new != old else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
