"""Error-compensated codebook assignment (GPTQ, Frantar et al. 2023), for any per-row codebook.

Given a layer's target weights ``W`` (rows ``w_o``) and the second moment ``H = Σ x xᵀ`` of its input, choose
codebook indices so that ``Σ_o (ŵ_o − w_o)ᵀ H (ŵ_o − w_o)`` (the layer's output error) is small. Nearest-value
rounding ignores ``H``; GPTQ assigns the input columns one at a time and pushes each column's rounding error onto
the columns not assigned yet, weighted by the inverse Hessian, so correlated inputs absorb each other's error.
With ``U`` the upper Cholesky factor of ``H⁻¹`` (rows scaled so that ``U_ii`` is the pivot):

    q_i = nearest(w_i),   e = (w_i − q_i) / U_ii,   w_j −= e · U_ij   for j > i

Columns are visited in order of decreasing ``H_ii`` ("act order": the most energetic inputs are assigned while
the most columns are left to absorb their error) and in blocks of :data:`BLOCK` (the update of the remaining
columns is one matrix product per block). ``H`` is damped by ``DAMP · mean(diag H)`` (GPTQ's 1 %), which also
makes dead inputs (``H_ii = 0``) well posed. Batched over conv groups: ``w`` is ``[G, Og, K]``, ``h`` is ``[G, K, K]``.
"""

from __future__ import annotations

import numpy as np

BLOCK = 128
DAMP = 0.01


def nearest_index(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of each row's codebook: ``x`` ``[R]``, ``values`` ``[R, L]`` (any order)."""
    order = np.argsort(values, axis=1, kind="stable")
    v = np.take_along_axis(values, order, axis=1)
    mids = 0.5 * (v[:, 1:] + v[:, :-1])                      # [R, L−1]: ties go up, as nearest_edges
    lo = np.zeros(x.shape[0], dtype=np.int64)
    step = 1 << max(int(values.shape[1] - 1).bit_length() - 1, 0)
    rows = np.arange(x.shape[0])
    while step:                                              # binary search: lo = #{mids <= x}
        cand = lo + step
        ok = cand <= mids.shape[1]
        probe = mids[rows, np.minimum(cand, mids.shape[1]) - 1]
        lo = np.where(ok & (probe <= x), cand, lo)
        step >>= 1
    return order[rows, lo]


def damped(h: np.ndarray, damp: float = DAMP) -> np.ndarray:
    """``H + damp · mean(diag H) · I`` per group, with dead inputs given a unit diagonal."""
    h = np.array(h, dtype=np.float64)
    k = h.shape[-1]
    diag = np.einsum("gii->gi", h)
    dead = diag <= 0
    idx = np.arange(k)
    h[:, idx, idx] = np.where(dead, 1.0, diag)
    mean = np.maximum(np.einsum("gii->gi", h).mean(axis=1), 1e-300)
    h[:, idx, idx] += damp * mean[:, None]
    return h


def gptq_assign(w: np.ndarray, h: np.ndarray, values: np.ndarray, *, block: int = BLOCK) -> np.ndarray:
    """Codebook indices ``[G, Og, K]`` for target weights ``w`` ``[G, Og, K]``.

    Args:
        w: target weights per group and output row.
        h: input second moments ``[G, K, K]`` (damped here).
        values: each row's codebook ``[G, Og, L]``.
    """
    g, og, k = w.shape
    hd = damped(h)
    perm = np.argsort(-np.einsum("gii->gi", hd), axis=1, kind="stable")       # act order, per group
    hp = np.take_along_axis(np.take_along_axis(hd, perm[:, :, None], axis=1), perm[:, None, :], axis=2)
    u = np.linalg.cholesky(np.linalg.inv(hp)).transpose(0, 2, 1)             # upper factor of H⁻¹
    wp = np.take_along_axis(np.array(w, dtype=np.float64), perm[:, None, :], axis=2)
    flat_values = values.reshape(g * og, -1)
    idx = np.zeros((g, og, k), dtype=np.int64)
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        wb = wp[:, :, b0:b1].copy()
        err = np.zeros_like(wb)
        for i in range(b1 - b0):
            col = wb[:, :, i]
            j = nearest_index(col.reshape(-1), flat_values).reshape(g, og)
            q = np.take_along_axis(values, j[:, :, None], axis=2)[:, :, 0]
            e = (col - q) / u[:, b0 + i, b0 + i][:, None]
            wb[:, :, i + 1:] -= e[:, :, None] * u[:, None, b0 + i, b0 + i + 1:b1]
            err[:, :, i] = e
            idx[:, :, b0 + i] = j
        if b1 < k:
            wp[:, :, b1:] -= np.matmul(err, u[:, b0:b1, b1:])
    out = np.empty_like(idx)
    np.put_along_axis(out, perm[:, None, :], idx, axis=2)
    return out
