"""Shared test helpers: compile a model and compare the numpy reference with onnxruntime's FP32 result."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort

from wqcompile.api import compile_model
from wqcompile.config import QuantConfig
from wqcompile.reference import ReferenceSession


def run_fp32(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    err = ((ref - got) ** 2).sum()
    return math.inf if err == 0 else 10 * math.log10((ref**2).sum() / err)


def compile_and_compare(model: onnx.ModelProto, calib: dict, feeds: dict | None = None, **config):
    """Compile with ``config`` (progress off) and return (result, [SQNR dB per output] vs FP32 on ``feeds``)."""
    result = compile_model(model, calib, QuantConfig(progress=False, **config))
    feeds = feeds if feeds is not None else {k: v[:8] for k, v in calib.items()}
    expected = run_fp32(model, feeds)
    got = ReferenceSession(result.model).run(None, feeds)
    return result, [sqnr_db(e, g) for e, g in zip(expected, got)]


def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)
