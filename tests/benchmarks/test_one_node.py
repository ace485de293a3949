"""benchmarks.one_node: one node of a compiled model timed on its own."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from benchmarks import one_node
from tests import model_factory
from wqcompile.reference import ReferenceSession

pytestmark = pytest.mark.requires_ops_lib


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from wqcompile.api import compile_model
    from wqcompile.config import QuantConfig

    path = tmp_path_factory.mktemp("one_node") / "compiled.onnx"
    onnx.save(compile_model(model_factory.tiny_cnn(), model_factory.calib_data(16),
                            QuantConfig(progress=False, verify_samples=1)).model, path)
    return path


def _node(path, op_type):
    return next(n for n in onnx.load(path).graph.node if n.op_type == op_type)


def test_qgemm_alone_matches_the_reference(compiled):
    node = _node(compiled, "QGemm")
    model, x = one_node.one_node_model(onnx.load(compiled), node.name, 3)
    k = next(a.ints[1] for a in node.attribute if a.name == "w_shape")
    assert x.shape == (3, k)
    from wqcompile.runtime import InferenceSession

    got = InferenceSession(model).run(None, {node.input[0]: x})[0]
    want = ReferenceSession(model).run(None, {node.input[0]: x})[0]
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_main_prints_a_line_per_rows_and_threads(compiled, capsys):
    name = _node(compiled, "QGemm").name
    one_node.main([str(compiled), name, "--rows", "1", "2", "--threads", "1", "2", "--runs", "3", "--repeats", "2",
                   "--env", "WQCOMPILE_NO_NIBBLES=1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"{name} rows {r} threads {t}" for r in (1, 2) for t in (1, 2)]


def test_qconv_needs_its_height_and_width(compiled):
    conv = _node(compiled, "QConv")
    with pytest.raises(SystemExit, match="--hw"):
        one_node.one_node_model(onnx.load(compiled), conv.name, 1)
    model, x = one_node.one_node_model(onnx.load(compiled), conv.name, 2, (12, 12))
    assert x.shape[0] == 2 and x.shape[2:] == (12, 12)
    assert one_node.time_node(model, x, 1, runs=2, repeats=2)[0] > 0


@pytest.mark.parametrize("name, message", [("nope", "no node of that name"), ("flatten", "only our QGemm and QConv")])
def test_bad_node_names_the_problem(compiled, name, message):
    model = onnx.load(compiled)
    if name == "flatten":
        name = next(n.name for n in model.graph.node if n.op_type == "Flatten")
    with pytest.raises(SystemExit, match=message):
        one_node.one_node_model(model, name, 1)
