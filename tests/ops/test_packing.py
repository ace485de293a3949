"""Packed b-bit weight indices (op-contract §1) against a bit-by-bit oracle and hand-computed bytes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.oracles import pack_naive, unpack_naive
from wqcompile.runtime_ops.packing import pack_indices, packed_length, unpack_indices

LENGTHS = (0, 1, 2, 3, 5, 7, 8, 9, 13, 31, 64, 100, 257)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("count", LENGTHS)
def test_roundtrip_and_layout_match_the_bit_stream_definition(bits, count):
    rng = np.random.default_rng(1000 * bits + count)
    idx = rng.integers(0, 1 << bits, count)
    packed = pack_indices(idx, bits)
    assert packed.dtype == np.uint8 and packed.shape == (-(-count * bits // 8),)
    assert packed_length(count, bits) == packed.size
    np.testing.assert_array_equal(packed, pack_naive(idx, bits))
    out = unpack_indices(packed, bits, count)
    assert out.dtype == np.uint8 and out.shape == (count,)
    np.testing.assert_array_equal(out, idx)
    if count <= 64:                      # the bit-by-bit decoder is slow; the byte comparison above covers the rest
        np.testing.assert_array_equal(unpack_naive(packed, bits, count), idx)


@pytest.mark.parametrize("bits, indices, expected", [
    # 1 + (2<<3) + (3<<6) + (4<<9) + (5<<12) = 0x58D1; bit 15 (unused) is 0
    (3, [1, 2, 3, 4, 5], [0xD1, 0x58]),
    # stream 1,0,1,1,0,0,0,0 | 1 → 0b00001101, 0b00000001
    (1, [1, 0, 1, 1, 0, 0, 0, 0, 1], [0x0D, 0x01]),
    # 31 + (0<<5) + (17<<10) = 0x441F
    (5, [31, 0, 17], [0x1F, 0x44]),
    # 63 + (1<<6) + (2<<12) + (3<<18) = 0x0C207F
    (6, [63, 1, 2, 3], [0x7F, 0x20, 0x0C]),
    # b = 4: low nibble first
    (4, [0xA, 0x5, 0xF], [0x5A, 0x0F]),
    (8, [0, 255, 128], [0x00, 0xFF, 0x80]),
])
def test_hand_computed_bytes(bits, indices, expected):
    packed = pack_indices(np.array(indices), bits)
    assert packed.tolist() == expected
    assert unpack_indices(packed, bits, len(indices)).tolist() == indices


@pytest.mark.parametrize("bits", range(1, 8))
def test_unused_high_bits_of_the_last_byte_are_zero(bits):
    for count in range(1, 17):
        used = count * bits % 8
        if used == 0:
            continue
        packed = pack_indices(np.full(count, (1 << bits) - 1), bits)     # every stream bit that exists is 1
        assert packed[-1] == (1 << used) - 1
        assert all(b == 0xFF for b in packed[:-1])


@pytest.mark.parametrize("bits", range(1, 9))
def test_wrong_buffer_length_is_rejected(bits):
    for count in (1, 3, 10):
        packed = pack_indices(np.zeros(count, dtype=np.int64), bits)
        for wrong in (packed[:-1], np.concatenate([packed, np.zeros(1, np.uint8)])):
            with pytest.raises(ValueError, match="expected"):
                unpack_indices(wrong, bits, count)


def test_buffer_type_and_bits_are_validated():
    packed = pack_indices(np.arange(4), 2)
    with pytest.raises(ValueError, match="uint8"):
        unpack_indices(packed.astype(np.int8), 2, 4)
    with pytest.raises(ValueError, match="1-D"):
        unpack_indices(packed.reshape(1, -1), 2, 4)
    for bits in (0, 9):
        with pytest.raises(ValueError, match="1..8"):
            unpack_indices(packed, bits, 4)
        with pytest.raises(ValueError, match="1..8"):
            pack_indices(np.arange(4), bits)


@pytest.mark.parametrize("bits, bad", [(1, 2), (3, 8), (7, 128), (8, 256), (8, -1), (2, -1)])
def test_out_of_range_indices_are_rejected_not_wrapped(bits, bad):
    with pytest.raises(ValueError, match="do not fit"):
        pack_indices(np.array([0, bad, 1]), bits)


def test_empty_tensor_packs_to_zero_bytes():
    for bits in range(1, 9):
        assert pack_indices(np.zeros((0, 3), dtype=np.int64), bits).size == 0
        assert unpack_indices(np.zeros(0, np.uint8), bits, 0).shape == (0,)
