"""Figure 1 of the paper on a real layer: the weight histogram with the levels of WQ, linear and log quantizers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from wqcompile.model_io import write_bytes_atomic
from wqcompile.quant import WEIGHT_QUANTIZERS

PLOT_METHODS = (("wq", "weighted entropy (ours)"), ("linear", "linear (uniform, MSE range)"), ("log", "log (powers of two)"))


def plot_weight_histogram(model, ctx, path: Path, *, layer: str | None = None) -> Path | None:
    """Draw the chosen layer (default: the largest quantized one) and write a PNG atomically."""
    if not ctx.weights:
        return None
    if layer is None:
        layer = max(ctx.weights, key=lambda n: ctx.weights[n].matrix.size)
    if layer not in ctx.weights:
        raise KeyError(f"layer {layer!r} was not quantized; choose one of {sorted(ctx.weights)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fitted = ctx.weights[layer]
    w = fitted.matrix.reshape(-1)
    bits = fitted.bits
    fig, axes = plt.subplots(len(PLOT_METHODS), 1, figsize=(8, 2.6 * len(PLOT_METHODS)), sharex=True)
    edges = np.linspace(w.min(), w.max(), 201)
    for ax, (method, title) in zip(axes, PLOT_METHODS):
        cb = WEIGHT_QUANTIZERS[method](w, 2**bits)
        used = np.unique(np.asarray(cb.indices).reshape(-1))
        ax.hist(w, bins=edges, color="0.6")
        ax.set_yscale("log")
        for v in np.asarray(cb.values)[used]:
            ax.axvline(v, color="C3", lw=1)
        sq = 10 * np.log10((w**2).sum() / max(((w - cb.dequantize().reshape(-1)) ** 2).sum(), 1e-300))
        ax.set_title(f"{title}: {len(used)} levels, weight SQNR {sq:.1f} dB", fontsize=10)
        ax.set_ylabel("count")
    axes[-1].set_xlabel(f"weight value ({layer}, {w.size} weights, {bits} bits)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return path
