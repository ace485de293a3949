"""Torch-free reader for PyTorch ``.pth`` state dicts.

Two on-disk formats are understood:

* the zip format written by ``torch.save`` since torch 1.6: ``<prefix>/data.pkl`` holds the
  pickle, ``<prefix>/data/<key>`` the raw little-endian bytes of each storage (the prefix
  directory name is arbitrary);
* the legacy stream written before 1.6 (or with ``_use_new_zipfile_serialization=False``):
  pickles of the magic number, the protocol version and ``sys_info``, then the main pickle,
  then a pickled list of storage keys, then for each key an int64 element count followed by
  the raw bytes of that storage.

The unpickler is restricted: ``find_class`` admits only ``collections.OrderedDict``, torch's
tensor/parameter rebuild functions and torch storage types; any other global raises
``pickle.UnpicklingError`` naming it, so a malicious file cannot run code.

Example:
    >>> sd = load_state_dict("mnist.pth")          # doctest: +SKIP
    >>> sd["features.0.weight"].shape               # doctest: +SKIP
    (32, 1, 3, 3)
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["load", "load_state_dict"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype. BFloat16 is read as uint16 bits and widened later.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "ComplexFloatStorage": np.dtype("<c8"),
    "ComplexDoubleStorage": np.dtype("<c16"),
}


class _StorageType:
    """Stand-in for a ``torch.*Storage`` class: only its name and numpy dtype matter."""

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"_StorageType({self.name})"


class _Storage:
    """A storage's flat data (``array``, may be filled in later) plus its torch type name."""

    def __init__(self, kind: _StorageType, array: np.ndarray | None) -> None:
        self.kind = kind
        self.array = array


def _widen_bfloat16(bits: np.ndarray) -> np.ndarray:
    """Returns float32 values for bfloat16 bit patterns (bfloat16 = upper half of a float32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor(storage: _Storage, storage_offset: int, size, stride) -> np.ndarray:
    """Returns a contiguous copy of the strided view ``storage[offset:]`` with ``size``/``stride``."""
    flat = storage.array
    if flat is None:  # first pass over a legacy stream: storages are not read yet
        return np.empty(0, dtype=storage.kind.dtype)
    if storage.kind.name == "BFloat16Storage":
        flat = _widen_bfloat16(flat)
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    needed = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if 0 not in size and needed > flat.size:
        raise pickle.UnpicklingError(
            f"tensor view (offset {storage_offset}, size {size}, stride {stride}) "
            f"exceeds its storage of {flat.size} elements"
        )
    base = flat[storage_offset:]
    item = base.itemsize
    view = np.lib.stride_tricks.as_strided(
        base, shape=size, strides=tuple(s * item for s in stride), writeable=False
    )
    return np.array(view, order="C", copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> np.ndarray:
    """numpy version of ``torch._utils._rebuild_tensor_v2`` (grad flags and hooks are dropped)."""
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None) -> np.ndarray:
    """numpy version of ``torch._utils._rebuild_parameter``: a parameter is just its data."""
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", np.dtype("u1")),
    ("torch", "UntypedStorage"): _StorageType("UntypedStorage", np.dtype("u1")),
}
_ALLOWED_GLOBALS.update(
    {("torch", name): _StorageType(name, dt) for name, dt in _STORAGE_DTYPES.items()}
)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and builds storages via ``load_storage``.

    ``load_storage(key, storage_type, numel)`` returns the flat numpy data of one storage, or
    ``None`` when the data is not available yet (first pass over a legacy stream).
    """

    def __init__(self, file, load_storage: Callable[[str, _StorageType, int], np.ndarray | None]):
        super().__init__(file)
        self._load_storage = load_storage
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is forbidden in a .pth state dict"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or len(pid) < 5:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        typename, kind, key, _location, numel = pid[:5]
        if isinstance(typename, bytes):
            typename = typename.decode("ascii")
        if typename != "storage" or not isinstance(kind, _StorageType):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid[:2]!r}")
        key = key.decode("ascii") if isinstance(key, bytes) else str(key)
        if key not in self._storages:
            self._storages[key] = _Storage(kind, self._load_storage(key, kind, int(numel)))
        storage = self._storages[key]
        view = pid[5] if len(pid) > 5 else None
        if view is not None and storage.array is not None:  # pre-1.0 storage views
            _view_key, offset, view_size = view
            return _Storage(kind, storage.array[offset:offset + view_size])
        return storage


def _load_zip(path: Path, archive: zipfile.ZipFile) -> Any:
    """Unpickles the zip (torch >= 1.6) format."""
    pkl_names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pkl_names) != 1:
        raise ValueError(f"{path}: zip archive has no single '<prefix>/data.pkl'")
    prefix = pkl_names[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in archive.namelist():
        byteorder = archive.read(prefix + "byteorder").decode("ascii").strip()

    def load_storage(key: str, kind: _StorageType, numel: int) -> np.ndarray:
        raw = archive.read(f"{prefix}data/{key}")
        dtype = kind.dtype if byteorder == "little" else kind.dtype.newbyteorder(">")
        if len(raw) < numel * dtype.itemsize:
            raise pickle.UnpicklingError(f"storage {key} has {len(raw)} bytes, needs {numel}")
        return np.frombuffer(raw, dtype=dtype, count=numel).astype(kind.dtype)

    with archive.open(pkl_names[0]) as f:
        return _RestrictedUnpickler(io.BytesIO(f.read()), load_storage).load()


def _load_legacy(path: Path, data: bytes) -> Any:
    """Unpickles the legacy stream format; the main pickle is read twice (types, then data)."""
    stream = io.BytesIO(data)
    header = _RestrictedUnpickler(stream, lambda *a: None)
    if header.load() != LEGACY_MAGIC_NUMBER:
        raise ValueError(f"{path}: not a torch file (bad magic number)")
    if header.load() != LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"{path}: unsupported legacy torch protocol version")
    sys_info = header.load()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise ValueError(f"{path}: only little-endian legacy torch files are supported")
    main_start = stream.tell()

    first = _RestrictedUnpickler(stream, lambda key, kind, numel: None)
    first.load()
    keys = _RestrictedUnpickler(stream, lambda *a: None).load()
    arrays: dict[str, np.ndarray] = {}
    for key in keys:
        kind = first._storages[str(key)].kind
        (numel,) = struct.unpack("<q", stream.read(8))
        raw = stream.read(numel * kind.dtype.itemsize)
        if len(raw) != numel * kind.dtype.itemsize:
            raise ValueError(f"{path}: truncated data for storage {key}")
        arrays[str(key)] = np.frombuffer(raw, dtype=kind.dtype).copy()

    stream.seek(main_start)
    return _RestrictedUnpickler(stream, lambda key, kind, numel: arrays[key]).load()


def load(path: str | Path) -> Any:
    """Unpickles a ``.pth`` file with tensors as numpy arrays.

    Args:
        path: a torch ``.pth`` file in the zip or legacy format.

    Returns:
        The pickled object (usually an ``OrderedDict``), tensors replaced by numpy arrays.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming ``path`` if the file is corrupt, of unknown format, or references
            a global outside the allow-list.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                return _load_zip(path, archive)
        return _load_legacy(path, data)
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"{path}: cannot read torch file: {err}") from err
    except (pickle.UnpicklingError, EOFError, KeyError, IndexError, TypeError,
            AttributeError, struct.error, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read torch file: {type(err).__name__}: {err}") from err


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a torch ``state_dict`` into ``{name: np.ndarray}`` without importing torch.

    Args:
        path: a ``.pth`` file holding a state dict (a mapping of names to tensors).

    Returns:
        A dict in the file's key order; arrays are contiguous copies with torch's dtype
        (bfloat16 is widened to float32).

    Raises:
        ValueError: naming ``path`` if the file is corrupt or not a state dict.
    """
    obj = load(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise ValueError(f"{path}: entries {bad[:5]} are not tensors; not a plain state dict")
    return dict(obj)
