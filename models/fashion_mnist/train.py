"""Trains wqcompile's embedded Fashion-MNIST CNN and ships it as ONNX plus calibration data.

Data: the official Fashion-MNIST splits from Debian ``dataset-fashion-mnist``. Training uses the
60k train split only; the 10k test split is touched once, after the last epoch, to report
accuracy (no model selection on it). Calibration samples are drawn from the train split, so they
are disjoint from the evaluation set.

Network: Conv(1->16, 3x3, pad 1)-Relu-MaxPool2-Conv(16->32, 3x3, pad 1)-Relu-MaxPool2-Flatten-
Gemm(1568->128)-Relu-Gemm(128->10). The ONNX file is written with ``onnx.helper`` from the
trained numpy weights (``models/onnx_cnn.py``), not with ``torch.onnx``.

Usage (from the repository root; needs torch, CPU only)::

    python -m models.fashion_mnist.train            # writes models/fashion_mnist/{fashion_cnn.onnx,calib.npz}
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from models import datasets
from models.evaluate import accuracy, make_runner
from models.fashion_mnist.calib import save_calib
from models.onnx_cnn import build_cnn, save_model

SEED = 20261122
EPOCHS = 12
BATCH = 128
LR = 2e-3
THREADS = 2
CALIB_SAMPLES = 512
HERE = Path(__file__).resolve().parent


def _make_net():
    """Returns the torch network (layer order matches ``build_cnn``)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def train(epochs: int = EPOCHS, seed: int = SEED) -> tuple[list, list, float]:
    """Trains deterministically on the 60k train split; returns conv layers, fc layers, seconds."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    x, y = datasets.load_fashion_mnist("train")
    x_all = torch.from_numpy(datasets.fashion_normalize(x))
    y_all = torch.from_numpy(y)
    net = _make_net()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    steps = epochs * ((len(y_all) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(y_all), generator=gen)
        total = 0.0
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]
            loss = torch.nn.functional.cross_entropy(net(x_all[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: train loss {total / len(y_all):.4f} "
              f"({time.perf_counter() - start:.0f} s)")
    seconds = time.perf_counter() - start
    layers = [m for m in net if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    as_np = [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()) for m in layers]
    return as_np[:2], as_np[2:], seconds


def _doc(epochs: int, seed: int, acc: float | None) -> str:
    """Provenance string stored in the model (the test reads the ``test_accuracy:`` line).

    The training time is left out so that a rerun on the same machine gives the same bytes.
    """
    lines = [
        "wqcompile embedded Fashion-MNIST CNN, trained by models/fashion_mnist/train.py (torch, CPU).",
        "data: official Fashion-MNIST (Zalando, MIT) from Debian dataset-fashion-mnist; "
        "trained on the 60k train split only.",
        f"input: (x/255 - {datasets.FASHION_MEAN})/{datasets.FASHION_STD}, NCHW float32 [N,1,28,28].",
        f"seed: {seed}; epochs: {epochs}; batch: {BATCH}; Adam, one-cycle lr max {LR}; "
        f"torch deterministic algorithms, {THREADS} threads.",
    ]
    if acc is not None:
        lines.append(f"test_accuracy: {acc:.4f} (top-1, official 10k test split, onnxruntime)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> float:
    """Trains, exports, evaluates and writes the model and calibration file; returns test accuracy."""
    parser = argparse.ArgumentParser(prog="python -m models.fashion_mnist.train", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args(argv)

    convs, fcs, seconds = train(args.epochs, SEED)
    x_test, y_test = datasets.load_fashion_mnist("test")
    x_test = datasets.fashion_normalize(x_test)
    model_path = args.out_dir / "fashion_cnn.onnx"
    # Evaluate the exported ONNX itself, then store that number in its doc_string.
    save_model(build_cnn(convs, fcs, graph_name="fashion_cnn", doc_string=_doc(args.epochs, SEED, None)),
               model_path)
    acc = accuracy(make_runner(model_path, "ort"), x_test, y_test)
    model = build_cnn(convs, fcs, graph_name="fashion_cnn", doc_string=_doc(args.epochs, SEED, acc))
    save_model(model, model_path)
    calib_path = save_calib(args.out_dir / "calib.npz", CALIB_SAMPLES, SEED)
    params = sum(w.size + b.size for w, b in convs + fcs)
    print(f"parameters: {params} ({sum(b.size for _, b in convs + fcs)} biases)")
    print(f"training time: {seconds:.1f} s; test accuracy (onnxruntime, 10k): {100 * acc:.2f} %")
    print(f"wrote {model_path} ({model_path.stat().st_size} bytes), {calib_path} ({calib_path.stat().st_size} bytes)")
    return acc


if __name__ == "__main__":
    main()
