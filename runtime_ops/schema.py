"""One definition per op feeds the ONNX schema, the numpy reference, the rewrite passes and the C++ parity tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onnx import defs, helper

DOMAIN = "ai.wqcompile"
OPSET = 1

_OPTION = {
    "single": defs.OpSchema.FormalParameterOption.Single,
    "optional": defs.OpSchema.FormalParameterOption.Optional,
}
_ATTR_TYPE = {
    "int": defs.OpSchema.AttrType.INT,
    "ints": defs.OpSchema.AttrType.INTS,
    "string": defs.OpSchema.AttrType.STRING,
}


@dataclass(frozen=True)
class Port:
    """An input or output: its name, type variable or fixed type, and whether it may be omitted."""

    name: str
    type_str: str
    doc: str = ""
    optional: bool = False


@dataclass(frozen=True)
class Attr:
    """An attribute; ``default`` None means required."""

    name: str
    kind: str            # "int" | "ints" | "string"
    doc: str = ""
    default: Any = None


@dataclass(frozen=True)
class OpDef:
    """The single source of truth for one op of the ``ai.wqcompile`` domain."""

    name: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    attrs: tuple[Attr, ...]
    type_constraints: tuple[tuple[str, tuple[str, ...], str], ...]
    doc: str

    def to_onnx_schema(self) -> defs.OpSchema:
        params = lambda ports: [  # noqa: E731
            defs.OpSchema.FormalParameter(p.name, p.type_str, p.doc, param_option=_OPTION["optional" if p.optional else "single"])
            for p in ports
        ]
        attributes = []
        for a in self.attrs:
            if a.default is None:
                attributes.append(defs.OpSchema.Attribute(a.name, _ATTR_TYPE[a.kind], a.doc, required=True))
            else:
                attributes.append(defs.OpSchema.Attribute(a.name, helper.make_attribute(a.name, a.default), a.doc))
        return defs.OpSchema(
            self.name,
            DOMAIN,
            OPSET,
            self.doc,
            inputs=params(self.inputs),
            outputs=params(self.outputs),
            type_constraints=[(n, list(t), d) for n, t, d in self.type_constraints],
            attributes=attributes,
        )
