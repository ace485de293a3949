"""Calibration samples for the Fashion-MNIST model, drawn from the official *train* split.

``calib.npz`` has one key, ``input`` (the model's input name): float32 [N, 1, 28, 28], already
normalised with ``fashion_normalize``, batched along axis 0. The 10k test split is the evaluation
set and is never sampled here. The file is written with a fixed zip timestamp so that the same
seed gives the same bytes.

Usage::

    python -m models.fashion_mnist.calib -o models/fashion_mnist/calib.npz
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np

from models import datasets

__all__ = ["draw_calib", "save_calib", "load_calib"]

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def draw_calib(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``n`` normalised train images (float32 [n, 1, 28, 28]) and their train-split indices."""
    x, _ = datasets.load_fashion_mnist("train")
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    return datasets.fashion_normalize(x[idx]), idx


def save_calib(path: str | Path, n: int, seed: int) -> Path:
    """Writes ``{"input": samples}`` as a deterministic compressed ``.npz`` and returns its path."""
    samples, _ = draw_calib(n, seed)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, samples, allow_pickle=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("input.npy", date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, buf.getvalue())
    return path


def load_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a calibration ``.npz`` into ``{input_name: float32 batch}``."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    from models.fashion_mnist.train import CALIB_SAMPLES, HERE, SEED

    parser = argparse.ArgumentParser(prog="python -m models.fashion_mnist.calib", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=HERE / "calib.npz")
    parser.add_argument("-n", type=int, default=CALIB_SAMPLES)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    print(f"wrote {save_calib(args.output, args.n, args.seed)}")


if __name__ == "__main__":
    main()
