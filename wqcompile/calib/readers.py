"""Calibration readers: everything a user may have, turned into validated feed dicts, one batch at a time.

Accepted sources (:func:`open_calibration`):

* a ``.npz`` file keyed by input name, each array batched along axis 0;
* a directory of ``.npz`` files (each a feed dict) and/or ``.npy`` files (single-input models), in name order;
* onnxruntime's ``CalibrationDataReader`` (anything with ``get_next()`` returning a dict or ``None``);
* any iterable of ``{input_name: ndarray}``, or one such dict holding whole batches.

Feeds are validated against the model's inputs (names, rank, fixed dims, dtype, finiteness) and re-batched so no
feed is larger than ``batch_size`` samples (or the model's fixed batch dimension). Nothing is read ahead: memory is
one batch, whatever the number of samples.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import onnx

from wqcompile.errors import CalibrationError

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 32

_ONNX_TO_NUMPY = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.BOOL: np.bool_,
}


@dataclass(frozen=True)
class InputSpec:
    """A model input as calibration data must match it: name, numpy dtype, dims (None = dynamic)."""

    name: str
    dtype: np.dtype
    dims: tuple[int | None, ...]

    @staticmethod
    def from_model(model: onnx.ModelProto) -> list["InputSpec"]:
        inits = {i.name for i in model.graph.initializer}
        specs = []
        for vi in model.graph.input:
            if vi.name in inits:
                continue
            tt = vi.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
            specs.append(InputSpec(vi.name, np.dtype(_ONNX_TO_NUMPY.get(tt.elem_type, np.float32)), dims))
        return specs


def _raw_feeds(source: Any, specs: list[InputSpec]) -> Iterator[tuple[str, Mapping[str, np.ndarray]]]:
    """``(where, feed)`` pairs; ``where`` names the file or batch for error messages."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            yield from _directory_feeds(path, specs)
        elif path.is_file():
            yield str(path), read_npz(path)
        else:
            raise CalibrationError(f"{path}: calibration data not found")
    elif hasattr(source, "get_next"):
        if callable(getattr(source, "rewind", None)):  # the usual ORT reader convention: start over on re-iteration
            source.rewind()
        index = 0
        while (feed := source.get_next()) is not None:
            yield f"batch {index} of {type(source).__name__}", feed
            index += 1
    elif isinstance(source, Mapping):
        yield "batch 0", source
    elif isinstance(source, Iterable):
        for index, feed in enumerate(source):
            if not isinstance(feed, Mapping):
                raise CalibrationError(f"calibration iterable yielded a {type(feed).__name__}, expected a dict of input name → array")
            yield f"batch {index}", feed
    else:
        raise CalibrationError(f"cannot read calibration data from a {type(source).__name__}")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):  # a .npy (np.load sniffs the content, not the suffix)
            raise CalibrationError(f"{path}: a .npy file holds one array; use a .npz keyed by input name")
        with data:
            return {k: data[k] for k in data.files}
    except CalibrationError:
        raise
    except Exception as err:
        raise CalibrationError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None


def _directory_feeds(path: Path, specs: list[InputSpec]) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
    if not files:
        raise CalibrationError(f"{path}: directory holds no .npz or .npy calibration files")
    for f in files:
        if f.suffix == ".npz":
            yield str(f), read_npz(f)
            continue
        if len(specs) != 1:
            raise CalibrationError(f"{f}: .npy files only work for single-input models; this model has inputs {[s.name for s in specs]}")
        try:
            array = np.load(f, allow_pickle=False, mmap_mode="r")
        except Exception as err:
            raise CalibrationError(f"{f}: not a readable .npy file ({type(err).__name__})") from None
        yield str(f), {specs[0].name: array}


def validate_feed(feed: Mapping[str, np.ndarray], specs: list[InputSpec], where: str) -> dict[str, np.ndarray]:
    expected = {s.name for s in specs}
    missing, unknown = expected - set(feed), set(feed) - expected
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing input(s) {sorted(missing)}")
        if unknown:
            parts.append(f"unknown name(s) {sorted(unknown)}")
        raise CalibrationError(f"calibration {where}: {'; '.join(parts)}; the model's inputs are {sorted(expected)}")
    out = {}
    counts = set()
    for spec in specs:
        arr = np.asarray(feed[spec.name])
        if arr.dtype != spec.dtype:
            raise CalibrationError(f"calibration {where}: input {spec.name!r} has dtype {arr.dtype}, the model expects {spec.dtype}")
        if arr.ndim != len(spec.dims):
            raise CalibrationError(
                f"calibration {where}: input {spec.name!r} has shape {list(arr.shape)}, the model expects rank {len(spec.dims)} "
                f"{[d if d is not None else '?' for d in spec.dims]} (samples batched along axis 0)")
        for axis, (got, want) in enumerate(zip(arr.shape, spec.dims)):
            if want is not None and axis > 0 and got != want:
                raise CalibrationError(
                    f"calibration {where}: input {spec.name!r} has shape {list(arr.shape)}, the model expects "
                    f"{[d if d is not None else '?' for d in spec.dims]}")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise CalibrationError(f"calibration {where}: input {spec.name!r} contains NaN or Inf")
        counts.add(arr.shape[0] if arr.ndim else 1)
        out[spec.name] = arr
    if len(counts) > 1:
        raise CalibrationError(f"calibration {where}: inputs disagree on the number of samples along axis 0: {sorted(counts)}")
    return out


def iter_batches(source: Any, specs: list[InputSpec], *, batch_size: int = DEFAULT_BATCH,
                 max_samples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Validated feed dicts of at most ``batch_size`` samples (the model's fixed batch size if it has one)."""
    fixed_sizes = {s.dims[0] for s in specs if s.dims and s.dims[0] is not None}
    fixed = len(fixed_sizes) == 1
    step = next(iter(fixed_sizes)) if fixed else batch_size
    seen = 0
    for where, feed in _raw_feeds(source, specs):
        feed = validate_feed(feed, specs, where)
        n = next(iter(feed.values())).shape[0] if specs and next(iter(feed.values())).ndim else 1
        if fixed and n % step:
            raise CalibrationError(f"calibration {where}: {n} samples is not a multiple of the model's fixed batch size {step}")
        for start in range(0, n, step):
            if max_samples is not None and seen >= max_samples:
                return
            # a fixed batch dimension cannot be cut short; a dynamic one stops exactly at max_samples
            stop = start + step if fixed or max_samples is None else min(start + step, start + max_samples - seen)
            batch = {k: np.ascontiguousarray(v[start:stop]) for k, v in feed.items()}
            seen += next(iter(batch.values())).shape[0]
            yield batch
            if max_samples is not None and seen >= max_samples:
                return  # without pulling (and validating) one more feed from the source


def open_calibration(source: Any, model: onnx.ModelProto, *, batch_size: int = DEFAULT_BATCH,
                     max_samples: int | None = None) -> "CalibrationStream":
    """A re-iterable, validated view over ``source`` for ``model``'s inputs."""
    if source is None:
        raise CalibrationError("no calibration data given (pass --calib FILE_OR_DIR)")
    return CalibrationStream(source, InputSpec.from_model(model), batch_size, max_samples)


class CalibrationStream:
    """Iterating yields validated batches; iterating again starts over (where the source allows it)."""

    def __init__(self, source: Any, specs: list[InputSpec], batch_size: int, max_samples: int | None) -> None:
        self.source, self.specs, self.batch_size, self.max_samples = source, specs, batch_size, max_samples

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        empty = True
        for batch in iter_batches(self.source, self.specs, batch_size=self.batch_size, max_samples=self.max_samples):
            empty = False
            yield batch
        if empty:
            where = f"{os.fspath(self.source)}: " if isinstance(self.source, (str, os.PathLike)) else ""
            raise CalibrationError(f"{where}calibration data is empty: no samples were read")
