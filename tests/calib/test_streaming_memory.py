"""Calibration streams: its peak memory depends on the batch size, not on the number of samples."""

from __future__ import annotations

import tracemalloc

import numpy as np

from tests.model_factory import tiny_cnn
from wqcompile.api import compile_model
from wqcompile.config import QuantConfig
from wqcompile.passes import CalibratePass, default_pipeline

BATCH = 8
# Headroom for allocations that do not scale with the sample count but can differ between runs (tqdm/logging state,
# ORT's Python-side bookkeeping, dict resizes). 256 KiB is well below what keeping even just the inputs would add at
# 1024 samples (1024 × 3×12×12 float32 ≈ 1.7 MiB), let alone the activations.
SLACK_BYTES = 256 * 1024


def lazy_batches(n_samples: int, keep: list | None = None):
    """Batches of BATCH samples created only when asked for (``keep`` retains them: a deliberately leaky source)."""
    rng = np.random.default_rng(0)
    for start in range(0, n_samples, BATCH):
        batch = {"input": rng.standard_normal((min(BATCH, n_samples - start), 3, 12, 12)).astype(np.float32)}
        if keep is not None:
            keep.append(batch)
        yield batch


def calibration_peak(n_samples: int, *, leak: bool = False) -> int:
    """Peak traced Python allocation (numpy arrays included) while CalibratePass runs inside compile_model."""
    passes = default_pipeline()
    calibrate = next(p for p in passes if isinstance(p, CalibratePass))
    run, peak = calibrate.run, {}

    def traced_run(graph, ctx):
        tracemalloc.start()
        try:
            return run(graph, ctx)
        finally:
            peak["bytes"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()

    calibrate.run = traced_run
    kept: list = []
    result = compile_model(tiny_cnn(), lazy_batches(n_samples, kept if leak else None),
                           QuantConfig(progress=False), passes=passes)
    assert result.context.calib_samples == n_samples
    return peak["bytes"]


def test_calibration_peak_memory_does_not_grow_with_sample_count():
    calibration_peak(BATCH)  # warm-up: the first run pays one-time costs (lazy imports, caches) that would skew `small`
    small, large = calibration_peak(64), calibration_peak(1024)
    # 16× the samples, yet the same peak: memory is one batch + the 16 kept verification samples + fixed-size log2
    # histograms. The 1.5× factor absorbs allocator noise; anything that kept per-sample data would grow ~16×.
    assert large <= 1.5 * small + SLACK_BYTES, f"peak {large} B at 1024 samples vs {small} B at 64"


def test_the_measurement_would_catch_a_source_that_keeps_every_batch():
    # the control: the same measurement on a source that retains its batches must fail the bound above
    calibration_peak(BATCH)
    small, large = calibration_peak(64, leak=True), calibration_peak(1024, leak=True)
    assert large > 1.5 * small + SLACK_BYTES
