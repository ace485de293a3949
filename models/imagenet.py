"""ImageNet-style preprocessing, evaluation and calibration data for the ImageNet models of ``models/``.

* **Evaluation**: the 20 labelled ImageNet validation JPEGs of PyPI ``foolbox==3.3.4``
  (``foolbox/data/imagenet_NN_LABEL.jpg``, label = last number in the name), see
  ``datasets.load_foolbox_images``.
* **Calibration**: the natural RGB photos bundled in PyPI ``scikit-image``
  (``datasets.SKIMAGE_PHOTOS``: astronaut, chelsea, coffee, rocket, motorcycle_left, hubble_deep_field),
  expanded by a deterministic augmentation (:func:`calibration_crops`): each photo once as is, then random
  resized crops (area 25-100 %, aspect 3/4-4/3) with random horizontal flips drawn from
  ``np.random.default_rng(CALIB_SEED)``. The two sets come from different packages and different sources
  (ImageNet validation vs scikit-image's public-domain / CC0 photos), so they are disjoint.

``preprocess_imagenet`` reproduces torchvision's ``Resize(256)`` (shorter side to 256, PIL bilinear, longer
side ``int(256 * long / short)``), ``CenterCrop(224)`` (offsets ``int(round((size - 224) / 2))``),
``ToTensor`` and ``Normalize(mean, std)``.

Usage::

    python -m models.imagenet --evaluate build/models/mobilenet_v2.onnx [--runtime reference]
    python -m models.imagenet --calib-out build/models/imagenet_calib.npz [--n 64]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

import numpy as np

from models import datasets

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "RESIZE", "CROP", "CALIB_SEED", "CALIB_PHOTOS",
    "resize_shorter", "center_crop", "preprocess_imagenet", "load_imagenet_eval", "calibration_crops",
    "load_imagenet_calib", "topk_accuracy", "evaluate_imagenet", "save_calib", "main",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
RESIZE, CROP = 256, 224
CALIB_SEED = 20261122
CALIB_PHOTOS = datasets.SKIMAGE_PHOTOS
CALIB_SCALE = (0.25, 1.0)                 # fraction of the photo's area kept by a random crop
CALIB_RATIO = (3.0 / 4.0, 4.0 / 3.0)      # crop aspect ratio (width / height), sampled log-uniformly


def _to_pil(img: np.ndarray):
    """uint8 HxW / HxWx3 / HxWx4 array -> RGB PIL image."""
    from PIL import Image

    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 HxW or HxWxC image, got {img.dtype} {img.shape}")
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected 1, 3 or 4 channels, got shape {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(img)).convert("RGB")


def resize_shorter(image, size: int = RESIZE):
    """torchvision ``Resize(size)`` on a PIL image: shorter side to ``size``, bilinear."""
    from PIL import Image

    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), Image.Resampling.BILINEAR)


def center_crop(image, size: int = CROP):
    """torchvision ``CenterCrop(size)`` on a PIL image at least ``size`` x ``size``."""
    w, h = image.size
    if w < size or h < size:
        raise ValueError(f"image {w}x{h} is smaller than the {size}x{size} crop")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def preprocess_imagenet(img_uint8_hwc: np.ndarray) -> np.ndarray:
    """uint8 RGB HxWx3 (grayscale HxW is replicated) -> float32 [3, 224, 224], torchvision's eval transform.

    Resize shorter side to 256 (bilinear), center crop 224, scale to [0, 1], subtract
    ``IMAGENET_MEAN`` and divide by ``IMAGENET_STD`` per channel, HWC -> CHW.
    """
    image = center_crop(resize_shorter(_to_pil(img_uint8_hwc), RESIZE), CROP)
    x = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def load_imagenet_eval(
    preprocess: Callable[[np.ndarray], np.ndarray] = preprocess_imagenet,
) -> tuple[np.ndarray, np.ndarray]:
    """foolbox's 20 ImageNet validation images, preprocessed, and their labels.

    Args:
        preprocess: uint8 HxWx3 RGB -> one float32 model input (default: ``preprocess_imagenet``).

    Returns:
        ``x`` float32 [20, ...] (default [20, 3, 224, 224]) and ``y`` int64 [20] (ImageNet class ids).
    """
    images, labels = datasets.load_foolbox_images("imagenet")
    return np.stack([preprocess(img) for img in images]).astype(np.float32), labels


def calibration_crops(n: int = 64, seed: int = CALIB_SEED,
                      photos: tuple[str, ...] = CALIB_PHOTOS) -> list[np.ndarray]:
    """Deterministic augmented views of scikit-image's photos, for calibration (disjoint from evaluation).

    Sample ``i`` uses photo ``i % len(photos)``. The first ``len(photos)`` samples are the photos
    themselves; the others are random resized crops (area fraction in ``CALIB_SCALE``, aspect ratio
    log-uniform in ``CALIB_RATIO``, position uniform), each flipped horizontally with probability 1/2,
    all drawn from ``np.random.default_rng(seed)``. Crops are returned at their native resolution: each
    model's own preprocessing (resize + center crop) follows.

    Returns:
        ``n`` uint8 HxWx3 RGB arrays.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    sources = datasets.load_skimage_photos(tuple(photos))
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        photo = sources[i % len(sources)]
        if i < len(sources):
            crops.append(photo.copy())
            continue
        h, w = photo.shape[:2]
        for _ in range(10):  # torchvision-style rejection sampling; falls back to the whole photo
            area = h * w * rng.uniform(*CALIB_SCALE)
            ratio = math.exp(rng.uniform(math.log(CALIB_RATIO[0]), math.log(CALIB_RATIO[1])))
            cw, ch = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                break
        else:
            cw, ch = w, h
        top = int(rng.integers(0, h - ch + 1))
        left = int(rng.integers(0, w - cw + 1))
        crop = photo[top:top + ch, left:left + cw]
        if rng.uniform() < 0.5:
            crop = crop[:, ::-1]
        crops.append(np.ascontiguousarray(crop))
    return crops


def load_imagenet_calib(n: int = 64, seed: int = CALIB_SEED,
                        preprocess: Callable[[np.ndarray], np.ndarray] = preprocess_imagenet) -> np.ndarray:
    """``n`` calibration inputs from :func:`calibration_crops`, preprocessed (default float32 [n, 3, 224, 224])."""
    return np.stack([preprocess(c) for c in calibration_crops(n, seed)]).astype(np.float32)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction (0-1) of rows whose label is among the ``k`` largest logits."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0] or labels.size == 0:
        raise ValueError(f"need logits [N, C] and N labels, got {logits.shape} and {labels.shape}")
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def evaluate_imagenet(model_path: str | Path, runtime: str = "ort", verbose: bool = False) -> dict:
    """Top-1/top-5 of an ImageNet classifier (input [N,3,224,224], 1000 logits) on foolbox's 20 images.

    Returns:
        ``{"top1": float, "top5": float, "logits": float32 [20, 1000], "labels": int64 [20]}``.
    """
    from models.evaluate import make_runner

    x, y = load_imagenet_eval()
    logits = np.asarray(make_runner(model_path, runtime)(x))
    result = {"top1": topk_accuracy(logits, y, 1), "top5": topk_accuracy(logits, y, 5), "logits": logits, "labels": y}
    if verbose:
        print(f"{model_path} ({runtime}) on foolbox's {len(y)} ImageNet images: "
              f"top-1 {round(result['top1'] * len(y))}/{len(y)}, top-5 {round(result['top5'] * len(y))}/{len(y)}")
    return result


def save_calib(path: str | Path, x: np.ndarray, input_name: str = "input") -> Path:
    """Writes ``x`` as a ``.npz`` keyed by the model's input name (what ``wqcompile --calib`` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **{input_name: x})
    return path


def main(argv: list[str] | None = None) -> None:
    """Command line: evaluate an ImageNet model and/or write the calibration set."""
    parser = argparse.ArgumentParser(prog="python -m models.imagenet", description=__doc__.splitlines()[0])
    parser.add_argument("--evaluate", type=Path, metavar="MODEL", help="print top-1/top-5 of MODEL")
    parser.add_argument("--runtime", choices=("ort", "reference"), default="ort")
    parser.add_argument("--calib-out", type=Path, metavar="NPZ", help="write the calibration inputs here")
    parser.add_argument("--n", type=int, default=64, help="number of calibration inputs (default 64)")
    args = parser.parse_args(argv)
    if args.evaluate is None and args.calib_out is None:
        parser.error("give --evaluate MODEL and/or --calib-out NPZ")
    if args.calib_out is not None:
        out = save_calib(args.calib_out, load_imagenet_calib(args.n))
        print(f"wrote {out}: {args.n} calibration inputs, key 'input', float32 [{args.n}, 3, 224, 224]")
    if args.evaluate is not None:
        evaluate_imagenet(args.evaluate, args.runtime, verbose=True)


if __name__ == "__main__":
    main()
