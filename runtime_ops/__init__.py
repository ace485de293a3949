"""The ``ai.wqcompile`` custom ops: one file per op (schema + numpy reference), mirrored by ``src/<op>.cc``.

The three registration tables of wqcompile are explicit: ``OPDEFS`` and ``REFERENCE_OPS`` here, the kernel table
in ``src/register.cc``, and ``default_pipeline()`` in ``wqcompile.passes``. The integer arithmetic is written down
in docs/op-contract.md.
"""

from __future__ import annotations

from onnx import defs

from wqcompile.runtime_ops.qconv import QCONV, QConv
from wqcompile.runtime_ops.qdecode import QDECODE, QDecode
from wqcompile.runtime_ops.qgemm import QGEMM, QGemm
from wqcompile.runtime_ops.qrelu import QRELU, QRelu
from wqcompile.runtime_ops.schema import DOMAIN, OPSET, OpDef

OPDEFS: tuple[OpDef, ...] = (QCONV, QGEMM, QRELU, QDECODE)
REFERENCE_OPS = (QConv, QGemm, QRelu, QDecode)


def register_schemas() -> None:
    """Register our op schemas with onnx so ``onnx.checker`` validates the domain (idempotent)."""
    for opdef in OPDEFS:
        if not defs.has(opdef.name, DOMAIN):
            defs.register_schema(opdef.to_onnx_schema())


__all__ = ["DOMAIN", "OPSET", "OPDEFS", "REFERENCE_OPS", "register_schemas"]
