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


# session-config key that marks options this module registered the library on: onnxruntime refuses a session whose
# options list the same custom-op domain twice ("Domain already set in registry"), so options passed to a second
# InferenceSession must not be registered again
_REGISTERED_KEY = "wqcompile.ops_library"


def session_options(sess_options: ort.SessionOptions | None = None) -> ort.SessionOptions:
    """``sess_options`` (or fresh options) with the library registered, once per options object."""
    options = sess_options if sess_options is not None else ort.SessionOptions()
    library = get_library_path()
    try:
        registered = options.get_session_config_entry(_REGISTERED_KEY)
    except RuntimeError:  # onnxruntime's answer for a key that was never set
        registered = None
    if registered is None:
        options.register_custom_ops_library(library)
        options.add_session_config_entry(_REGISTERED_KEY, library)
    elif registered != library:
        raise ValueError(f"these SessionOptions already have the wqcompile library {registered!r} registered; "
                         f"a session cannot load a second one ({library!r}): pass fresh SessionOptions")
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


ENV_NO_FUSION = "WQCOMPILE_NO_FUSION"


def node_attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of ``node``'s attribute ``name``, or ``default`` when it has none."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _poolable(pool: onnx.NodeProto) -> bool:
    """A MaxPool QConvMaxPool can take over: 2-D, no indices output, explicit (or VALID) pads each smaller than the
    kernel, dilation 1, ceil_mode 0, so every window holds at least one tap."""
    k = list(node_attr(pool, "kernel_shape", []) or [])
    if len(k) != 2 or min(k) < 1 or (len(pool.output) > 1 and pool.output[1]):
        return False
    auto_pad = node_attr(pool, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pads = list(node_attr(pool, "pads", [0, 0, 0, 0]) or [0, 0, 0, 0])
    if auto_pad not in ("NOTSET", "", "VALID") or len(pads) != 4:
        return False
    if auto_pad == "VALID":
        pads = [0, 0, 0, 0]
    strides = list(node_attr(pool, "strides", [1, 1]) or [1, 1])
    dil = list(node_attr(pool, "dilations", [1, 1]) or [1, 1])
    return (node_attr(pool, "ceil_mode", 0) == 0 and dil == [1, 1] and len(strides) == 2 and min(strides) >= 1
            and all(0 <= pads[d] < k[d % 2] for d in range(4)))


def _consumer_indices(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Tensor name -> indices of the nodes that read it (in graph order)."""
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(graph.node):
        for name in n.input:
            if name:
                consumers.setdefault(name, []).append(i)
    return consumers


def with_qconv_maxpool(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy where each QConv with level output (thresholds) whose only consumer is a 2-D MaxPool runs as the
    library's ``QConvMaxPool``: the accumulators are pooled, then quantized once per pooled output. Exact, because
    ``level = #{j : T_j <= acc}`` is non-decreasing in acc (max commutes with it). Returns (model, nodes fused)."""
    graph = model.graph
    consumers = _consumer_indices(graph)
    outputs = {o.name for o in graph.output}
    pairs = []
    for i, n in enumerate(graph.node):
        if not (n.domain == DOMAIN and n.op_type == "QConv" and len(n.input) >= 6 and n.input[5]):
            continue
        if len(n.input) >= 7 and n.input[6]:
            continue        # a row scale applies before the bias: the pooled raw accumulators carry it (not fused)
        y = n.output[0]
        users = consumers.get(y, [])
        if y in outputs or len(users) != 1:
            continue
        pool = graph.node[users[0]]
        if pool.domain in ("", "ai.onnx") and pool.op_type == "MaxPool" and pool.input[0] == y and _poolable(pool):
            pairs.append((i, users[0]))

    def fuse(copy: onnx.GraphProto, pair: tuple[int, int]) -> tuple[set[int], set[str]]:
        i, j = pair
        conv, pool = copy.node[i], copy.node[j]
        k = list(node_attr(pool, "kernel_shape"))
        auto_pad = node_attr(pool, "auto_pad", b"NOTSET")
        pads = [0, 0, 0, 0] if auto_pad in (b"VALID", "VALID") else list(node_attr(pool, "pads", [0, 0, 0, 0]) or [0, 0, 0, 0])
        conv.op_type = "QConvMaxPool"
        conv.attribute.extend([onnx.helper.make_attribute("pool_kernel_shape", k),
                               onnx.helper.make_attribute("pool_strides", list(node_attr(pool, "strides", [1, 1]) or [1, 1])),
                               onnx.helper.make_attribute("pool_pads", pads)])
        inner = conv.output[0]
        conv.output[0] = pool.output[0]
        return {j}, {inner}

    return _apply_fusions(model, pairs, fuse)


THREAD_HINTED_OPS = ("QConv", "QConvMaxPool", "QConvAddQRelu", "QConvAddDecodeQRelu")


def with_intra_op_threads(model: onnx.ModelProto, intra_op_threads: int) -> tuple[onnx.ModelProto, int]:
    """A copy where every convolution kernel of ours (``THREAD_HINTED_OPS``) carries ``intra_op_threads``, the
    session's intra-op thread count, which only picks how the kernel splits its work (0: unknown, nothing written).
    Returns (model, nodes changed)."""
    if not intra_op_threads:
        return model, 0
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    changed = 0
    for node in copy.graph.node:
        if node.domain == DOMAIN and node.op_type in THREAD_HINTED_OPS:
            kept = [a for a in node.attribute if a.name != "intra_op_threads"]
            del node.attribute[:]
            node.attribute.extend(kept + [onnx.helper.make_attribute("intra_op_threads", int(intra_op_threads))])
            changed += 1
    return (copy, changed) if changed else (model, 0)


def with_add_qrelu(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy where each float ``Add`` whose only consumer is a ``QRelu`` (residual joins) runs with it as the
    library's ``AddQRelu``, or ``AddDecodeQRelu`` when one addend is a ``QDecode`` read only by that Add (the
    decode is folded in): one pass, no float sum or decoded tensor in memory. Exact: the same float32 additions,
    table lookups and quantizer. Returns (model, Add nodes fused)."""
    graph = model.graph
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    consumers = _consumer_indices(graph)
    outputs = {o.name for o in graph.output}

    def sole_user(name: str, user: int) -> bool:
        return name not in outputs and consumers.get(name, []) == [user]

    plans = []   # (add index, qrelu index, qdecode index or None, input of A, index of B in the Add)
    for i, n in enumerate(graph.node):
        if n.domain not in ("", "ai.onnx") or n.op_type != "Add" or len(n.input) != 2 or not n.output[0]:
            continue
        users = consumers.get(n.output[0], [])
        if n.output[0] in outputs or len(users) != 1:
            continue
        q = graph.node[users[0]]
        if q.domain != DOMAIN or q.op_type != "QRelu" or q.input[0] != n.output[0] or len(q.input) != 2:
            continue
        dec = None
        for side in (1, 0):
            j = producer.get(n.input[side])
            if j is not None:
                d = graph.node[j]
                if (d.domain == DOMAIN and d.op_type == "QDecode" and len(d.input) == 2 and d.input[1]
                        and sole_user(n.input[side], i) and n.input[0] != n.input[1]):
                    dec = (j, side)
                    break
        plans.append((i, users[0], dec))

    def fuse(copy: onnx.GraphProto, plan) -> tuple[set[int], set[str]]:
        i, qi, dec = plan
        add, q = copy.node[i], copy.node[qi]
        thresholds, y = q.input[1], q.output[0]
        drop, gone = {i}, {add.output[0]}
        if dec is None:
            inputs, op = [add.input[0], add.input[1], thresholds], "AddQRelu"
        else:
            j, side = dec
            d = copy.node[j]
            inputs, op = [add.input[1 - side], d.input[0], thresholds, d.input[1]], "AddDecodeQRelu"
            drop.add(j)
            gone.add(d.output[0])
        q.CopyFrom(onnx.helper.make_node(op, inputs, [y], name=(q.name or add.name) + ".fused", domain=DOMAIN))
        return drop, gone

    return _apply_fusions(model, plans, fuse)


def _static_shape(graph: onnx.GraphProto, name: str) -> list[int] | None:
    """The shape of tensor `name` when the graph states every dimension as a number, else None."""
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            dims = vi.type.tensor_type.shape.dim
            return [d.dim_value for d in dims] if all(d.HasField("dim_value") for d in dims) else None
    return None


def with_qconv_add_qrelu(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy where each float-output QConv (no thresholds, not depthwise) whose only reader is an ``AddQRelu`` or
    the A addend of an ``AddDecodeQRelu`` (run :func:`with_add_qrelu` first) runs with it as the library's
    ``QConvAddQRelu`` / ``QConvAddDecodeQRelu``: the QConv's inputs (padded to 7), then B, the thresholds and (decode)
    the table. The tile's float edge is added to B and quantized while in cache; only the levels are written.
    Exact: the same float32 edge values, the same float32 additions and quantizer. Shapes the graph states to differ
    are left alone (the kernel also takes a broadcasting B, through the AddQRelu pass). Returns (model, fused)."""
    graph = model.graph
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    consumers = _consumer_indices(graph)
    outputs = {o.name for o in graph.output}

    def float_gemm_conv(name: str, user: int) -> int | None:
        i = producer.get(name)
        if i is None or name in outputs or consumers.get(name, []) != [user]:
            return None
        c = graph.node[i]
        if c.domain != DOMAIN or c.op_type != "QConv" or len(c.input) > 7 or (len(c.input) >= 6 and c.input[5]):
            return None
        w_shape = list(node_attr(c, "w_shape", []) or [])
        if len(w_shape) != 4 or (w_shape[1] == 1 and w_shape[0] == node_attr(c, "group", 1)):
            return None      # depthwise: not on the GEMM path
        return i

    plans = []   # (join index, conv index, input index of B in the join)
    for i, n in enumerate(graph.node):
        if n.domain != DOMAIN or n.op_type not in ("AddQRelu", "AddDecodeQRelu"):
            continue
        for side in ((0, 1) if n.op_type == "AddQRelu" else (0,)):
            c = float_gemm_conv(n.input[side], i)
            if c is None:
                continue
            sa, sb = _static_shape(graph, n.input[side]), _static_shape(graph, n.input[1 - side])
            if sa is not None and sb is not None and sa != sb:
                continue     # broadcasting: nothing gained
            plans.append((i, c, 1 - side))
            break

    def fuse(copy: onnx.GraphProto, plan: tuple[int, int, int]) -> tuple[set[int], set[str]]:
        i, c, b_side = plan
        join, conv = copy.node[i], copy.node[c]
        op = "QConvAddDecodeQRelu" if join.op_type == "AddDecodeQRelu" else "QConvAddQRelu"
        inputs = list(conv.input) + [""] * (7 - len(conv.input)) + [join.input[b_side]] + list(join.input[2:])
        fused = onnx.helper.make_node(op, inputs, [join.output[0]], name=(conv.name or join.name) + ".join",
                                      domain=DOMAIN)
        fused.attribute.extend(conv.attribute)
        inner = conv.output[0]
        join.CopyFrom(fused)     # in the join's place: every input is ready there
        return {c}, {inner}

    return _apply_fusions(model, plans, fuse)


def _apply_fusions(model: onnx.ModelProto, plans: list, fuse) -> tuple[onnx.ModelProto, int]:
    """The shared tail of the fusion rewrites: ``(model, 0)`` when there is nothing to fuse, else a copy where
    ``fuse(copy, plan)`` has rewritten each plan in place (node indices stay valid until the end) and returned the
    node indices it made redundant and the tensors no longer produced; those nodes and their value_info go last."""
    if not plans:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    drop: set[int] = set()
    gone: set[str] = set()
    for plan in plans:
        d, g = fuse(out.graph, plan)
        drop |= d
        gone |= g
    for vi in [vi for vi in out.graph.value_info if vi.name in gone]:
        out.graph.value_info.remove(vi)
    kept = [n for idx, n in enumerate(out.graph.node) if idx not in drop]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    return out, len(plans)


def _model_arg(path_or_model: Any, rewrite: bool, intra_op_threads: int = 0) -> str | bytes:
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
        fused = 0
        if not os.environ.get(ENV_NO_FUSION):
            model, fused = with_qconv_maxpool(model)
            model, added = with_add_qrelu(model)
            fused += added
            model, added = with_qconv_add_qrelu(model)
            fused += added
        model, changed = with_level_maxpool(model)
        changed += fused
        model, hinted = with_intra_op_threads(model, intra_op_threads)
        changed += hinted
        if not changed and not isinstance(path_or_model, onnx.ModelProto):
            return path_or_model if isinstance(path_or_model, (bytes, bytearray)) else os.fspath(path_or_model)
    return model.SerializeToString()


class InferenceSession(ort.InferenceSession):
    """``onnxruntime.InferenceSession`` with the ``ai.wqcompile`` kernels registered.

    ``path_or_model`` may be a path, serialized bytes or an ``onnx.ModelProto``; ``sess_options`` (registered in
    place) and ``providers`` (default ``["CPUExecutionProvider"]``) behave as in onnxruntime. With ``rewrite``
    (default) a QConv with level output feeding only a MaxPool runs as the library's exact ``QConvMaxPool`` (see
    :func:`with_qconv_maxpool`), an Add feeding only a QRelu as ``AddQRelu``/``AddDecodeQRelu`` (see
    :func:`with_add_qrelu`), a float-output QConv feeding only such a join as ``QConvAddQRelu`` /
    ``QConvAddDecodeQRelu`` (see :func:`with_qconv_add_qrelu`; ``WQCOMPILE_NO_FUSION=1`` turns these fusions off) and the other MaxPool nodes over
    level tensors as its exact ``LevelMaxPool`` (see :func:`with_level_maxpool`); the model passed in is not
    modified.
    """

    def __init__(self, path_or_model: Any, sess_options: ort.SessionOptions | None = None,
                 providers: Sequence[str] | None = None, *, rewrite: bool = True, **kwargs: Any) -> None:
        options = session_options(sess_options)
        super().__init__(_model_arg(path_or_model, rewrite, options.intra_op_num_threads), sess_options=options,
                         providers=list(providers) if providers is not None else ["CPUExecutionProvider"], **kwargs)
