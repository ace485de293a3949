"""How small the weight indices get with entropy coding: a real Huffman code's size, and the Shannon bound."""

from __future__ import annotations

import heapq

import numpy as np


def huffman_code_lengths(counts: np.ndarray) -> np.ndarray:
    """Code length in bits for each symbol (0 for unused symbols); a single used symbol gets 1 bit."""
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(counts.size, dtype=np.int64)
    used = [i for i in range(counts.size) if counts[i] > 0]
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    heap = [(int(counts[i]), i, (i,)) for i in used]      # (weight, tie-breaker, symbols)
    heapq.heapify(heap)
    tie = counts.size
    while len(heap) > 1:
        w1, _, s1 = heapq.heappop(heap)
        w2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (w1 + w2, tie, s1 + s2))
        tie += 1
    return lengths


def huffman_bytes(indices: np.ndarray, alphabet: int) -> int:
    """Bytes of the Huffman-coded index stream plus its code-length table (one byte per symbol)."""
    counts = np.bincount(np.asarray(indices).reshape(-1).astype(np.int64), minlength=alphabet)
    bits = int((counts * huffman_code_lengths(counts)).sum())
    return (bits + 7) // 8 + alphabet


def shannon_bytes(indices: np.ndarray, alphabet: int) -> float:
    """The entropy bound ``N·H(p)/8`` of the index stream."""
    counts = np.bincount(np.asarray(indices).reshape(-1).astype(np.int64), minlength=alphabet).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(counts[counts > 0] * np.log2(p)).sum() / 8)
