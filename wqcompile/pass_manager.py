"""The pass contract and the pass manager.

Modelled on onnx-ir's ``_pass_infra.py`` with an ``onnx_graphsurgeon.Graph`` in place of ``ir.Model`` and TVM-style
names and disabling. A pass is a small named object: ``requires`` checks its preconditions, ``run`` does the work and
returns an honest :class:`PassResult`, ``ensures`` checks its postconditions. Analysis passes fill the typed
:class:`~wqcompile.context.CompileContext` and must leave the graph alone.

Example::

    from wqcompile.passes import default_pipeline
    from wqcompile.pass_manager import PassManager
    pm = PassManager(default_pipeline())
    result = pm.run(graph, ctx)            # or pm.run(graph, ctx, until="FitWeightsPass") to inspect ctx.weights
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Collection, Literal, Sequence

import onnx_graphsurgeon as gs

from wqcompile.errors import PassError, PostconditionError, WQError

if TYPE_CHECKING:
    from wqcompile.context import CompileContext

logger = logging.getLogger(__name__)


@dataclass
class PassResult:
    """What a pass returns: the (possibly new) graph and whether it changed anything."""

    graph: gs.Graph
    modified: bool


class Pass(abc.ABC):
    """A unit of work over a graph and the compile context.

    Subclasses set ``kind`` to ``"analysis"`` (fills ``ctx``, never edits the graph) or ``"transform"`` (edits the
    graph, ends with ``graph.cleanup().toposort()``), implement :meth:`run`, and may override :meth:`requires`
    (raise :class:`~wqcompile.errors.PreconditionError`) and :meth:`ensures`.
    """

    kind: ClassVar[Literal["analysis", "transform"]]

    @property
    def name(self) -> str:
        return type(self).__name__

    def requires(self, graph: gs.Graph, ctx: "CompileContext") -> None:
        """Raise ``PreconditionError`` if the pass cannot run yet."""

    @abc.abstractmethod
    def run(self, graph: gs.Graph, ctx: "CompileContext") -> PassResult:
        """Do the work; return the graph and whether it was modified."""

    def ensures(self, graph: gs.Graph, ctx: "CompileContext") -> None:
        """Raise ``PostconditionError`` if the pass broke a promise."""

    def __call__(self, graph: gs.Graph, ctx: "CompileContext") -> PassResult:
        self.requires(graph, ctx)
        n_nodes = len(graph.nodes)
        result = self.run(graph, ctx)
        if not isinstance(result, PassResult):
            raise TypeError(f"{self.name}.run must return a PassResult, got {type(result).__name__}")
        if self.kind == "analysis" and (result.modified or result.graph is not graph or len(graph.nodes) != n_nodes):
            raise PostconditionError(f"{self.name} is an analysis pass but modified the graph")
        self.ensures(result.graph, ctx)
        return result

    def __repr__(self) -> str:
        return f"{self.name}()"


class PassManager:
    """Runs a sequence of passes in order.

    Args:
        passes: the passes, in order (see :func:`wqcompile.passes.default_pipeline`).
        check_each: run ``onnx.checker`` (with our op schemas) after every transform pass.
        disabled: names of passes to skip.
        dump_dir: if set, save the graph after every pass as ``NN_<PassName>.onnx`` there.
    """

    def __init__(
        self,
        passes: Sequence[Pass],
        *,
        check_each: bool = False,
        disabled: Collection[str] = (),
        dump_dir: Path | None = None,
    ) -> None:
        self.passes = list(passes)
        self.check_each = check_each
        self.disabled = set(disabled)
        self.dump_dir = Path(dump_dir) if dump_dir else None
        names = [p.name for p in self.passes]
        unknown = self.disabled - set(names)
        if unknown:
            raise PassError(f"cannot disable unknown pass(es) {sorted(unknown)}; the pipeline has {names}")

    def run(self, graph: gs.Graph, ctx: "CompileContext", *, until: str | None = None) -> PassResult:
        """Run every enabled pass (or up to and including the one named ``until``)."""
        done: list[str] = []
        modified = False
        for index, p in enumerate(self.passes):
            if p.name in self.disabled:
                logger.info("skipping disabled pass %s", p.name)
                continue
            start = time.perf_counter()
            try:
                result = p(graph, ctx)
            except WQError:
                raise  # bad input: the message already names the node or tensor
            except Exception as err:  # a bug, not bad input: say where it happened
                raise PassError(
                    f"an error occurred when running the {p.name!r} pass after the following passes: {done}: "
                    f"{type(err).__name__}: {err}"
                ) from err
            ctx.timings[p.name] = time.perf_counter() - start
            graph, modified = result.graph, modified or result.modified
            done.append(p.name)
            ctx.passes_run.append(p.name)
            if p.kind == "transform" and self.check_each:
                from wqcompile.graph import check_graph

                check_graph(graph, what=f"the graph after {p.name}")
            if self.dump_dir is not None:
                from wqcompile.graph import export_model

                self.dump_dir.mkdir(parents=True, exist_ok=True)
                onnx_path = self.dump_dir / f"{index:02d}_{p.name}.onnx"
                import onnx

                onnx.save(export_model(graph, ctx), str(onnx_path))
            if until is not None and p.name == until:
                break
        else:
            if until is not None and until not in done:
                raise PassError(f"no pass named {until!r} ran; the pipeline has {[p.name for p in self.passes]}")
        return PassResult(graph, modified)
