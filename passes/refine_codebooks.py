"""RefineCodebooksPass: keep each layer's cluster assignment, re-fit its codebook values by least squares on data.

With the indices fixed, ``Ŵ(c) = Σ_k c_k A_k`` (``A_k`` the 0/1 mask of cluster ``k``) is linear in the ``L`` codebook
values, so ``min_c Σ_x ||W x − Ŵ(c) x||²`` is an ``L × L`` least-squares problem ``G c = r``. With ``B_o = X·onehot(idx_o)``
(``[n, L]``: per-cluster sums of the input features seen by output row ``o``), ``G = Σ_o B_o^T B_o`` and
``r = Σ_o B_o^T (X w_o)``. ``X`` is the layer's input on the calibration data: rows of a Gemm input, or im2col patches of
at most :data:`ROWS_PER_BATCH` random output positions per calibration batch for a Conv (fixed seed). Only the second
moment ``S = X^T X`` per conv group is kept (memory ``G·Kg²`` per layer), plus the raw rows while there are fewer of
them than ``Kg`` (then ``X`` itself is the cheaper factor); otherwise ``S = F^T F`` through its eigendecomposition.

The solve uses a ridge towards the unrefined values, ``(G + λI) c = r + λ c₀`` with ``λ = RIDGE · mean(diag G)``: it
keeps empty (padding) clusters where they were and, being a minimiser of ``error + λ||c − c₀||²``, can never end with
a larger calibration error than ``c₀``. ``symmetric`` WQ codebooks keep ``c_{L−1−k} = −c_k`` (solving for magnitudes
with signed masks) only with ``keep_symmetry=True``: measured, the free solve wins (docs/decisions.md), so it is the
default and a refined ``symmetric`` codebook is in general no longer symmetric. The refined values are still snapped to int16 mantissas by
:mod:`wqcompile.lowering`. When ``--sequential-calibration`` is on, SequentialCalibratePass refines each layer on its
input in the partially quantized model instead, and this pass skips the layers it has done.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import onnx_graphsurgeon as gs
from tqdm import tqdm

from wqcompile.calib.readers import open_calibration
from wqcompile.context import FittedWeights
from wqcompile.errors import PreconditionError
from wqcompile.graph import export_model
from wqcompile.layers import linear_layer
from wqcompile.pass_manager import Pass, PassResult
from wqcompile.passes.calibrate import augmented_session
from wqcompile.quant import WeightCodebook

logger = logging.getLogger(__name__)

ROWS_PER_BATCH = 4096     # conv im2col rows sampled per calibration batch (memory and time bound)
RIDGE = 1e-6              # relative ridge: enough to make empty clusters well posed, far below any data term
KEEP_SYMMETRY = False     # measured: the sign-symmetric solve lowers Fashion-MNIST (4,f) accuracy, the free one raises it


class InputMoments:
    """Streaming ``S_g = Σ X_g^T X_g`` of one layer's input rows per group ``g`` (plus the rows while few)."""

    def __init__(self, node: gs.Node, layer, seed: int) -> None:
        self.layer, self.node = layer, node
        self.groups = int(node.attrs.get("group", 1)) if layer.kind == "conv" else 1
        self.kg = layer.matrix.shape[1]
        self.s = np.zeros((self.groups, self.kg, self.kg))
        self.rows: list[np.ndarray] | None = []
        self.count = 0
        self.rng = np.random.default_rng(seed)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if self.layer.kind == "conv":
            rows = self._patches(x)                                  # [G, n, Kg]
        else:
            x = x.T if self.layer.transpose_input else x.reshape(-1, x.shape[-1])
            rows = x[None]
        self.s += np.matmul(rows.transpose(0, 2, 1), rows)
        self.count += rows.shape[1]
        if self.rows is not None:
            self.rows.append(rows)
            if self.count > self.kg:
                self.rows = None

    def _patches(self, x: np.ndarray) -> np.ndarray:
        kh, kw = self.layer.weight_shape[2:]
        sh, sw = self.node.attrs.get("strides", [1, 1])
        dh, dw = self.node.attrs.get("dilations", [1, 1])
        pt, pl, pb, pr = self.node.attrs.get("pads", [0, 0, 0, 0])
        xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        n, c, hp, wp = xp.shape
        oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
        total = n * oh * ow
        pick = self.rng.choice(total, ROWS_PER_BATCH, replace=False) if total > ROWS_PER_BATCH else np.arange(total)
        b, rest = np.divmod(pick, oh * ow)
        oy, ox = np.divmod(rest, ow)
        iy = oy[:, None] * sh + np.arange(kh)[None, :] * dh            # [n, kh]
        ix = ox[:, None] * sw + np.arange(kw)[None, :] * dw
        p = xp[b[:, None, None, None], np.arange(c)[None, :, None, None], iy[:, None, :, None], ix[:, None, None, :]]
        return p.reshape(len(pick), self.groups, self.kg).transpose(1, 0, 2)

    def factor(self) -> np.ndarray:
        """``F`` with ``F_g^T F_g = S_g``: the rows themselves when few, else ``sqrt(Λ)·U^T``."""
        if self.rows is not None and self.rows:
            return np.concatenate(self.rows, axis=1)
        lam, u = np.linalg.eigh(self.s)
        lam = np.clip(lam, 0.0, None)
        return np.sqrt(lam)[:, :, None] * u.transpose(0, 2, 1)


def symmetry_map(levels: int) -> np.ndarray:
    """``T`` with ``c = T·m``: ``c_{L−1−k} = −c_k``, and the middle value of an odd ``L`` fixed at 0."""
    upper = np.arange((levels + 1) // 2, levels)
    t = np.zeros((levels, upper.size))
    t[upper, np.arange(upper.size)] = 1.0
    t[levels - 1 - upper, np.arange(upper.size)] = -1.0
    return t


def is_symmetric(cb: WeightCodebook) -> bool:
    return cb.info.get("mode") == "symmetric"


def _solve(g: np.ndarray, r: np.ndarray, c0: np.ndarray, t: np.ndarray | None) -> np.ndarray:
    if t is not None:
        g, r, p0 = t.T @ g @ t, t.T @ r, 0.5 * (t.T @ c0)
    else:
        p0 = c0
    lam = RIDGE * max(float(np.mean(np.diag(g))), 1e-300)
    p = np.linalg.solve(g + lam * np.eye(g.shape[0]), r + lam * p0)
    return t @ p if t is not None else p


def refine_layer(fitted: FittedWeights, f: np.ndarray, *, keep_symmetry: bool = KEEP_SYMMETRY) -> FittedWeights:
    """Least-squares codebook values for the fixed assignment of ``fitted``, on inputs with factor ``f`` [G, r, Kg]."""
    m, k = fitted.matrix.shape
    groups = f.shape[0]
    per_row = len(fitted.codebooks) > 1
    idx = (np.stack([np.asarray(cb.indices).reshape(k) for cb in fitted.codebooks]) if per_row
           else np.asarray(fitted.codebooks[0].indices).reshape(m, k))
    levels = fitted.codebooks[0].levels
    og = m // groups
    onehot = np.zeros((m, k, levels))
    onehot[np.arange(m)[:, None], np.arange(k)[None, :], idx] = 1.0
    e = onehot.reshape(groups, og, k, levels).transpose(0, 2, 1, 3).reshape(groups, k, og * levels)
    b = np.matmul(f, e).reshape(groups, f.shape[1], og, levels)                    # [G, r, Og, L]
    y = np.matmul(f, fitted.matrix.reshape(groups, og, k).transpose(0, 2, 1))     # [G, r, Og]
    if not per_row:
        g = np.einsum("grok,grol->kl", b, b)
        r = np.einsum("grok,gro->k", b, y)
        cb = fitted.codebooks[0]
        t = symmetry_map(levels) if keep_symmetry and is_symmetric(cb) else None
        return FittedWeights([_replace(cb, _solve(g, r, np.asarray(cb.values), t))], fitted.bits, fitted.matrix)
    g = np.einsum("grok,grol->gokl", b, b).reshape(m, levels, levels)
    r = np.einsum("grok,gro->gok", b, y).reshape(m, levels)
    out = []
    for o, cb in enumerate(fitted.codebooks):
        t = symmetry_map(levels) if keep_symmetry and is_symmetric(cb) else None
        out.append(_replace(cb, _solve(g[o], r[o], np.asarray(cb.values), t)))
    return FittedWeights(out, fitted.bits, fitted.matrix)


def _replace(cb: WeightCodebook, values: np.ndarray) -> WeightCodebook:
    # the assignment rule (edges) is the fitter's; refined values need not be sorted any more
    info = dict(cb.info, refined=True, unrefined_values=[float(v) for v in cb.values])
    return WeightCodebook(values=values, indices=cb.indices, method=cb.method, info=info, edges=cb.edges, strict=cb.strict)


def output_error(fitted: FittedWeights, f: np.ndarray) -> float:
    """``Σ ||(W − Ŵ) x||²`` over the inputs with factor ``f`` (the objective the refinement minimises)."""
    from wqcompile.passes.correct_bias import dequantized_weights

    m, k = fitted.matrix.shape
    d = (fitted.matrix - dequantized_weights(fitted)).reshape(f.shape[0], m // f.shape[0], k)
    return float((np.matmul(f, d.transpose(0, 2, 1)) ** 2).sum())


def collect_moments(model, graph: gs.Graph, ctx, layers: list[str], calibration) -> dict[str, InputMoments]:
    """Stream the calibration data through ``model`` once and accumulate the inputs of ``layers``."""
    nodes = {n.name: n for n in graph.nodes}
    moments = {name: InputMoments(nodes[name], linear_layer(nodes[name]), ctx.config.seed + i)
               for i, name in enumerate(layers)}
    names = list(dict.fromkeys(ctx.weight_layers[n].input for n in layers))
    session = augmented_session(model, names)
    stream = open_calibration(calibration, model, max_samples=ctx.config.max_calib_samples)
    for batch in stream:
        values = dict(zip(names, session.run(names, batch)))
        for name in layers:
            moments[name].update(values[ctx.weight_layers[name].input])
    return moments


def refinable(node: gs.Node) -> str | None:
    """Why a layer cannot be refined, or None."""
    if node.op == "Conv" and node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return f"Conv {node.name!r}: auto_pad is not handled by the refinement's im2col"
    return None


class RefineCodebooksPass(Pass):
    """Replaces ``ctx.weights[...]`` codebook values by output least-squares ones (``--codebook-refinement``)."""

    kind = "analysis"

    def __init__(self, keep_symmetry: bool = KEEP_SYMMETRY) -> None:
        self.keep_symmetry = keep_symmetry

    def requires(self, graph, ctx) -> None:
        if "FitWeightsPass" not in ctx.passes_run:
            raise PreconditionError("RefineCodebooksPass needs codebooks: run FitWeightsPass first")

    def run(self, graph: gs.Graph, ctx) -> PassResult:
        if not ctx.config.codebook_refinement:
            return PassResult(graph, False)
        nodes = {n.name: n for n in graph.nodes}
        todo = []
        for name in ctx.weight_layers:
            if name in ctx.refined_layers or name not in ctx.weights:
                continue
            reason = refinable(nodes[name])
            if reason:
                logger.debug("not refined: %s", reason)
                continue
            todo.append(name)
        if not todo:
            return PassResult(graph, False)
        moments = collect_moments(export_model(graph, ctx), graph, ctx, todo, ctx.calibration)
        for name in tqdm(todo, desc="refine codebooks", unit="layer", disable=not ctx.config.progress,
                         file=sys.stderr, leave=False):
            ctx.weights[name] = refine_layer(ctx.weights[name], moments[name].factor(), keep_symmetry=self.keep_symmetry)
            ctx.refined_layers.add(name)
        return PassResult(graph, False)
