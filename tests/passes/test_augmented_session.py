"""augmented_session: fetch intermediate tensors from a pruned copy of the model, same values as the whole model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tests.model_factory import calib_data, tiny_cnn
from wqcompile.passes.calibrate import _needed_nodes, augmented_session


def test_pruned_session_gives_the_same_tensors_and_only_needs_their_prefix():
    model, x = tiny_cnn(), calib_data(8)
    names = [n.output[0] for n in model.graph.node]
    whole = augmented_session(model, names)
    for name in names:
        pruned = augmented_session(model, [name])
        assert [o.name for o in pruned.get_outputs()] == [name]
        np.testing.assert_array_equal(pruned.run([name], x)[0], whole.run([name], x)[0])
    first = model.graph.node[0].output[0]
    assert [n.name for n in _needed_nodes(model.graph, [first])] == [model.graph.node[0].name]


def test_initializers_listed_as_inputs_are_dropped_with_their_nodes():
    w1, w2 = (numpy_helper.from_array(np.full((2, 2), v, np.float32), n) for v, n in ((2.0, "w1"), (3.0, "w2")))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="m1"),
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="m2")]
    info = lambda n, shape=(1, 2): helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shape))   # noqa: E731
    graph = helper.make_graph(nodes, "g", [info("x"), info("w1", (2, 2)), info("w2", (2, 2))], [info("y")], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=3)
    s = augmented_session(model, ["a"])
    assert {i.name for i in s.get_inputs()} == {"x"}           # w2 went with m2; w1 is an initializer
    np.testing.assert_array_equal(s.run(["a"], {"x": np.ones((1, 2), np.float32)})[0], [[4.0, 4.0]])
