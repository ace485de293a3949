"""QDecode: uint8 level indices → float32 level values, in front of every consumer that is not ours."""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

from wqcompile.runtime_ops.schema import DOMAIN, OpDef, Port

QDECODE = OpDef(
    name="QDecode",
    inputs=(
        Port("X", "tensor(uint8)", "level indices"),
        Port("table", "tensor(float)", "[L] float32 level values"),
    ),
    outputs=(Port("Y", "tensor(float)", "table[X]"),),
    attrs=(),
    type_constraints=(),
    doc="Y = table[X]; an index ≥ L is an error.",
)


def qdecode_reference(x, table, node="QDecode"):
    if x.dtype != np.uint8:
        raise ValueError(f"QDecode {node!r}: input must be uint8 levels, got {x.dtype}")
    if table.dtype != np.float32 or table.ndim != 1 or not 1 <= table.size <= 256:
        raise ValueError(f"QDecode {node!r}: table must be float32 [L] with 1 ≤ L ≤ 256, got {table.dtype} {list(table.shape)}")
    if x.size and int(x.max()) >= table.size:
        raise ValueError(f"QDecode {node!r}: level {int(x.max())} is out of range for a {table.size}-entry table")
    return table[x]


class QDecode(OpRun):
    """Reference kernel: ``Y = table[X]``."""

    op_domain = DOMAIN
    op_schema = QDECODE.to_onnx_schema()

    def _run(self, x, table):
        return (qdecode_reference(x, table, self.onnx_node.name),)
