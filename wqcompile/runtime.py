"""Deploy compiled models on onnxruntime with the C++ kernels of the ``ai.wqcompile`` ops (``libwq_ops.so``).

Example::

    from wqcompile.runtime import InferenceSession
    sess = InferenceSession("model.wq.onnx")                 # registers the library, then onnxruntime as usual
    (logits,) = sess.run(None, {"input": x})

The library is built and installed with the package (``wqcompile/_lib/libwq_ops.so``) when a C++ compiler and the
onnxruntime headers are available; ``WQCOMPILE_OPS_LIBRARY=/path/libwq_ops.so`` overrides where it is loaded from
(e.g. a sanitizer build). Without it, :class:`wqcompile.reference.ReferenceSession` runs the same models exactly.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import onnx
import onnxruntime as ort

LIBRARY_NAME = "libwq_ops.so"
ENV_LIBRARY = "WQCOMPILE_OPS_LIBRARY"
HOW_TO_BUILD = (
    "build it with `bash scripts/fetch_ort_headers.sh` (onnxruntime headers from Debian's libonnxruntime-dev) "
    "followed by `pip install .` (or `bash scripts/setup.sh`), or pass your own headers with "
    "CMAKE_ARGS=\"-DORT_INCLUDE_DIR=/path/to/include/onnxruntime\"; set WQCOMPILE_OPS_LIBRARY to use a library "
    "built elsewhere. Without it, wqcompile.reference.ReferenceSession runs compiled models with the numpy reference."
)


def _candidates() -> list[Path]:
    """Where an installed library can be: the package's _lib/ (wheel) and, for an editable install, every
    location the package is served from (scikit-build-core's redirect installs CMake outputs into site-packages)."""
    here = Path(__file__).resolve().parent
    dirs = [here / "_lib"]
    spec = importlib.util.find_spec("wqcompile")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        dirs.append(Path(loc) / "_lib")
    for entry in sys.path:
        if entry:
            dirs.append(Path(entry) / "wqcompile" / "_lib")
    seen, out = set(), []
    for d in dirs:
        p = d / LIBRARY_NAME
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out


def get_library_path() -> str:
    """Absolute path of the custom-op library; ``FileNotFoundError`` saying how to build it if there is none."""
    override = os.environ.get(ENV_LIBRARY)
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"{ENV_LIBRARY}={override}: no such file")
        return str(Path(override).resolve())
    for path in _candidates():
        if path.is_file():
            return str(path)
    raise FileNotFoundError(f"the wqcompile custom-op library ({LIBRARY_NAME}) is not built; {HOW_TO_BUILD}")


def is_available() -> bool:
    """True when :func:`get_library_path` finds the library."""
    try:
        get_library_path()
    except FileNotFoundError:
        return False
    return True


def session_options(sess_options: ort.SessionOptions | None = None) -> ort.SessionOptions:
    """``sess_options`` (or fresh options) with the library registered."""
    options = sess_options if sess_options is not None else ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    return options


DOMAIN = "ai.wqcompile"
# ops that pass uint8 level tensors through unchanged (op-contract §5)
_LEVEL_PASSTHROUGH = {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity"}


def _level_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of the uint8 level tensors: outputs of QRelu, of fused QConv/QGemm (with thresholds), of
    LevelMaxPool, and what the pass-through ops make of them."""
    levels = {vi.name for vi in model.graph.input if vi.type.tensor_type.elem_type == onnx.TensorProto.UINT8}
    for node in model.graph.node:
        if node.domain == DOMAIN:
            fused = node.op_type in ("QConv", "QGemm") and len(node.input) >= 6 and node.input[5] != ""
            if fused or node.op_type in ("QRelu", "LevelMaxPool"):
                levels.update(o for o in node.output[:1] if o)
        elif node.domain in ("", "ai.onnx") and node.op_type in _LEVEL_PASSTHROUGH and node.input and node.input[0] in levels:
            levels.update(o for o in node.output[:1] if o)
    return levels


def with_level_maxpool(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy where every 2-D MaxPool over a level tensor (and without the indices output) runs as the library's
    ``LevelMaxPool`` (onnxruntime's own uint8 MaxPool is a slow generic loop); the result is identical, since
    max commutes with the monotone quantizer and MaxPool of integers is exact. Returns (model, nodes changed)."""
    levels = _level_tensors(model)
    picks = [i for i, n in enumerate(model.graph.node)
             if n.domain in ("", "ai.onnx") and n.op_type == "MaxPool" and n.input and n.input[0] in levels
             and (len(n.output) == 1 or not n.output[1])
             and any(a.name == "kernel_shape" and len(a.ints) == 2 for a in n.attribute)]
    if not picks:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i in picks:
        node = out.graph.node[i]
        node.op_type, node.domain = "LevelMaxPool", DOMAIN
        del node.output[1:]
    if not any(o.domain == DOMAIN for o in out.opset_import):
        out.opset_import.add(domain=DOMAIN, version=1)
    return out, len(picks)


def _model_arg(path_or_model: Any, rewrite: bool) -> str | bytes:
    if isinstance(path_or_model, onnx.ModelProto):
        model = path_or_model
    elif isinstance(path_or_model, (bytes, bytearray)):
        if not rewrite:
            return bytes(path_or_model)
        model = onnx.load_model_from_string(bytes(path_or_model))
    else:
        path = os.fspath(path_or_model)
        if not rewrite:
            return path
        try:
            model = onnx.load(path, load_external_data=False)
        except Exception:   # noqa: BLE001 - let onnxruntime report an unreadable model in its own words
            return path
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            return path
    if rewrite:
        model, changed = with_level_maxpool(model)
        if not changed and not isinstance(path_or_model, onnx.ModelProto):
            return path_or_model if isinstance(path_or_model, (bytes, bytearray)) else os.fspath(path_or_model)
    return model.SerializeToString()


class InferenceSession(ort.InferenceSession):
    """``onnxruntime.InferenceSession`` with the ``ai.wqcompile`` kernels registered.

    ``path_or_model`` may be a path, serialized bytes or an ``onnx.ModelProto``; ``sess_options`` (registered in
    place) and ``providers`` (default ``["CPUExecutionProvider"]``) behave as in onnxruntime. With ``rewrite``
    (default) MaxPool nodes over level tensors run as the library's exact ``LevelMaxPool`` (see
    :func:`with_level_maxpool`); the model passed in is not modified.
    """

    def __init__(self, path_or_model: Any, sess_options: ort.SessionOptions | None = None,
                 providers: Sequence[str] | None = None, *, rewrite: bool = True, **kwargs: Any) -> None:
        options = session_options(sess_options)
        super().__init__(_model_arg(path_or_model, rewrite), sess_options=options,
                         providers=list(providers) if providers is not None else ["CPUExecutionProvider"], **kwargs)
