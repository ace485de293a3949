"""QDecode: ``Y = table[X]`` (op-contract §5), and the QRelu → QDecode chain on NaN / ±Inf / ties."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import wqcompile.runtime_ops as runtime_ops
from tests.ops.onnx_models import check_and_run, one_node_model
from tests.ops.oracles import bits_equal
from wqcompile.runtime_ops.qdecode import qdecode_reference

F32 = np.float32


def test_closed_form():
    table = np.array([0.0, 0.25, 0.5, 1.0], F32)
    x = np.array([[0, 1], [2, 3], [3, 0]], np.uint8)
    got = qdecode_reference(x, table)
    assert got.dtype == np.float32 and got.shape == (3, 2)
    assert got.tolist() == [[0.0, 0.25], [0.5, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize("levels", [1, 2, 16, 128, 256])
def test_every_level_decodes_to_its_exact_float32(levels):
    rng = np.random.default_rng(levels)
    table = np.concatenate([[0.0], np.exp2(rng.uniform(-20, 20, levels - 1))]).astype(F32)
    x = rng.integers(0, levels, (4, 33)).astype(np.uint8)
    x[0, :levels] = np.arange(min(levels, 33))
    want = np.array([[table[v] for v in row] for row in x], F32)
    assert bits_equal(qdecode_reference(x, table), want)


def test_table_bits_pass_through_unchanged():
    table = np.array([-0.0, np.nan, np.inf, 1e-45], F32)
    got = qdecode_reference(np.array([0, 1, 2, 3], np.uint8), table)
    assert bits_equal(got, table)


def test_shapes_are_preserved():
    table = np.array([0.0, 1.0], F32)
    assert qdecode_reference(np.uint8(1).reshape(()), table).shape == ()
    assert qdecode_reference(np.zeros((0, 4), np.uint8), table).shape == (0, 4)


ERRORS = {
    "int8 input": (np.zeros(2, np.int8), np.zeros(2, F32), "uint8"),
    "float input": (np.zeros(2, F32), np.zeros(2, F32), "uint8"),
    "float64 table": (np.zeros(2, np.uint8), np.zeros(2), "table"),
    "2-D table": (np.zeros(2, np.uint8), np.zeros((1, 2), F32), "table"),
    "empty table": (np.zeros(0, np.uint8), np.zeros(0, F32), "table"),
    "257-entry table": (np.zeros(2, np.uint8), np.zeros(257, F32), "table"),
    "level ≥ L": (np.array([0, 4, 1], np.uint8), np.zeros(4, F32), "out of range"),
}


@pytest.mark.parametrize("name", ERRORS)
def test_invalid_inputs_name_op_and_node(name):
    x, table, needle = ERRORS[name]
    with pytest.raises(ValueError, match=r"^QDecode 'dec0': ") as info:
        qdecode_reference(x, table, node="dec0")
    assert needle in str(info.value)


def test_through_onnx():
    table = np.array([0.0, 0.5, 2.0], F32)
    x = np.array([[2, 1, 0]], np.uint8)
    model = one_node_model("QDecode", "dec", x, [("table", table)], {}, np.float32, x.shape)
    assert bits_equal(check_and_run(model, x), np.array([[2.0, 0.5, 0.0]], F32))


def test_qrelu_then_qdecode_chain():
    """NaN → v_0 = 0, +Inf → the top level's value, −Inf → 0, a tie at a threshold goes up."""
    thresholds = np.array([0.75, 1.5, 3.0], F32)
    table = np.array([0.0, 1.0, 2.0, 4.0], F32)
    x = np.array([[np.nan, np.inf, -np.inf, 0.75, 1.5, 1.49, 3.0, -2.0]], F32)
    model = one_node_model("QRelu", "act", x, [("thresholds", thresholds)], {}, np.float32, x.shape)
    relu = model.graph.node[0]
    relu.output[0] = "levels"
    model.graph.node.append(helper.make_node("QDecode", ["levels", "table"], ["Y"], domain=runtime_ops.DOMAIN,
                                             name="decode"))
    model.graph.initializer.append(helper.make_tensor("table", 1, [4], table.tolist()))
    got = check_and_run(model, x)
    assert bits_equal(got, np.array([[0.0, 4.0, 0.0, 1.0, 2.0, 1.0, 4.0, 0.0]], F32))
