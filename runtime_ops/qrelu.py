"""QRelu: log-quantize float activations to uint8 level indices (ReLU and Clip(0, m) folded into the thresholds)."""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

from wqcompile.runtime_ops.schema import DOMAIN, OpDef, Port

QRELU = OpDef(
    name="QRelu",
    inputs=(
        Port("X", "tensor(float)", "float32 pre-activations"),
        Port("thresholds", "tensor(float)", "[L-1] float32 thresholds, level = Σ [x ≥ T_j]"),
    ),
    outputs=(Port("Y", "tensor(uint8)", "level indices"),),
    attrs=(),
    type_constraints=(),
    doc="level = Σ_j [x ≥ T_j] on float32 (NaN → 0); the compiler stores thresholds that make this exact.",
)


def qrelu_reference(x, thresholds, node="QRelu"):
    if x.dtype != np.float32:
        raise ValueError(f"QRelu {node!r}: input must be float32, got {x.dtype}")
    if thresholds.dtype != np.float32 or thresholds.ndim != 1 or not 1 <= thresholds.size <= 255:
        raise ValueError(f"QRelu {node!r}: thresholds must be float32 [L-1] with L ≤ 256, got {thresholds.dtype} {list(thresholds.shape)}")
    if np.isnan(thresholds).any() or np.any(np.diff(thresholds) < 0):
        raise ValueError(f"QRelu {node!r}: thresholds must be non-decreasing and not NaN")
    levels = np.asarray(np.searchsorted(thresholds, x, side="right"), dtype=np.uint8)   # asarray: 0-D inputs too
    levels[np.isnan(x)] = 0      # NaN compares false with every threshold
    return levels


class QRelu(OpRun):
    """Reference kernel: ``Y = Σ_j [X ≥ T_j]``."""

    op_domain = DOMAIN
    op_schema = QRELU.to_onnx_schema()

    def _run(self, x, thresholds):
        return (qrelu_reference(x, thresholds, self.onnx_node.name),)
