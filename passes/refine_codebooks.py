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

``--refinement-target fp32`` (config ``refinement_target="fp32"``) poses the better target ``min_c Σ ||W x_fp − Ŵ(c) x_q||²``
(GPTQ/AdaRound style): ``x_fp`` is the layer's input in the FP32 model, ``x_q`` its input in the partially quantized
simulation (earlier layers' dequantized weights and fake-quantized activations, :func:`simulation_model`), so the
refit also compensates the error arriving from earlier layers. Then ``G = Σ_o B_o^T B_o`` with ``B_o = X_q·onehot(idx_o)``
and ``r = Σ_o onehot(idx_o)^T (S_qf w_o)``, ``S_qf = Σ x_q x_fp^T``: both inputs are streamed from the same calibration
batches through two onnxruntime sessions (same im2col positions), keeping ``S_qq``, ``S_qf`` (and ``S_ff``, for the
error) per group. Standalone, the layers are visited in topological order, every earlier layer already refined, with
one forward pass of the simulation and of the FP32 model in all, run incrementally up to each layer's input
(:func:`fp32_target_moments`, all calibration batches kept in memory); inside ``--sequential-calibration`` the
sequential simulation is used as ``x_q``.
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
from wqcompile.lowering import NARROW_BITS, snap_codebooks
from wqcompile.operand_width import narrow_layers, simulated_input
from wqcompile.pass_manager import Pass, PassResult
from wqcompile.passes.calibrate import augmented_session
from wqcompile.quant import WeightCodebook
from wqcompile.quant.gptq import damped, gptq_assign

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

    def rows_of(self, x: np.ndarray) -> np.ndarray:
        """The input rows ``[G, n, Kg]`` of one batch (conv: im2col of random positions, drawn from ``self.rng``)."""
        x = np.asarray(x, dtype=np.float64)
        if self.layer.kind == "conv":
            return self._patches(x)                                  # [G, n, Kg]
        x = x.T if self.layer.transpose_input else x.reshape(-1, x.shape[-1])
        return x[None]

    def update(self, x: np.ndarray) -> None:
        self.add(self.rows_of(x))

    def add(self, rows: np.ndarray) -> None:
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


class JointMoments:
    """Streaming ``S_qq``, ``S_qf = Σ x_q x_fp^T`` and ``S_ff`` of one layer's quantized / FP32 input rows.

    Both :class:`InputMoments` share the seed, so a conv's im2col positions are the same rows in both inputs.
    """

    def __init__(self, node: gs.Node, layer, seed: int, *, keep_fp: bool = False) -> None:
        self.q = InputMoments(node, layer, seed)
        self.fp = InputMoments(node, layer, seed)
        self.keep_fp = keep_fp          # S_ff is only needed for target_error (tests, diagnostics), not the solve
        self.cross = np.zeros_like(self.q.s)

    def update(self, x_q: np.ndarray, x_fp: np.ndarray) -> None:
        rq, rf = self.q.rows_of(x_q), self.fp.rows_of(x_fp)
        self.q.add(rq)
        self.cross += np.matmul(rq.transpose(0, 2, 1), rf)
        if self.keep_fp:
            self.fp.add(rf)

    def factor(self) -> np.ndarray:
        return self.q.factor()


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


def refine_layer(fitted: FittedWeights, f: np.ndarray, *, keep_symmetry: bool = KEEP_SYMMETRY,
                 cross: np.ndarray | None = None) -> FittedWeights:
    """Least-squares codebook values for the fixed assignment of ``fitted``, on inputs with factor ``f`` [G, r, Kg].

    With ``cross`` (``S_qf = Σ x_q x_fp^T`` [G, Kg, Kg]; ``f`` then factors ``S_qq``) the target is ``W x_fp`` instead
    of ``W x_q``.
    """
    m, k = fitted.matrix.shape
    per_row = len(fitted.codebooks) > 1
    idx = (np.stack([np.asarray(cb.indices).reshape(k) for cb in fitted.codebooks]) if per_row
           else np.asarray(fitted.codebooks[0].indices).reshape(m, k))
    levels = fitted.codebooks[0].levels
    if fitted.row_scale is not None:
        return _refine_scaled(fitted, idx, f, cross, keep_symmetry)
    b, r_go = _cluster_terms(fitted.matrix, idx, levels, f, cross)
    if not per_row:
        g = np.einsum("grok,grol->kl", b, b)
        r = r_go.sum(axis=(0, 1))
        cb = fitted.codebooks[0]
        t = symmetry_map(levels) if keep_symmetry and is_symmetric(cb) else None
        return FittedWeights([_replace(cb, _solve(g, r, np.asarray(cb.values), t))], fitted.bits, fitted.matrix)
    g = np.einsum("grok,grol->gokl", b, b).reshape(m, levels, levels)
    r = r_go.reshape(m, levels)
    out = []
    for o, cb in enumerate(fitted.codebooks):
        t = symmetry_map(levels) if keep_symmetry and is_symmetric(cb) else None
        out.append(_replace(cb, _solve(g[o], r[o], np.asarray(cb.values), t)))
    return FittedWeights(out, fitted.bits, fitted.matrix)


def _cluster_terms(matrix: np.ndarray, idx: np.ndarray, levels: int, f: np.ndarray,
                   cross: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``B_o = X·onehot(idx_o)`` ``[G, r, Og, L]`` and ``r_o`` ``[G, Og, L]`` (``B_o^T y_o``, or with ``cross``
    ``onehot(idx_o)^T S_qf w_o``): the normal equations of the codebook values, per output row."""
    m, k = matrix.shape
    groups = f.shape[0]
    og = m // groups
    onehot = np.zeros((m, k, levels))
    onehot[np.arange(m)[:, None], np.arange(k)[None, :], idx] = 1.0
    e = onehot.reshape(groups, og, k, levels).transpose(0, 2, 1, 3).reshape(groups, k, og * levels)
    b = np.matmul(f, e).reshape(groups, f.shape[1], og, levels)                    # [G, r, Og, L]
    wt = matrix.reshape(groups, og, k).transpose(0, 2, 1)                          # [G, Kg, Og]
    if cross is not None:
        v = np.matmul(cross, wt)                                                   # [G, Kg, Og]: S_qf w_o
        r_go = np.einsum("gkol,gko->gol", onehot.reshape(groups, og, k, levels).transpose(0, 2, 1, 3), v)
    else:
        y = np.matmul(f, wt)                                                       # [G, r, Og]
        r_go = np.einsum("grol,gro->gol", b, y)
    return b, r_go


SCALED_ROUNDS = 3   # alternations of the shared values and the row scales (each step can only lower the error)


def _refine_scaled(fitted: FittedWeights, idx: np.ndarray, f: np.ndarray, cross: np.ndarray | None,
                   keep_symmetry: bool) -> FittedWeights:
    """Channel-scaled codebook ``ŵ_o = s_o · c[idx_o]``: alternately the shared values ``c`` (the least squares above
    with ``B_o`` scaled by ``s_o``) and each row's ``s_o = ⟨u_o, S_qf w_o⟩ / ⟨u_o, S_qq u_o⟩`` with ``u_o = c[idx_o]``
    (``S_qf = S_qq`` without ``cross``). Both are exact minimisers of the same error, so it never increases.

    Everything comes from the unscaled terms ``B_o``, ``r_o`` (computed once): ``X u_o = B_o c``,
    ``⟨u_o, S_qf w_o⟩ = ⟨r_o, c⟩``, and scaling row ``o`` scales both by ``s_o``."""
    cb = fitted.codebooks[0]
    b, r_go = _cluster_terms(fitted.matrix, idx, cb.levels, f, cross)
    c = np.asarray(cb.values, dtype=np.float64)
    scale = np.asarray(fitted.row_scale, dtype=np.float64).reshape(b.shape[0], b.shape[2]).copy()    # [G, Og]
    t = symmetry_map(cb.levels) if keep_symmetry and is_symmetric(cb) else None
    for _ in range(SCALED_ROUNDS):
        bs = b * scale[:, None, :, None]
        c = _solve(np.einsum("grok,grol->kl", bs, bs), np.einsum("gol,go->l", r_go, scale), c, t)
        xu = np.einsum("grol,l->gro", b, c)                                         # X u_o
        den = np.einsum("gro,gro->go", xu, xu)
        num = np.einsum("gol,l->go", r_go, c)
        ok = den > 1e-300
        scale[ok] = np.maximum(num[ok] / den[ok], 0.0)   # a negative optimum (sign flip) is left at 0: scales are ≥ 0
    return FittedWeights([_replace(cb, c)], fitted.bits, fitted.matrix, row_scale=scale.reshape(-1))


def gptq_layer(fitted: FittedWeights, s: np.ndarray, cross: np.ndarray | None = None) -> FittedWeights:
    """New indices for the codebook values of ``fitted`` by GPTQ (:func:`wqcompile.quant.gptq.gptq_assign`).

    ``s`` is the input second moment ``S_qq`` per group ``[G, Kg, Kg]``. With ``cross`` (``S_qf``) the target rows are
    ``w* = w + (S_qq + λI)⁻¹ (S_qf − S_qq) w``: the least-squares weights for the quantized input ``x_q`` that
    reproduce ``W x_fp``, regularised towards ``w`` (so rank-deficient moments, e.g. few calibration rows of a wide
    Gemm, leave the unseen directions at ``w``); then ``||W x_fp − Ŵ x_q||² = const + Σ_o (ŵ_o − w*_o)ᵀ S_qq (ŵ_o − w*_o)``.
    """
    m, k = fitted.matrix.shape
    groups = s.shape[0]
    og = m // groups
    w = fitted.matrix.reshape(groups, og, k).astype(np.float64)
    if cross is not None:
        correction = np.matmul(cross - s, w.transpose(0, 2, 1))                    # [G, Kg, Og]
        w = w + np.linalg.solve(damped(s), correction).transpose(0, 2, 1)
    values = np.stack([np.asarray(cb.values, dtype=np.float64) for cb in fitted.codebooks])
    if fitted.row_scale is not None:                     # channel-scaled: row o chooses among s_o · c
        values = np.asarray(fitted.row_scale, dtype=np.float64)[:, None] * values
    values = np.broadcast_to(values, (m, values.shape[1])) if len(values) == 1 else values
    idx = gptq_assign(w, s, np.ascontiguousarray(values).reshape(groups, og, -1)).reshape(m, k)
    codebooks = []
    for cb_i, cb in enumerate(fitted.codebooks):
        rows = idx if len(fitted.codebooks) == 1 else idx[cb_i]
        new = rows.reshape(np.shape(cb.indices)).astype(cb.indices.dtype)
        info = dict(cb.info, gptq=True)
        codebooks.append(WeightCodebook(values=cb.values, indices=new, method=cb.method, info=info))
    return FittedWeights(codebooks, fitted.bits, fitted.matrix, row_scale=fitted.row_scale)


def refit_layer(fitted: FittedWeights, moments, *, gptq: bool, keep_symmetry: bool = KEEP_SYMMETRY,
                snap_bits: int | None = None) -> FittedWeights:
    """The refinement of one layer from its moments (:class:`InputMoments` or :class:`JointMoments`): with ``gptq``
    first a new error-compensated assignment, then least-squares codebook values for the assignment.

    ``snap_bits`` (narrow layers, :mod:`wqcompile.operand_width`): the values are then snapped to the grid of that
    many codebook mantissa bits and, with ``gptq``, assigned once more against the snapped values. Measured: GPTQ's
    error compensation is fragile to moving its values afterwards (Fashion-MNIST (4,4), conv2 at 7 bits: 23.12 →
    22.75 dB output SQNR without the re-assignment)."""
    cross = moments.cross if isinstance(moments, JointMoments) else None
    s = moments.q.s if isinstance(moments, JointMoments) else moments.s
    if gptq:
        fitted = gptq_layer(fitted, s, cross)
    fitted = refine_layer(fitted, moments.factor(), keep_symmetry=keep_symmetry, cross=cross)
    if snap_bits is None:
        return fitted
    fitted = snap_codebooks(fitted, snap_bits)
    return gptq_layer(fitted, s, cross) if gptq else fitted


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


def target_error(fitted: FittedWeights, jm: JointMoments) -> float:
    """``Σ ||W x_fp − Ŵ x_q||²`` from the joint moments (the objective of the ``fp32`` refinement target)."""
    from wqcompile.passes.correct_bias import dequantized_weights

    if not jm.keep_fp:
        raise ValueError("target_error needs S_ff: collect the moments with keep_fp=True")
    m, k = fitted.matrix.shape
    groups = jm.cross.shape[0]
    w = fitted.matrix.reshape(groups, m // groups, k)
    wh = dequantized_weights(fitted).reshape(groups, m // groups, k)
    tr = lambda a, s, b: float(np.einsum("gok,gkl,gol->", a, s, b))    # noqa: E731  Σ_o a_o^T S b_o
    return tr(w, jm.fp.s, w) - 2.0 * tr(wh, jm.cross, w) + tr(wh, jm.q.s, wh)


def collect_joint_moments(sim_model, fp_session, graph: gs.Graph, ctx, layers: list[str],
                          calibration, *, keep_fp: bool = False) -> dict[str, JointMoments]:
    """Stream the calibration data through the simulation ``sim_model`` and ``fp_session`` (an FP32 session that
    outputs every weight layer's input) together, accumulating the joint moments of ``layers``."""
    nodes = {n.name: n for n in graph.nodes}
    index = {name: i for i, name in enumerate(ctx.weight_layers)}
    moments = {name: JointMoments(nodes[name], linear_layer(nodes[name]), ctx.config.seed + index[name],
                                  keep_fp=keep_fp) for name in layers}
    names = list(dict.fromkeys(ctx.weight_layers[n].input for n in layers))
    q_names = list(dict.fromkeys(simulated_input(ctx, n) for n in layers))
    session = augmented_session(sim_model, q_names)
    for batch in open_calibration(calibration, sim_model, max_samples=ctx.config.max_calib_samples):
        q = dict(zip(q_names, session.run(q_names, batch)))
        fp = dict(zip(names, fp_session.run(names, batch)))
        for name in layers:
            moments[name].update(q[simulated_input(ctx, name)], fp[ctx.weight_layers[name].input])
    return moments


def fp32_session(model, ctx):
    """An FP32 session of ``model`` that also outputs every weight layer's input."""
    return augmented_session(model, list(dict.fromkeys(wl.input for wl in ctx.weight_layers.values())))


def fp32_target_moments(graph: gs.Graph, ctx, layers: list[str], *, keep_fp: bool = False):
    """Yields ``(layer, JointMoments)`` for ``layers`` (in topological order): the moments of ``x_q``, the layer's
    input in the simulation with every other weight layer dequantized (:func:`simulation_model`, every fitted
    activation fake-quantized), and of ``x_fp``, its input in the FP32 model.

    The caller may replace ``ctx.weights[layer]`` before resuming: the simulation is one forward pass run
    incrementally (:class:`SimulationStream`), and a weight layer's node runs, with the dequantized weights
    ``ctx.weights`` holds at that moment, only when a later layer's input needs it, so every layer upstream of a
    yielded one has been yielded (and refit) first. Each node runs once over all calibration batches, which are read
    once and kept, with the tensors at the frontier of the two passes; the values are those of building
    ``simulation_model`` and a session per layer, up to onnxruntime's summation order.
    """
    from onnx import numpy_helper

    from wqcompile.passes.correct_bias import dequantized_weights
    from wqcompile.passes.sequential_calibrate import _stored_weight, simulation_model
    from wqcompile.passes.simulation_stream import SimulationStream

    base = export_model(graph, ctx)
    acts = {a.output for a in ctx.act_layers.values() if a.output in ctx.activations}
    sim_model = simulation_model(base, ctx, [], acts)
    inits = {t.name: t for t in base.graph.initializer}
    base_nodes = {n.name: n for n in base.graph.node}
    # a weight that is not an initializer cannot be swapped for its dequantized value: it stays FP32 in x_q
    owner = {ctx.weight_layers[d].weight: d for d in ctx.weights if ctx.weight_layers[d].weight in inits}

    def dequantized(tensor: str) -> np.ndarray | None:
        layer = owner.get(tensor)
        if layer is None:
            return None
        orig = numpy_helper.to_array(inits[tensor])
        return _stored_weight(base_nodes[layer], dequantized_weights(ctx.weights[layer]), orig.shape).astype(orig.dtype)

    nodes = {n.name: n for n in graph.nodes}
    index = {name: i for i, name in enumerate(ctx.weight_layers)}
    batches = list(open_calibration(ctx.calibration, base, max_samples=ctx.config.max_calib_samples))
    targets = [ctx.weight_layers[name].input for name in layers]
    sim = SimulationStream(sim_model, batches, [simulated_input(ctx, name) for name in layers], weights=dequantized)
    fp = SimulationStream(base, batches, targets)
    for name in layers:
        jm = JointMoments(nodes[name], linear_layer(nodes[name]), ctx.config.seed + index[name], keep_fp=keep_fp)
        inp, q_inp = ctx.weight_layers[name].input, simulated_input(ctx, name)
        for x_q, x_fp in zip(sim.advance([q_inp])[q_inp], fp.advance([inp])[inp]):
            jm.update(x_q, x_fp)
        yield name, jm
    # every calibration batch is held at the graph's frontier: the memory cost of this pass (--max-calib-samples)
    logger.info("fp32-target refinement: %d calibration batches, peak %.0f MiB of cached activations",
                len(batches), (sim.peak_bytes + fp.peak_bytes) / 2**20)


def collect_moments(model, graph: gs.Graph, ctx, layers: list[str], calibration, *,
                    simulated: bool = False) -> dict[str, InputMoments]:
    """Stream the calibration data through ``model`` once and accumulate the inputs of ``layers`` (``simulated``:
    ``model`` is a ``simulation_model``, whose narrow float-input layers read their s8 grid)."""
    nodes = {n.name: n for n in graph.nodes}
    moments = {name: InputMoments(nodes[name], linear_layer(nodes[name]), ctx.config.seed + i)
               for i, name in enumerate(layers)}
    read = {n: simulated_input(ctx, n) if simulated else ctx.weight_layers[n].input for n in layers}
    names = list(dict.fromkeys(read.values()))
    session = augmented_session(model, names)
    stream = open_calibration(calibration, model, max_samples=ctx.config.max_calib_samples)
    for batch in stream:
        values = dict(zip(names, session.run(names, batch)))
        for name in layers:
            moments[name].update(values[read[name]])
    return moments


def rereadable(source) -> bool:
    """Whether the calibration source can be streamed again (the refinement reads it once more, or once per layer)."""
    import os
    from collections.abc import Iterable, Iterator, Mapping

    if isinstance(source, (str, os.PathLike, Mapping)):
        return True
    if hasattr(source, "get_next"):
        return callable(getattr(source, "rewind", None))
    return isinstance(source, Iterable) and not isinstance(source, Iterator)


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
        if not rereadable(ctx.calibration):
            logger.warning("codebook refinement skipped: the calibration source can be read only once (pass a file, a "
                           "dict, a list of batches or a reader with rewind() to refine)")
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
        if ctx.config.refinement_target == "fp32":
            self._refine_to_fp32(graph, ctx, todo)
            return PassResult(graph, False)
        narrow = narrow_layers(graph, ctx, reassigned=set(todo) if ctx.config.gptq else set())
        moments = collect_moments(export_model(graph, ctx), graph, ctx, todo, ctx.calibration)
        for name in tqdm(todo, desc="refine codebooks", unit="layer", disable=not ctx.config.progress,
                         file=sys.stderr, leave=False):
            ctx.weights[name] = refit_layer(ctx.weights[name], moments[name], gptq=ctx.config.gptq,
                                            keep_symmetry=self.keep_symmetry,
                                            snap_bits=NARROW_BITS[0] if name in narrow else None)
            ctx.refined_layers.add(name)
        return PassResult(graph, False)

    def _refine_to_fp32(self, graph: gs.Graph, ctx, todo: list[str]) -> None:
        """Topological order; each layer's ``x_q`` from the simulation with every earlier weight layer dequantized
        (already refined) and every activation quantizer fake-quantized (later ones cannot reach this input); one
        incremental forward pass of the simulation and of the FP32 model in all (:func:`fp32_target_moments`)."""
        todo_set = set(todo)
        narrow = narrow_layers(graph, ctx, reassigned=set(todo) if ctx.config.gptq else set())
        ordered = [n.name for n in graph.nodes if n.name in todo_set]
        for name, jm in tqdm(fp32_target_moments(graph, ctx, ordered), total=len(ordered),
                             desc="refine codebooks (fp32 target)", unit="layer", disable=not ctx.config.progress,
                             file=sys.stderr, leave=False):
            ctx.weights[name] = refit_layer(ctx.weights[name], jm, gptq=ctx.config.gptq,
                                            keep_symmetry=self.keep_symmetry,
                                            snap_bits=NARROW_BITS[0] if name in narrow else None)
            ctx.refined_layers.add(name)
