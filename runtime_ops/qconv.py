"""QConv: a 2-D convolution with packed codebook weights and integer accumulation (docs/op-contract.md)."""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

from wqcompile.runtime_ops.fixed_point import ACC_LIMIT, accumulator_bound
from wqcompile.runtime_ops.integer_core import (
    check_bias, check_row_scale, exact_int_matmul, input_mantissas, output_edge, weight_mantissa_matrix,
)
from wqcompile.runtime_ops.schema import DOMAIN, Attr, OpDef, Port

QCONV = OpDef(
    name="QConv",
    inputs=(
        Port("X", "T1", "float32 activations or uint8 level indices, [N, C, H, W]"),
        Port("W", "tensor(uint8)", "packed b-bit codebook indices of the [M, C/group, kH, kW] weight"),
        Port("codebook", "tensor(int16)", "[Gc, 2^b] codebook mantissas; value = C · 2^-w_shift"),
        Port("x_table", "tensor(int16)", "level → mantissa table when X is uint8", optional=True),
        Port("bias", "tensor(int32)", "[M] bias in accumulator units", optional=True),
        Port("thresholds", "tensor(int32)", "[Gc, L-1] fused output quantizer (uint8 output)", optional=True),
        Port("row_scale", "tensor(int32)", "[M] per-output-channel scale r · 2^-22 of one shared codebook",
             optional=True),
    ),
    outputs=(Port("Y", "T2", "float32 or uint8 level indices, [N, M, H', W']"),),
    attrs=(
        Attr("w_bits", "int", "bits per packed weight index, 1..8"),
        Attr("w_shape", "ints", "[M, C/group, kH, kW]"),
        Attr("w_shift", "ints", "per codebook row: value = mantissa · 2^-w_shift"),
        Attr("x_shift", "int", "input mantissa = x · 2^x_shift", 0),
        Attr("x_max", "int", "float inputs saturate at ±x_max", 32767),
        Attr("group", "int", "", 1),
        Attr("strides", "ints", "", [1, 1]),
        Attr("pads", "ints", "[top, left, bottom, right]", [0, 0, 0, 0]),
        Attr("dilations", "ints", "", [1, 1]),
        Attr("auto_pad", "string", "NOTSET, SAME_UPPER, SAME_LOWER or VALID", "NOTSET"),
    ),
    type_constraints=(("T1", ("tensor(float)", "tensor(uint8)"), ""), ("T2", ("tensor(float)", "tensor(uint8)"), "")),
    doc="Conv(X, codebook[W]) + bias with int32 accumulation; float or fused log-quantized output.",
)

# Reference im2col works on blocks of this many column entries (float64) to bound its memory.
_IM2COL_BLOCK = 1 << 24


def resolve_pads(auto_pad: str, in_hw: tuple[int, int], k_hw: tuple[int, int], strides, dilations, pads) -> list[int]:
    """Explicit [top, left, bottom, right] pads from ONNX Conv's auto_pad rules."""
    if auto_pad in ("", "NOTSET"):
        return list(pads)
    if auto_pad == "VALID":
        return [0, 0, 0, 0]
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    begin, end = [], []
    for size, k, s, d in zip(in_hw, k_hw, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin + end


def qconv_reference(x, w, codebook, x_table=None, bias=None, thresholds=None, row_scale=None, *, w_bits, w_shape,
                    w_shift, x_shift=0, x_max=32767, group=1, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                    auto_pad="NOTSET", node="QConv"):
    """Numpy reference of QConv, exactly per docs/op-contract.md."""
    op = "QConv"
    if len(w_shape) != 4:
        raise ValueError(f"{op} {node!r}: w_shape must have 4 entries [M, C/group, kH, kW], got {list(w_shape)}")
    m, cg, kh, kw = (int(v) for v in w_shape)
    if x.ndim != 4:
        raise ValueError(f"{op} {node!r}: input must be 4-D [N, C, H, W], got shape {list(x.shape)}")
    n, c, h, wd = x.shape
    if group < 1 or m % group or min(m, cg, kh, kw) < 1:
        raise ValueError(f"{op} {node!r}: w_shape {list(w_shape)} needs positive sizes and M a multiple of group {group}")
    if c != cg * group:
        raise ValueError(f"{op} {node!r}: input has {c} channels but w_shape {list(w_shape)} with group {group} needs {cg * group}")
    if len(strides) != 2 or len(dilations) != 2 or len(pads) != 4 or min(*strides, *dilations) < 1 or min(pads) < 0:
        raise ValueError(f"{op} {node!r}: bad strides {list(strides)} / dilations {list(dilations)} / pads {list(pads)}")
    try:
        pads = resolve_pads(auto_pad, (h, wd), (kh, kw), strides, dilations, pads)
    except ValueError as err:
        raise ValueError(f"{op} {node!r}: {err}") from None
    wm, row_of = weight_mantissa_matrix(op, node, w, codebook, w_bits, m, cg * kh * kw, list(w_shift))
    bias = check_bias(op, node, bias, m)
    row_scale = check_row_scale(op, node, row_scale, m, codebook.shape[0])
    xi = input_mantissas(op, node, x, x_table, x_shift, x_max)
    x_bound = int(x_max) if x.dtype == np.float32 else int(np.abs(x_table.astype(np.int64)).max())
    if accumulator_bound(wm, x_bound, bias) > ACC_LIMIT - 1:
        raise ValueError(f"{op} {node!r}: weights, inputs and bias can overflow the int32 accumulator bound 2^30")
    eh, ew = (kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1
    oh = (h + pads[0] + pads[2] - eh) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - ew) // strides[1] + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"{op} {node!r}: kernel {kh}x{kw} does not fit the padded {h}x{wd} input")
    xp = np.pad(xi, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    mg = m // group
    acc = np.empty((n, m, oh * ow), dtype=np.int64)
    per_sample = cg * kh * kw * oh * ow
    block = max(1, _IM2COL_BLOCK // max(per_sample, 1))
    for start in range(0, n, block):
        xs = xp[start:start + block]
        # windows[b, c, oh, ow, kh, kw]: dilation by slicing the full extent, stride by slicing the windows
        windows = np.lib.stride_tricks.sliding_window_view(xs, (eh, ew), axis=(2, 3))
        windows = windows[:, :, :: strides[0], :: strides[1], :: dilations[0], :: dilations[1]][:, :, :oh, :ow]
        for g in range(group):
            cols = windows[:, g * cg:(g + 1) * cg]                         # [b, cg, oh, ow, kh, kw]
            cols = cols.transpose(0, 1, 4, 5, 2, 3).reshape(xs.shape[0], cg * kh * kw, oh * ow)
            acc[start:start + block, g * mg:(g + 1) * mg] = exact_int_matmul(wm[g * mg:(g + 1) * mg], cols)
    acc = acc.reshape(n, m, oh, ow)
    return output_edge(op, node, acc, 1, row_of, list(w_shift), x_shift, thresholds, bias, row_scale)


class QConv(OpRun):
    """Reference kernel: ``Y = edge(conv(X, codebook[W]), bias, row_scale)`` in exact integers."""

    op_domain = DOMAIN
    op_schema = QCONV.to_onnx_schema()

    def _run(self, x, w, codebook, x_table=None, bias=None, thresholds=None, row_scale=None, *, w_bits=None,
             w_shape=None, w_shift=None, x_shift=0, x_max=32767, group=1, strides=None, pads=None, dilations=None, auto_pad="NOTSET"):
        auto = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        y = qconv_reference(x, w, codebook, x_table, bias, thresholds, row_scale, w_bits=w_bits, w_shape=w_shape,
                            w_shift=w_shift, x_shift=x_shift, x_max=x_max, group=group, strides=strides or (1, 1),
                            pads=pads or (0, 0, 0, 0), dilations=dilations or (1, 1), auto_pad=auto,
                            node=self.onnx_node.name)
        return (y,)
