"""Loading models with clear errors, and writing outputs atomically (never a half-written file)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from wqcompile.errors import ModelLoadError, OutputError, UnsupportedModelError

# Default-domain opsets our passes understand (Conv/Gemm/MatMul/Relu/Clip semantics checked against these).
MIN_OPSET, MAX_OPSET = 7, 23


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load and check an ONNX model; every failure is a ModelLoadError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such model file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelLoadError(f"{path}: cannot read ({err.strerror})") from None
    if not data:
        raise ModelLoadError(f"{path}: file is empty, not an ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:  # protobuf's DecodeError and friends
        raise ModelLoadError(f"{path}: not a valid ONNX model (protobuf parse failed: {type(err).__name__})") from None
    if not model.graph.node and not model.graph.input:
        raise ModelLoadError(f"{path}: not an ONNX model (no graph)")
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as err:
            raise ModelLoadError(f"{path}: external weight data could not be loaded: {err}") from None
    bad = _invalid_string_field(model, "model")
    if bad is not None:
        raise ModelLoadError(f"{path}: corrupted model: string field {bad} is not valid UTF-8")
    check_opset(model, path)
    try:
        onnx.checker.check_model(model)
    except Exception as err:
        # checker messages span lines (the node is named on the second one): keep all of it, on one line
        text = " ".join(str(err).split()) or type(err).__name__
        raise ModelLoadError(f"{path}: fails onnx.checker: {text}") from None
    return model


def _invalid_string_field(msg, where: str) -> str | None:
    """The first string field that is not valid UTF-8 (protobuf then hands back bytes), e.g. ``model.graph.node[3].name``."""
    for field in msg.DESCRIPTOR.fields:
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        if field.type == field.TYPE_STRING:
            values = getattr(msg, field.name) if repeated else [getattr(msg, field.name)]
            for i, value in enumerate(values):
                if isinstance(value, bytes):
                    return f"{where}.{field.name}" + (f"[{i}]" if repeated else "")
        elif field.type == field.TYPE_MESSAGE:
            subs = getattr(msg, field.name) if repeated else ([getattr(msg, field.name)] if msg.HasField(field.name) else [])
            for i, sub in enumerate(subs):
                bad = _invalid_string_field(sub, f"{where}.{field.name}" + (f"[{i}]" if repeated else ""))
                if bad is not None:
                    return bad
    return None


def check_opset(model: onnx.ModelProto, where: object) -> int:
    opset = next((o.version for o in model.opset_import if o.domain in (None, "", "ai.onnx")), None)
    if opset is None:
        raise UnsupportedModelError(f"{where}: the model imports no default-domain opset")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedModelError(f"{where}: opset {opset} is not supported (wqcompile handles opsets {MIN_OPSET}..{MAX_OPSET})")
    return opset


def check_output_path(output: str | os.PathLike, *inputs: str | os.PathLike) -> Path:
    """Refuse an output that would overwrite an input, or that cannot be written."""
    output = Path(output)
    for src in inputs:
        if src is not None and output.resolve() == Path(src).resolve():
            raise OutputError(f"{output}: output path is the same as the input {src}; refusing to overwrite it")
    parent = output.resolve().parent
    if output.is_dir():
        raise OutputError(f"{output}: output path is a directory")
    if not parent.is_dir():
        raise OutputError(f"{output}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{output}: output directory {parent} is not writable")
    return output


def check_output_dir(path: str | os.PathLike | None, what: str) -> None:
    """Fail before any work is done (so nothing is written) if ``path`` cannot become a writable directory."""
    if path is None:
        return
    existing = Path(path).resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{path}: cannot create the {what} directory: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot create the {what} directory: {existing} is not writable")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place: readers see the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def serialize_model(model: onnx.ModelProto, path: str | os.PathLike) -> bytes:
    """Deterministic bytes of ``model`` (the same model always gives the same bytes)."""
    data = model.SerializeToString(deterministic=True)
    if len(data) >= 2**31:
        raise OutputError(f"{path}: compiled model is {len(data)} bytes, over protobuf's 2 GB limit")
    return data


def save_model_atomic(model: onnx.ModelProto, path: str | os.PathLike) -> int:
    """Serialize deterministically and write atomically; returns the byte size."""
    data = serialize_model(model, path)
    write_bytes_atomic(path, data)
    return len(data)
