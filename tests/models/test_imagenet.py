"""models.imagenet: torchvision-style preprocessing, foolbox evaluation set, skimage calibration set."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from models import imagenet

needs_foolbox = pytest.mark.skipif(importlib.util.find_spec("foolbox") is None,
                                   reason="foolbox missing: pip install --no-deps foolbox==3.3.4")
needs_skimage = pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                                   reason="scikit-image missing: pip install --no-deps scikit-image")


def test_preprocess_constant_image():
    image = np.full((300, 500, 3), (255, 128, 0), dtype=np.uint8)
    x = imagenet.preprocess_imagenet(image)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    expected = (np.array([255, 128, 0]) / 255.0 - imagenet.IMAGENET_MEAN) / imagenet.IMAGENET_STD
    np.testing.assert_allclose(x[:, 100, 100], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x.reshape(3, -1).std(axis=1), 0, atol=1e-6)


def test_preprocess_grayscale_is_replicated():
    gray = np.arange(256 * 256, dtype=np.uint32).reshape(256, 256).astype(np.uint8)
    x = imagenet.preprocess_imagenet(gray)
    np.testing.assert_allclose(x[0] * imagenet.IMAGENET_STD[0] + imagenet.IMAGENET_MEAN[0],
                               x[1] * imagenet.IMAGENET_STD[1] + imagenet.IMAGENET_MEAN[1], atol=1e-6)


def test_resize_and_crop_follow_torchvision():
    from PIL import Image

    # torchvision Resize(256): shorter side 256, longer int(256 * long / short); 1024x683 -> 383x256
    assert imagenet.resize_shorter(Image.new("RGB", (1024, 683))).size == (383, 256)
    assert imagenet.resize_shorter(Image.new("RGB", (300, 451))).size == (256, 384)
    # CenterCrop(224): offsets int(round((size - 224) / 2)), round-half-even as in torchvision
    ramp = np.tile(np.arange(383, dtype=np.uint16)[None, :], (256, 1))
    image = Image.fromarray((ramp % 256).astype(np.uint8))
    cropped = np.asarray(imagenet.center_crop(image))
    assert cropped.shape == (224, 224)
    assert cropped[0, 0] == int(round((383 - 224) / 2.0)) % 256 == 80
    # an image exactly 256 on its shorter side is not resampled
    small = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    x = imagenet.preprocess_imagenet(small)
    np.testing.assert_allclose(x[:, 0, 0] * imagenet.IMAGENET_STD + imagenet.IMAGENET_MEAN,
                               small[16, 16] / 255.0, atol=1e-6)


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        imagenet.preprocess_imagenet(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="smaller"):
        imagenet.center_crop(imagenet._to_pil(np.zeros((100, 300, 3), dtype=np.uint8)))


def test_topk_accuracy():
    logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    labels = np.array([2, 0, 0])
    assert imagenet.topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert imagenet.topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert imagenet.topk_accuracy(logits, labels, 3) == 1.0
    with pytest.raises(ValueError):
        imagenet.topk_accuracy(logits, labels[:2])


@needs_foolbox
def test_eval_set():
    x, y = imagenet.load_imagenet_eval()
    assert x.shape == (20, 3, 224, 224) and x.dtype == np.float32
    assert y.dtype == np.int64 and y[:5].tolist() == [243, 559, 438, 990, 949] and y[10] == 541
    low = (0 - imagenet.IMAGENET_MEAN) / imagenet.IMAGENET_STD
    high = (1 - imagenet.IMAGENET_MEAN) / imagenet.IMAGENET_STD
    assert (x.min(axis=(0, 2, 3)) >= low - 1e-5).all() and (x.max(axis=(0, 2, 3)) <= high + 1e-5).all()


@needs_skimage
def test_calibration_crops_are_deterministic():
    a, b = imagenet.calibration_crops(20), imagenet.calibration_crops(20)
    assert len(a) == 20 and all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, imagenet.calibration_crops(20, seed=1)))
    photos = imagenet.datasets.load_skimage_photos(imagenet.CALIB_PHOTOS)
    n = len(photos)
    assert all(np.array_equal(a[i], photos[i]) for i in range(n))  # first the photos themselves
    for i in range(n, 20):  # then crops of photo i % n covering 25-100 % of its area
        crop, photo = a[i], photos[i % n]
        assert crop.dtype == np.uint8 and crop.ndim == 3 and crop.shape[2] == 3
        area = crop.shape[0] * crop.shape[1] / (photo.shape[0] * photo.shape[1])
        assert 0.2 <= area <= 1.0
    with pytest.raises(ValueError):
        imagenet.calibration_crops(0)


@needs_skimage
@needs_foolbox
def test_calibration_set_is_disjoint_from_eval():
    calib = imagenet.load_imagenet_calib(64)
    assert calib.shape == (64, 3, 224, 224) and calib.dtype == np.float32 and np.isfinite(calib).all()
    x, _ = imagenet.load_imagenet_eval()
    assert len({c.tobytes() for c in calib}) == 64  # no duplicates
    # nearest eval image in mean-squared distance is far away (different photos, not near-duplicates)
    flat_c, flat_e = calib.reshape(64, -1).astype(np.float64), x.reshape(20, -1).astype(np.float64)
    sq = (flat_c ** 2).sum(1)[:, None] + (flat_e ** 2).sum(1)[None] - 2 * flat_c @ flat_e.T
    dists = sq / flat_c.shape[1]
    assert dists.min() > 0.1


@needs_skimage
def test_cli_writes_calibration_npz(tmp_path, capsys):
    out = tmp_path / "calib.npz"
    imagenet.main(["--calib-out", str(out), "--n", "8"])
    with np.load(out) as data:
        assert list(data) == ["input"]
        np.testing.assert_array_equal(data["input"], imagenet.load_imagenet_calib(8))
    assert "8 calibration inputs" in capsys.readouterr().out
