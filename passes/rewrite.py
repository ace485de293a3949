"""RewritePass: Conv / Gemm / MatMul → QConv / QGemm, Relu / Clip(0, m) → fused or QRelu, levels flow between ops.

Activations travel as uint8 level indices between our ops and through ``MaxPool``, ``Flatten``, ``Reshape``,
``Transpose``, ``Squeeze``, ``Unsqueeze`` and ``Identity``; every other consumer (and every graph output) gets a
``QDecode`` that restores the original float tensor under its original name. Ops we do not handle stay untouched.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from wqcompile.errors import PreconditionError
from wqcompile.layers import linear_layer
from wqcompile.level_flow import passes_levels
from wqcompile.lowering import FloatInput, LevelInput, QuantizedOutput, lower_layer, narrow_bits
from wqcompile.operand_width import narrow_layers
from wqcompile.pass_manager import Pass, PassResult
from wqcompile.report import activation_report, weight_numbers
from wqcompile.runtime_ops import DOMAIN
from wqcompile.runtime_ops.fixed_point import float32_thresholds

logger = logging.getLogger(__name__)

CONV_ATTRS = ("group", "strides", "pads", "dilations", "auto_pad")


class RewritePass(Pass):
    """Replaces the chosen layers by ``ai.wqcompile`` ops using the fitted codebooks and activation quantizers."""

    kind = "transform"

    def requires(self, graph, ctx) -> None:
        for needed in ("SelectLayersPass", "FitWeightsPass", "FitActivationsPass"):
            if needed not in ctx.passes_run:
                raise PreconditionError(f"RewritePass needs the results of {needed}: run {needed} first")
        missing = [n for n in ctx.weight_layers if n not in ctx.weights]
        if missing:
            raise PreconditionError(f"RewritePass needs codebooks for {missing[:3]}: run FitWeightsPass first")
        missing = [a.output for a in ctx.act_layers.values() if a.output not in ctx.activations]
        if missing:
            raise PreconditionError(f"RewritePass needs activation parameters for {missing[:3]}: run FitActivationsPass first")

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        graph.toposort()
        narrow = narrow_layers(graph, ctx)   # before the rewrite: the policy reads the FP32 graph's level flow
        tensors = graph.tensors()
        graph_outputs = {t.name for t in graph.outputs}
        acts_by_node = dict(ctx.act_layers)
        fused = {}                      # weight node → act layer folded into its output
        for act in acts_by_node.values():
            pre = tensors[act.input]
            producer = pre.inputs[0] if pre.inputs else None
            if producer is not None and producer.name in ctx.weight_layers and len(pre.outputs) == 1 \
                    and pre.name not in graph_outputs:
                fused[producer.name] = act
        levels: dict[str, tuple[gs.Variable, object]] = {}   # float tensor name → (uint8 level tensor, quantizer)
        new_nodes: list[gs.Node] = []

        def level_var(float_tensor: gs.Tensor) -> gs.Variable:
            return gs.Variable(f"{float_tensor.name}.levels", dtype=np.uint8, shape=float_tensor.shape)

        for node in list(graph.nodes):
            if node.name in acts_by_node:
                act = acts_by_node[node.name]
                quantizer = ctx.activations[act.output]
                out = node.outputs[0]
                if act.output in levels:           # already produced by the fused weight layer
                    pass
                else:
                    q = level_var(out)
                    thresholds = gs.Constant(f"{node.name}.thresholds", float32_thresholds(quantizer.thresholds, act.clip_max))
                    new_nodes.append(gs.Node("QRelu", f"{node.name}.q", domain=DOMAIN,
                                             inputs=[node.inputs[0], thresholds], outputs=[q]))
                    levels[act.output] = (q, quantizer)
                ctx.layer_report.setdefault(node.name, {}).update(activation_report(act, quantizer))
                node.inputs.clear()
                node.outputs.clear()
            elif passes_levels(node, graph, levels):
                q_in, quantizer = levels[node.inputs[0].name]
                out = node.outputs[0]
                q_out = level_var(out)
                node.inputs[0] = q_in
                while len(node.outputs) > 1:      # MaxPool's unused Indices output
                    node.outputs.pop()
                node.outputs[0] = q_out
                levels[out.name] = (q_out, quantizer)
            elif node.name in ctx.weight_layers:
                new_nodes.extend(self._rewrite_weight_layer(node, ctx, tensors, levels, fused.get(node.name), level_var,
                                                            node.name in narrow))
        graph.nodes.extend(new_nodes)
        for name, (q, quantizer) in levels.items():
            original = tensors[name]
            if original.outputs or name in graph_outputs:
                table = gs.Constant(f"{name}.decode_table", np.asarray(quantizer.values, dtype=np.float32))
                graph.nodes.append(gs.Node("QDecode", f"{name}.decode", domain=DOMAIN, inputs=[q, table], outputs=[original]))
        graph.cleanup().toposort()
        return PassResult(graph, bool(ctx.weight_layers or ctx.act_layers))

    def _rewrite_weight_layer(self, node, ctx, tensors, levels, act, level_var, narrow: bool) -> list[gs.Node]:
        layer = linear_layer(node)
        fitted = ctx.weights[node.name]
        x = node.inputs[0]
        extra: list[gs.Node] = []
        if x.name in levels:
            x_in, quantizer = levels[x.name]
            x_desc = LevelInput(np.asarray(quantizer.values, dtype=np.float64))
        else:
            x_in, x_desc = x, FloatInput(float(ctx.stats[x.name].max_abs) if x.name in ctx.stats else 1.0)
        out_desc, out = None, node.outputs[0]
        if act is not None:
            quantizer = ctx.activations[act.output]
            out_desc = QuantizedOutput(np.asarray(quantizer.thresholds, dtype=np.float64), act.clip_max)
            out = level_var(tensors[act.output])
            levels[act.output] = (out, quantizer)
        bias = layer.bias
        if node.name in ctx.bias_corrections:
            bias = ctx.bias_corrections[node.name] + (0.0 if bias is None else bias)
        low = lower_layer(node.name, fitted, bias, x_desc, out_desc, max_bits=narrow_bits(x_desc) if narrow else None)
        if layer.transpose_input:
            transposed = gs.Variable(f"{node.name}.xT", dtype=x_in.dtype)
            extra.append(gs.Node("Transpose", f"{node.name}.transposeA", attrs={"perm": [1, 0]},
                                 inputs=[x_in], outputs=[transposed]))
            x_in = transposed
        empty = gs.Variable.empty
        inputs = [
            x_in,
            gs.Constant(f"{node.name}.W_packed", low.packed),
            gs.Constant(f"{node.name}.codebook", low.codebook),
            gs.Constant(f"{node.name}.x_table", low.x_table) if low.x_table is not None else empty(),
            gs.Constant(f"{node.name}.bias_int", low.bias) if low.bias is not None else empty(),
            gs.Constant(f"{node.name}.thresholds", low.thresholds) if low.thresholds is not None else empty(),
            gs.Constant(f"{node.name}.row_scale", low.row_scale) if low.row_scale is not None else empty(),
        ]
        while inputs[-1].name == "":
            inputs.pop()
        attrs = {"w_bits": low.weight_bits, "w_shape": [int(d) for d in layer.weight_shape], "w_shift": low.w_shift,
                 "x_shift": low.x_shift, "x_max": low.x_max}
        if layer.kind == "conv":
            attrs.update({k: node.attrs[k] for k in CONV_ATTRS if k in node.attrs})
        op = "QConv" if layer.kind == "conv" else "QGemm"
        extra.append(gs.Node(op, f"{node.name}", domain=DOMAIN, attrs=attrs, inputs=inputs, outputs=[out]))
        entry = ctx.layer_report.setdefault(node.name, {})
        entry.update(weight_report(node, fitted, low, x_desc))
        entry["output_tensor"] = act.output if act is not None else out.name
        node.name = f"{node.name}.replaced"
        node.inputs.clear()
        node.outputs.clear()
        return extra


def weight_report(node, fitted, low, x_desc) -> dict:
    return weight_numbers(node.name, node.op, fitted, low, "levels" if isinstance(x_desc, LevelInput) else "float")
