"""SimulationStream: one forward pass of a model over every calibration batch, run incrementally on request.

``advance(names)`` runs (with onnxruntime) only the nodes that ``names`` need and that have not run yet, as one
*segment*: a small model of those nodes whose inputs are tensors cached from earlier segments (every calibration
batch's value is kept) and whose outputs are the tensors a later request still needs. So requesting the inputs of a
model's weight layers one by one, in topological order, evaluates every node once in total, instead of once per
request as separate sessions would (the O(layers²) of a per-layer simulation).

A segment's initializers are read when it is built: ``weights(name)`` may return a replacement for the initializer
``name`` (the codebook refinement gives the dequantized, already refined weights of a layer), so a node sees the
value its weights have at the moment it first runs. A cached tensor is evicted as soon as no node still to run
consumes it and it is not a target still to be requested: memory is the "frontier" of the graph, times the number of
calibration batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


def _subgraph_inputs(graph: onnx.GraphProto) -> set[str]:
    """Outer-scope tensors a subgraph reads (its free names, nested subgraphs included)."""
    inner = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    inner |= {o for node in graph.node for o in node.output}
    used = {t for node in graph.node for t in node_inputs(node)}
    return used - inner


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """The tensors a node reads, in order and unique: its inputs plus the outer-scope names of its subgraphs."""
    names = [t for t in node.input if t]
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            names += sorted(_subgraph_inputs(a.g))
        elif a.type == onnx.AttributeProto.GRAPHS:
            names += sorted(set().union(*(_subgraph_inputs(g) for g in a.graphs)))
    return list(dict.fromkeys(names))


class SimulationStream:
    """``model`` evaluated over ``batches`` (feed dicts) node by node as ``targets`` are requested, in any order.

    Only the nodes some target depends on ever run. ``weights(name) -> np.ndarray | None`` is asked for every
    initializer a segment uses, when the segment is built; None keeps the model's value.
    """

    def __init__(self, model: onnx.ModelProto, batches: list[dict[str, np.ndarray]], targets: Iterable[str],
                 weights: Callable[[str], np.ndarray | None] | None = None) -> None:
        g = model.graph
        self.model, self.batches, self.weights = model, batches, weights
        self.nodes = list(g.node)
        self.inputs = [node_inputs(n) for n in self.nodes]
        self.initializers = {t.name: t for t in g.initializer}
        self.graph_inputs = {i.name: i for i in g.input if i.name not in self.initializers}
        self.producer = {t: i for i, n in enumerate(self.nodes) for t in n.output if t}
        self.pending = set(targets)                  # targets not requested yet: kept once computed
        self.done: set[int] = set()                  # nodes that have run
        self.cache: dict[str, list[np.ndarray]] = {}
        live = self._ancestors(self.pending)         # the nodes that will ever run (for targets)
        self.readers: dict[str, set[int]] = {}       # tensor -> live nodes still to run that read it
        for i in live:
            for t in self.inputs[i]:
                self.readers.setdefault(t, set()).add(i)
        self.cache = {name: [b[name] for b in batches] for name in self.graph_inputs
                      if name in self.readers or name in self.pending}
        self.nodes_run = 0                           # statistics, for tests and logs
        self.peak_bytes = self.cached_bytes()

    def _ancestors(self, names: Iterable[str]) -> set[int]:
        """The nodes not run yet that computing ``names`` needs (stopping at cached tensors)."""
        need: set[int] = set()
        stack = [t for t in names]
        while stack:
            t = stack.pop()
            if t in self.cache or t in self.initializers or t in self.graph_inputs:
                continue
            i = self.producer.get(t)
            if i is None:
                raise KeyError(f"tensor {t!r} is neither produced by a node nor an input of the model")
            if i in self.done:
                raise KeyError(f"tensor {t!r} was evicted: request it as a target to keep it")
            if i not in need:
                need.add(i)
                stack.extend(self.inputs[i])
        return need

    def advance(self, names: list[str]) -> dict[str, list[np.ndarray]]:
        """Every batch's value of each tensor in ``names`` (lists in batch order), running the nodes they need."""
        segment = sorted(self._ancestors(names))
        if segment:
            self._run(segment, names)
        out = {name: self.cache[name] for name in names}
        self.pending.difference_update(names)
        self._evict()
        return out

    def cached_bytes(self) -> int:
        return sum(a.nbytes for values in self.cache.values() for a in values)

    def _run(self, segment: list[int], names: list[str]) -> None:
        produced = {t for i in segment for t in self.nodes[i].output if t}
        read = list(dict.fromkeys(t for i in segment for t in self.inputs[i] if t not in produced))
        feeds = [t for t in read if t not in self.initializers]
        inside = set(segment)
        later = {t for t in produced if self.readers.get(t, set()) - inside}       # read by a node of a later segment
        outputs = [t for i in segment for t in self.nodes[i].output
                   if t and (t in names or t in self.pending or t in later)]
        session = self._session(segment, feeds, [t for t in read if t in self.initializers], outputs)
        results = [session.run(outputs, {t: self._value(t, b) for t in feeds}) for b in range(len(self.batches))]
        for k, t in enumerate(outputs):
            self.cache[t] = [r[k] for r in results]
        for i in segment:
            for t in self.inputs[i]:
                readers = self.readers.get(t)
                if readers is not None:
                    readers.discard(i)
                    if not readers:
                        del self.readers[t]
        self.done.update(segment)
        self.nodes_run += len(segment)
        self.peak_bytes = max(self.peak_bytes, self.cached_bytes())

    def _value(self, tensor: str, batch: int) -> np.ndarray:
        # a graph input no target needs is not cached; a request for something else may still read it
        return self.cache[tensor][batch] if tensor in self.cache else self.batches[batch][tensor]

    def _evict(self) -> None:
        for t in [t for t in self.cache if t not in self.readers and t not in self.pending]:
            del self.cache[t]

    def _session(self, segment: list[int], feeds: list[str], inits: list[str], outputs: list[str]):
        """The segment as a model: cached tensors as (untyped-shape) inputs, current initializers, and ``outputs``."""
        inputs = []
        for t in feeds:
            if t in self.graph_inputs:
                inputs.append(self.graph_inputs[t])
            else:
                value = self.cache[t][0]
                inputs.append(helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(value.dtype), None))
        tensors = []
        for t in inits:
            new = self.weights(t) if self.weights is not None else None
            tensors.append(self.initializers[t] if new is None else numpy_helper.from_array(new, t))
        out_info = []
        for t in outputs:                            # onnxruntime infers the type of an untyped graph output
            vi = onnx.ValueInfoProto()
            vi.name = t
            out_info.append(vi)
        graph = helper.make_graph([self.nodes[i] for i in segment], "segment", inputs, out_info, tensors)
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        model.ir_version = max(self.model.ir_version, 4)     # initializers need not be listed as inputs
        model.functions.extend(self.model.functions)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC    # as augmented_session
        opts.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
