"""Packed b-bit weight indices (docs/op-contract.md §1): a little-endian bit stream, index i at bits [i·b, i·b+b)."""

from __future__ import annotations

import numpy as np


def packed_length(count: int, bits: int) -> int:
    """Bytes needed for ``count`` indices of ``bits`` bits."""
    return (count * bits + 7) // 8


def pack_indices(indices: np.ndarray, bits: int) -> np.ndarray:
    """Pack integer indices in ``[0, 2^bits)`` into a uint8 array of ``packed_length`` bytes."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    flat = np.asarray(indices).reshape(-1)
    # range-check before the uint8 cast, which would silently wrap 256 → 0 and -1 → 255
    if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= (1 << bits)):
        raise ValueError(f"indices {int(flat.min())}..{int(flat.max())} do not fit in {bits} bits")
    flat = flat.astype(np.uint8)
    stream = ((flat[:, None] >> np.arange(bits, dtype=np.uint8)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(stream, bitorder="little")


def unpack_indices(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_indices`; validates the buffer length exactly."""
    if not 1 <= bits <= 8:
        raise ValueError(f"w_bits must be in 1..8, got {bits}")
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise ValueError(f"packed weights must be a 1-D uint8 tensor, got {packed.dtype} {list(packed.shape)}")
    need = packed_length(count, bits)
    if packed.size != need:
        raise ValueError(f"packed weights hold {packed.size} bytes, expected {need} for {count} {bits}-bit indices")
    stream = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
    return (stream.astype(np.uint16) << np.arange(bits, dtype=np.uint16)).sum(axis=1).astype(np.uint8)
