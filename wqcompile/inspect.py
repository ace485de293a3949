"""What a compiled model contains: per-layer bits, sizes and data types, read back from the model itself."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import onnx

from wqcompile.model_io import load_model
from wqcompile.runtime_ops import DOMAIN


def inspect_model(path: str | Path) -> dict[str, Any]:
    model = load_model(path)
    meta = {p.key: p.value for p in model.metadata_props}
    inits = {i.name: i for i in model.graph.initializer}
    # every uint8 level tensor an op of ours produces: QRelu outputs and fused QConv/QGemm outputs
    levels = {n.output[0] for n in model.graph.node if n.domain == DOMAIN and n.op_type in ("QRelu", "QConv", "QGemm")
              and (n.op_type == "QRelu" or (len(n.input) > 5 and n.input[5]))}
    layers, other = [], Counter()
    for node in model.graph.node:
        if node.domain != DOMAIN:
            other[node.op_type] += 1
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        row: dict[str, Any] = {"node": node.name, "op": node.op_type}
        if node.op_type in ("QConv", "QGemm"):
            shape = attrs["w_shape"]
            count = 1
            for d in shape:
                count *= d
            packed = inits.get(node.input[1])
            row.update({"w_bits": attrs["w_bits"], "w_shape": list(shape), "weights": count,
                        "packed_bytes": len(packed.raw_data) if packed is not None and packed.raw_data else None,
                        "input": "levels" if len(node.input) > 3 and node.input[3] else "float",
                        "output": f"levels({inits[node.input[5]].dims[-1] + 1})"
                        if len(node.input) > 5 and node.input[5] in inits else "float"})
        elif node.op_type == "QRelu":
            th = inits.get(node.input[1])
            row.update({"input": "float", "output": f"levels({th.dims[0] + 1})" if th is not None else "levels"})
        elif node.op_type == "QDecode":
            row.update({"input": "levels", "output": "float"})
        layers.append(row)
    return {
        "tool_version": meta.get("wqcompile.version"),
        "config": json.loads(meta["wqcompile.config"]) if "wqcompile.config" in meta else None,
        "file_bytes": Path(path).stat().st_size,
        "layers": layers,
        "other_ops": dict(sorted(other.items())),
        "level_tensors": sorted(levels),
    }
