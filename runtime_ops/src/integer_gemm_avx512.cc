// AVX-512 (F, BW, VL, VNNI) path. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni (CMakeLists.txt) and
// only ever called after select_isa() has checked the CPU.
//
// GEMM tile: up to 8 rows × 48 columns of int32 accumulators (24 zmm). Per group of k (one int32 of every row of the
// packed panel): 3 loads of the panel, one broadcast per row of its int32 weight group and one dot-product
// instruction per accumulator: vpdpwssd on int16 pairs (32 MACs each), or, on QConv's u8 path, vpdpbusd on
// quads of u8 level mantissas (the panel) times s8 weights (64 MACs each). The two tiles are one template.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "integer_gemm_isa.h"

namespace wq {
namespace {
#include "integer_gemm_generic.h"

constexpr int kRows = 8;
constexpr int kCols = 48;   // 3 vectors of 16 int32

// one int32 group of k of a weight row: an int16 pair or four int8
inline int32_t load_group(const char* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// The multiply-accumulate of a tile: every int32 lane of the accumulator gets the dot product of the matching
// int32 lanes of the weight broadcast `a` and the panel `b`, split into
//   kS16Pairs:  two int16 (vpdpwssd, both signed), or
//   kU8S8Quads: four bytes, the panel's unsigned and the weights' signed (vpdpbusd; its first source is the
//               unsigned one). Exact: see IsaKernels::gemm_tile_u8 (non-saturating; the bound keeps sums < 2^30).
enum class Dot { kS16Pairs, kU8S8Quads };

// acc += pairwise int16 dot products of a and b; acc += the u8 (b) · s8 (a) dot products of four bytes (vpdpbusd's
// first source, %2 here in AT&T order, is the unsigned one). Inline asm with an in-place ("+v") accumulator: with
// the intrinsic, GCC 12 copies the 24 accumulators between registers every iteration, which halves the throughput.
#define WQ_DPWSSD(acc, a, b) __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))
#define WQ_DPBUSD(acc, a, b) __asm__("vpdpbusd %1, %2, %0" : "+v"(acc) : "v"(a), "v"(b))
// the tile's multiply-accumulate for its Dot D (a: the weight broadcast, b: the panel)
#define WQ_DOT(acc, a, b)                           \
  do {                                              \
    if constexpr (D == Dot::kU8S8Quads)             \
      WQ_DPBUSD(acc, a, b);                         \
    else                                            \
      WQ_DPWSSD(acc, a, b);                         \
  } while (0)

inline __mmask16 tail_mask(int n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

// Stores under a lane mask: a plain store when every lane is set. On Zen 4 a masked store does not forward its data
// to a load that soon reads it back (tile accumulators, pair rows, a join's float edge): a 64-byte store and its
// reload took 1.07 ns masked against 0.70 plain even with every lane set, and an unaligned 48-byte row 0.90 ns as
// one masked store against 0.80 as 32 + 16 plain bytes. MobileNetV2 (8,8), batch 1, one thread: 4 % faster
// (docs/decisions.md, "Masked stores").
__attribute__((always_inline)) inline void store_i32(void* p, __mmask16 m, __m512i v) {
  if (m == __mmask16(0xFFFF)) _mm512_storeu_si512(p, v);
  else _mm512_mask_storeu_epi32(p, m, v);
}
__attribute__((always_inline)) inline void store_f32(void* p, __mmask16 m, __m512 v) {
  if (m == __mmask16(0xFFFF)) _mm512_storeu_ps(p, v);
  else _mm512_mask_storeu_ps(p, m, v);
}
__attribute__((always_inline)) inline void store_i8(void* p, __mmask64 m, __m512i v) {
  if (m == ~__mmask64(0)) _mm512_storeu_si512(p, v);
  else _mm512_mask_storeu_epi8(p, m, v);
}
__attribute__((always_inline)) inline void store_i16(void* p, __mmask32 m, __m512i v) {
  if (m == ~__mmask32(0)) _mm512_storeu_si512(p, v);
  else _mm512_mask_storeu_epi16(p, m, v);
}

// Narrowing stores. Never vpmovdb / vpmovdw / vpmovwb to memory: on Zen 4 their store forms measured several times
// slower than the register forms (the masked vpmovdb store was 38 % of a three-run tile edge; docs/decisions.md,
// "Narrowing stores"), and GCC folds _mm_storeu(.., _mm512_cvtepi32_epi8(x)) into exactly that store. Saturating
// packs, one permute into order and one (masked) store instead.

// The levels (0..255) of up to four vectors of 16 to out: lanes of l_i where m_i is set, at out + 16 i
__attribute__((always_inline)) inline void store_levels4(uint8_t* out, __m512i l0, __m512i l1, __m512i l2, __m512i l3,
                                                         __mmask16 m0, __mmask16 m1, __mmask16 m2, __mmask16 m3) {
  // 128-bit lane k of the packs holds lanes 4k..4k+3 of l0, l1, l2, l3: one dword permute puts them in order
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i b = _mm512_packus_epi16(_mm512_packs_epi32(l0, l1), _mm512_packs_epi32(l2, l3));
  const __mmask64 m = static_cast<__mmask64>(m0) | static_cast<__mmask64>(m1) << 16 |
                      static_cast<__mmask64>(m2) << 32 | static_cast<__mmask64>(m3) << 48;
  const __m512i v = _mm512_permutexvar_epi32(order, b);
  // plain stores for the first 16, 32 or 48 bytes (constant masks fold); store_i8 for all 64 or any other mask
  if (m == (__mmask64(1) << 48) - 1) {   // a tile row of 48 levels
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_castsi512_si256(v));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 32), _mm512_extracti32x4_epi32(v, 2));
  } else if (m == (__mmask64(1) << 32) - 1) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_castsi512_si256(v));
  } else if (m == (__mmask64(1) << 16) - 1) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_castsi512_si128(v));
  } else {
    store_i8(out, m, v);
  }
}
__attribute__((always_inline)) inline void store_levels(uint8_t* out, __mmask16 m, __m512i l) {
  store_levels4(out, l, l, l, l, m, 0, 0, 0);
}

// 16 int32 lanes within int16 (lanes of m) to out as int16
__attribute__((always_inline)) inline void store_words(int16_t* out, __mmask16 m, __m512i x) {
  const __m512i q = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), _mm512_packs_epi32(x, x));
  if (m == __mmask16(0xFFFF)) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_castsi512_si256(q));
  else _mm256_mask_storeu_epi16(out, m, _mm512_castsi512_si256(q));
}

// 32 uint16 lanes ≤ 255 (lanes of m) to out as bytes
__attribute__((always_inline)) inline void store_word_bytes(uint8_t* out, __mmask32 m, __m512i x) {
  const __m512i q = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), _mm512_packus_epi16(x, x));
  if (m == ~__mmask32(0)) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_castsi512_si256(q));
  else _mm256_mask_storeu_epi8(out, m, _mm512_castsi512_si256(q));
}

// Named accumulators (not an array): GCC keeps all 24 in zmm registers only this way. Rows r ≥ R and vectors
// v ≥ NV are compiled out.
__attribute__((always_inline)) inline void edge_vector(__m512i acc, int r, int v, __mmask16 m, const TileEdge& e);
// the NV vectors of tile row r (a1, a2 unused past NV)
template <int NV>
__attribute__((always_inline)) inline void edge_row(__m512i a0, __m512i a1, __m512i a2, int r, __mmask16 m0,
                                                    __mmask16 m1, __mmask16 m2, const TileEdge& e);

// every row of the tile quantized through one arithmetic-index table (a shared codebook's): edge_tile_runs
bool shares_runs(const TileEdge& e, int rows);
template <int NV>
void edge_tile_runs(const int32_t* acc, int rows, __mmask16 m0, __mmask16 m1, __mmask16 m2, const TileEdge& e);

// a, b and their strides in bytes; kg groups of k (int32 per row of b)
template <Dot D, int R, int NV, bool Edge = false>
void tile(const char* a, size_t lda, const char* b, size_t ldb, size_t kg, int32_t* c, size_t ldc, int ncols,
          const TileEdge* edge = nullptr) {
  const __m512i z = _mm512_setzero_si512();
  __m512i c00 = z, c01 = z, c02 = z, c10 = z, c11 = z, c12 = z, c20 = z, c21 = z, c22 = z, c30 = z, c31 = z, c32 = z, c40 = z, c41 = z, c42 = z, c50 = z, c51 = z, c52 = z, c60 = z, c61 = z, c62 = z, c70 = z, c71 = z, c72 = z;
  const char *a0 = a + 0 * (R > 0 ? lda : 0), *a1 = a + 1 * (R > 1 ? lda : 0), *a2 = a + 2 * (R > 2 ? lda : 0), *a3 = a + 3 * (R > 3 ? lda : 0), *a4 = a + 4 * (R > 4 ? lda : 0), *a5 = a + 5 * (R > 5 ? lda : 0), *a6 = a + 6 * (R > 6 ? lda : 0), *a7 = a + 7 * (R > 7 ? lda : 0);
  for (size_t p = 0; p < kg; ++p) {
    const char* bp = b + p * ldb;
    const __m512i b0 = _mm512_loadu_si512(reinterpret_cast<const void*>(bp));
    const __m512i b1 = NV > 1 ? _mm512_loadu_si512(reinterpret_cast<const void*>(bp + 64)) : z;
    const __m512i b2 = NV > 2 ? _mm512_loadu_si512(reinterpret_cast<const void*>(bp + 128)) : z;
    if constexpr (R > 0) {
      const __m512i a = _mm512_set1_epi32(load_group(a0 + 4 * p));
      WQ_DOT(c00, a, b0);
      if constexpr (NV > 1) WQ_DOT(c01, a, b1);
      if constexpr (NV > 2) WQ_DOT(c02, a, b2);
    }
    if constexpr (R > 1) {
      const __m512i a = _mm512_set1_epi32(load_group(a1 + 4 * p));
      WQ_DOT(c10, a, b0);
      if constexpr (NV > 1) WQ_DOT(c11, a, b1);
      if constexpr (NV > 2) WQ_DOT(c12, a, b2);
    }
    if constexpr (R > 2) {
      const __m512i a = _mm512_set1_epi32(load_group(a2 + 4 * p));
      WQ_DOT(c20, a, b0);
      if constexpr (NV > 1) WQ_DOT(c21, a, b1);
      if constexpr (NV > 2) WQ_DOT(c22, a, b2);
    }
    if constexpr (R > 3) {
      const __m512i a = _mm512_set1_epi32(load_group(a3 + 4 * p));
      WQ_DOT(c30, a, b0);
      if constexpr (NV > 1) WQ_DOT(c31, a, b1);
      if constexpr (NV > 2) WQ_DOT(c32, a, b2);
    }
    if constexpr (R > 4) {
      const __m512i a = _mm512_set1_epi32(load_group(a4 + 4 * p));
      WQ_DOT(c40, a, b0);
      if constexpr (NV > 1) WQ_DOT(c41, a, b1);
      if constexpr (NV > 2) WQ_DOT(c42, a, b2);
    }
    if constexpr (R > 5) {
      const __m512i a = _mm512_set1_epi32(load_group(a5 + 4 * p));
      WQ_DOT(c50, a, b0);
      if constexpr (NV > 1) WQ_DOT(c51, a, b1);
      if constexpr (NV > 2) WQ_DOT(c52, a, b2);
    }
    if constexpr (R > 6) {
      const __m512i a = _mm512_set1_epi32(load_group(a6 + 4 * p));
      WQ_DOT(c60, a, b0);
      if constexpr (NV > 1) WQ_DOT(c61, a, b1);
      if constexpr (NV > 2) WQ_DOT(c62, a, b2);
    }
    if constexpr (R > 7) {
      const __m512i a = _mm512_set1_epi32(load_group(a7 + 4 * p));
      WQ_DOT(c70, a, b0);
      if constexpr (NV > 1) WQ_DOT(c71, a, b1);
      if constexpr (NV > 2) WQ_DOT(c72, a, b2);
    }
  }
  const __mmask16 m0 = tail_mask(ncols), m1 = tail_mask(ncols - 16 > 0 ? ncols - 16 : 0);
  const __mmask16 m2 = tail_mask(ncols - 32 > 0 ? ncols - 32 : 0);
  if constexpr (Edge) {
    if (shares_runs(*edge, R)) {   // the rows through one call: its run registers set up once, no call per row
      alignas(64) int32_t acc[R][48];
      const __m512i cs[8][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32},
                                {c40, c41, c42}, {c50, c51, c52}, {c60, c61, c62}, {c70, c71, c72}};
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < NV; ++v) _mm512_store_si512(&acc[r][16 * v], cs[r][v]);
      edge_tile_runs<NV>(&acc[0][0], R, m0, m1, m2, *edge);
      return;
    }
  }
  if constexpr (R > 0) {
    if constexpr (Edge) {
      edge_row<NV>(c00, c01, c02, 0, m0, m1, m2, *edge);
    } else {
      store_i32(c + 0 * ldc, m0, c00);
      if constexpr (NV > 1) store_i32(c + 0 * ldc + 16, m1, c01);
      if constexpr (NV > 2) store_i32(c + 0 * ldc + 32, m2, c02);
    }
  }
  if constexpr (R > 1) {
    if constexpr (Edge) {
      edge_row<NV>(c10, c11, c12, 1, m0, m1, m2, *edge);
    } else {
      store_i32(c + 1 * ldc, m0, c10);
      if constexpr (NV > 1) store_i32(c + 1 * ldc + 16, m1, c11);
      if constexpr (NV > 2) store_i32(c + 1 * ldc + 32, m2, c12);
    }
  }
  if constexpr (R > 2) {
    if constexpr (Edge) {
      edge_row<NV>(c20, c21, c22, 2, m0, m1, m2, *edge);
    } else {
      store_i32(c + 2 * ldc, m0, c20);
      if constexpr (NV > 1) store_i32(c + 2 * ldc + 16, m1, c21);
      if constexpr (NV > 2) store_i32(c + 2 * ldc + 32, m2, c22);
    }
  }
  if constexpr (R > 3) {
    if constexpr (Edge) {
      edge_row<NV>(c30, c31, c32, 3, m0, m1, m2, *edge);
    } else {
      store_i32(c + 3 * ldc, m0, c30);
      if constexpr (NV > 1) store_i32(c + 3 * ldc + 16, m1, c31);
      if constexpr (NV > 2) store_i32(c + 3 * ldc + 32, m2, c32);
    }
  }
  if constexpr (R > 4) {
    if constexpr (Edge) {
      edge_row<NV>(c40, c41, c42, 4, m0, m1, m2, *edge);
    } else {
      store_i32(c + 4 * ldc, m0, c40);
      if constexpr (NV > 1) store_i32(c + 4 * ldc + 16, m1, c41);
      if constexpr (NV > 2) store_i32(c + 4 * ldc + 32, m2, c42);
    }
  }
  if constexpr (R > 5) {
    if constexpr (Edge) {
      edge_row<NV>(c50, c51, c52, 5, m0, m1, m2, *edge);
    } else {
      store_i32(c + 5 * ldc, m0, c50);
      if constexpr (NV > 1) store_i32(c + 5 * ldc + 16, m1, c51);
      if constexpr (NV > 2) store_i32(c + 5 * ldc + 32, m2, c52);
    }
  }
  if constexpr (R > 6) {
    if constexpr (Edge) {
      edge_row<NV>(c60, c61, c62, 6, m0, m1, m2, *edge);
    } else {
      store_i32(c + 6 * ldc, m0, c60);
      if constexpr (NV > 1) store_i32(c + 6 * ldc + 16, m1, c61);
      if constexpr (NV > 2) store_i32(c + 6 * ldc + 32, m2, c62);
    }
  }
  if constexpr (R > 7) {
    if constexpr (Edge) {
      edge_row<NV>(c70, c71, c72, 7, m0, m1, m2, *edge);
    } else {
      store_i32(c + 7 * ldc, m0, c70);
      if constexpr (NV > 1) store_i32(c + 7 * ldc + 16, m1, c71);
      if constexpr (NV > 2) store_i32(c + 7 * ldc + 32, m2, c72);
    }
  }
}

template <Dot D, int R, bool Edge>
void tile_rows(const char* a, size_t lda, const char* b, size_t ldb, size_t kg, int32_t* c, size_t ldc, int ncols,
               const TileEdge* edge) {
  if (ncols > 32) tile<D, R, 3, Edge>(a, lda, b, ldb, kg, c, ldc, ncols, edge);
  else if (ncols > 16) tile<D, R, 2, Edge>(a, lda, b, ldb, kg, c, ldc, ncols, edge);
  else tile<D, R, 1, Edge>(a, lda, b, ldb, kg, c, ldc, ncols, edge);
}

// every entry point of the tile: rows 1..8 (more are clamped to 8), Edge: the edge in registers instead of c
template <Dot D, bool Edge>
void tile_any(const char* a, size_t lda, const char* b, size_t ldb, size_t kg, int32_t* c, size_t ldc, int rows,
              int ncols, const TileEdge* edge) {
  switch (rows) {
    case 1: tile_rows<D, 1, Edge>(a, lda, b, ldb, kg, c, ldc, ncols, edge); break;
    case 2: tile_rows<D, 2, Edge>(a, lda, b, ldb, kg, c, ldc, ncols, edge); break;
    case 3: tile_rows<D, 3, Edge>(a, lda, b, ldb, kg, c, ldc, ncols, edge); break;
    case 4: tile_rows<D, 4, Edge>(a, lda, b, ldb, kg, c, ldc, ncols, edge); break;
    case 5: tile_rows<D, 5, Edge>(a, lda, b, ldb, kg, c, ldc, ncols, edge); break;
    case 6: tile_rows<D, 6, Edge>(a, lda, b, ldb, kg, c, ldc, ncols, edge); break;
    case 7: tile_rows<D, 7, Edge>(a, lda, b, ldb, kg, c, ldc, ncols, edge); break;
    default: tile_rows<D, 8, Edge>(a, lda, b, ldb, kg, c, ldc, ncols, edge); break;
  }
}

// QConvMaxPool's 2x2, stride-2 pool inside the tile (IsaKernels::gemm_tile_pool_edge). b holds two half-panels of kg
// int32 rows of 32 columns (ldb bytes apart; the second half starts kg · ldb bytes on): column 16 dx + l of half
// dy is the conv output pixel (2 py + dy, 2 px + dx) of pooled position l. Each half runs the K loop into two
// accumulators per row and folds them by max into one kept vector per row (8 rows: 16 accumulators + 8 kept + 3
// operands, all in registers). Row r's max over its four pixels then goes through the row's edge as one vector of
// 16 pooled positions. Exact: the max commutes with the bias added after it and with the non-decreasing quantizer,
// so this is the pool of the quantized convolution, without its int32 accumulators in memory.
template <Dot D, int R>
void tile_pool_rows(const char* a, size_t lda, const char* b, size_t ldb, size_t kg, int ncols, const TileEdge& e) {
  const __m512i z = _mm512_setzero_si512(), lowest = _mm512_set1_epi32(INT32_MIN);
  __m512i m0 = lowest, m1 = lowest, m2 = lowest, m3 = lowest, m4 = lowest, m5 = lowest, m6 = lowest, m7 = lowest;
  const char *a0 = a + 0 * (R > 0 ? lda : 0), *a1 = a + 1 * (R > 1 ? lda : 0), *a2 = a + 2 * (R > 2 ? lda : 0), *a3 = a + 3 * (R > 3 ? lda : 0), *a4 = a + 4 * (R > 4 ? lda : 0), *a5 = a + 5 * (R > 5 ? lda : 0), *a6 = a + 6 * (R > 6 ? lda : 0), *a7 = a + 7 * (R > 7 ? lda : 0);
  for (int half = 0; half < 2; ++half) {
    __m512i c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z, c60 = z, c61 = z, c70 = z, c71 = z;
    const char* const bh = b + static_cast<size_t>(half) * kg * ldb;
    for (size_t p = 0; p < kg; ++p) {
      const char* bp = bh + p * ldb;
      const __m512i b0 = _mm512_loadu_si512(reinterpret_cast<const void*>(bp));
      const __m512i b1 = _mm512_loadu_si512(reinterpret_cast<const void*>(bp + 64));
#define WQ_POOL_ROW(r)                                                   \
  if constexpr (R > r) {                                                 \
    const __m512i av = _mm512_set1_epi32(load_group(a##r + 4 * p));      \
    WQ_DOT(c##r##0, av, b0);                                             \
    WQ_DOT(c##r##1, av, b1);                                             \
  }
      WQ_POOL_ROW(0) WQ_POOL_ROW(1) WQ_POOL_ROW(2) WQ_POOL_ROW(3) WQ_POOL_ROW(4) WQ_POOL_ROW(5) WQ_POOL_ROW(6) WQ_POOL_ROW(7)
#undef WQ_POOL_ROW
    }
  // (maskz with every lane: _mm512_max_epi32's undefined pass-through source trips GCC 12's -Wuninitialized here)
#define WQ_POOL_FOLD(r) \
  if constexpr (R > r) m##r = _mm512_maskz_max_epi32(0xFFFF, m##r, _mm512_maskz_max_epi32(0xFFFF, c##r##0, c##r##1));
    WQ_POOL_FOLD(0) WQ_POOL_FOLD(1) WQ_POOL_FOLD(2) WQ_POOL_FOLD(3) WQ_POOL_FOLD(4) WQ_POOL_FOLD(5) WQ_POOL_FOLD(6) WQ_POOL_FOLD(7)
#undef WQ_POOL_FOLD
  }
  const __mmask16 mask = tail_mask(ncols);
  const __m512i ms[8] = {m0, m1, m2, m3, m4, m5, m6, m7};
  for (int r = 0; r < R; ++r) edge_row<1>(ms[r], z, z, r, mask, 0, 0, e);
}

template <Dot D>
void tile_pool_any(const char* a, size_t lda, const char* b, size_t ldb, size_t kg, int rows, int ncols,
                   const TileEdge& e) {
  switch (rows) {
    case 1: tile_pool_rows<D, 1>(a, lda, b, ldb, kg, ncols, e); break;
    case 2: tile_pool_rows<D, 2>(a, lda, b, ldb, kg, ncols, e); break;
    case 3: tile_pool_rows<D, 3>(a, lda, b, ldb, kg, ncols, e); break;
    case 4: tile_pool_rows<D, 4>(a, lda, b, ldb, kg, ncols, e); break;
    case 5: tile_pool_rows<D, 5>(a, lda, b, ldb, kg, ncols, e); break;
    case 6: tile_pool_rows<D, 6>(a, lda, b, ldb, kg, ncols, e); break;
    case 7: tile_pool_rows<D, 7>(a, lda, b, ldb, kg, ncols, e); break;
    default: tile_pool_rows<D, 8>(a, lda, b, ldb, kg, ncols, e); break;
  }
}

inline const char* bytes_of(const void* p) { return static_cast<const char*>(p); }

// level = #{j : t[j] ≤ v} for 16 lanes. The padded table is sorted with at least one never-met entry, so with
// ≤ 15 thresholds a 4-step branch-free binary search over its first 16 entries (one vpermd per step) counts them;
// with more, the same search over the 16 block pivots t[16 b + 15] finds the block and a second search finishes
// inside it (count_levels).
inline __m512i search16(__m512i v, __m512i table) {
  // step 8 compares with t[7] (a broadcast), then steps 4, 2, 1 look up t[pos + step - 1] with one vpermd each
  __m512i pos = _mm512_maskz_mov_epi32(_mm512_cmple_epi32_mask(_mm512_permutexvar_epi32(_mm512_set1_epi32(7), table), v),
                                       _mm512_set1_epi32(8));
  for (int step = 4; step >= 1; step >>= 1) {
    const __m512i t = _mm512_permutexvar_epi32(_mm512_add_epi32(pos, _mm512_set1_epi32(step - 1)), table);
    pos = _mm512_mask_add_epi32(pos, _mm512_cmple_epi32_mask(t, v), pos, _mm512_set1_epi32(step));
  }
  return pos;
}

inline __m512i count_levels(__m512i v, const ThresholdTable* t) {
  if (t->blocks == 1) return search16(v, _mm512_load_si512(t->padded));
  // pivots: transposed[15][b] = padded[16 b + 15]; blocks past the last are all padding (never met).
  const __m512i blk = search16(v, _mm512_load_si512(t->transposed[15]));
  // Within the block (its entry 15 is its pivot, > v) the same 4-step binary search, where step s needs entry
  // pos + s - 1 of each lane's block: column transposed[j] indexed by the block, for the 1, 2, 4, 8 columns the
  // step can hit. Two columns are served by one two-source permute (index blk + 16 · which), so the steps cost
  // 1, 1, 2 and 4 permutes (a per-lane gather is several times slower on this class of CPU).
  auto C = [&](int j) { return _mm512_load_si512(t->transposed[j]); };
  const __m512i s8 = _mm512_set1_epi32(8), s4 = _mm512_set1_epi32(4), s2 = _mm512_set1_epi32(2);
  __m512i pos = _mm512_maskz_mov_epi32(_mm512_cmple_epi32_mask(_mm512_permutexvar_epi32(blk, C(7)), v), s8);
  // step 4: entry 3 or 11
  __m512i idx = _mm512_add_epi32(blk, _mm512_slli_epi32(pos, 1));                 // + 16 when pos = 8
  __m512i tv = _mm512_permutex2var_epi32(C(3), idx, C(11));
  pos = _mm512_mask_add_epi32(pos, _mm512_cmple_epi32_mask(tv, v), pos, s4);
  // step 2: entry 1, 5, 9 or 13
  idx = _mm512_add_epi32(blk, _mm512_slli_epi32(_mm512_and_si512(pos, s4), 2));   // + 16 when pos & 4
  const __mmask16 hi8 = _mm512_test_epi32_mask(pos, s8);
  tv = _mm512_mask_mov_epi32(_mm512_permutex2var_epi32(C(1), idx, C(5)), hi8, _mm512_permutex2var_epi32(C(9), idx, C(13)));
  pos = _mm512_mask_add_epi32(pos, _mm512_cmple_epi32_mask(tv, v), pos, s2);
  // step 1: entry 0, 2, 4, ..., 14
  idx = _mm512_add_epi32(blk, _mm512_slli_epi32(_mm512_and_si512(pos, s2), 3));   // + 16 when pos & 2
  const __mmask16 b4 = _mm512_test_epi32_mask(pos, s4), b8 = _mm512_test_epi32_mask(pos, s8);
  const __m512i lo = _mm512_mask_mov_epi32(_mm512_permutex2var_epi32(C(0), idx, C(2)), b4,
                                           _mm512_permutex2var_epi32(C(4), idx, C(6)));
  const __m512i hi = _mm512_mask_mov_epi32(_mm512_permutex2var_epi32(C(8), idx, C(10)), b4,
                                           _mm512_permutex2var_epi32(C(12), idx, C(14)));
  tv = _mm512_mask_mov_epi32(lo, b8, hi);
  pos = _mm512_mask_add_epi32(pos, _mm512_cmple_epi32_mask(tv, v), pos, _mm512_set1_epi32(1));
  return _mm512_add_epi32(_mm512_slli_epi32(blk, 4), pos);
}

// More than 15 thresholds: the O(1) bucket index (ThresholdTable::bucket). The bucket is the truncated float32
// exponent and top 5 mantissa bits (a round-toward-zero conversion, = threshold_bucket), then two 8-lane qword
// gathers of (t0, lo) and one compare. A vector with a lane in a bucket holding > 1 threshold takes the two-level
// binary search instead (never for WQ log-spaced thresholds).
// the rare fallback stays out of line, so the edges that inline count_levels_bucketed stay small
__attribute__((noinline)) __m512i count_levels_slow(__m512i v, const ThresholdTable* t) { return count_levels(v, t); }

// Lanes below the first threshold are level 0 without a lookup: their gathers are masked off, and skipped when a
// half has none (ReLU-like quantizers send about half of all accumulators there).
__attribute__((always_inline)) inline __m512i count_levels_bucketed(__m512i v, const ThresholdTable* t) {
  const __mmask16 live = _mm512_cmpge_epi32_mask(v, _mm512_set1_epi32(t->padded[0]));
  if (live == 0) return _mm512_setzero_si512();
  const __m512i bits = _mm512_castps_si512(_mm512_cvt_roundepi32_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC));
  const __m512i key = _mm512_max_epi32(_mm512_sub_epi32(_mm512_srai_epi32(bits, 18), _mm512_set1_epi32(4063)),
                                       _mm512_setzero_si512());
  const long long* base = reinterpret_cast<const long long*>(t->bucket);
  const __m512i z = _mm512_setzero_si512();
  const __mmask8 live0 = static_cast<__mmask8>(live), live1 = static_cast<__mmask8>(live >> 8);
  const __m512i g0 = live0 ? _mm512_mask_i32gather_epi64(z, live0, _mm512_castsi512_si256(key), base, 8) : z;
  const __m512i g1 = live1 ? _mm512_mask_i32gather_epi64(z, live1, _mm512_extracti64x4_epi64(key, 1), base, 8) : z;
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i t0 = _mm512_permutex2var_epi32(g0, even, g1);
  const __m512i lo = _mm512_permutex2var_epi32(g0, _mm512_add_epi32(even, _mm512_set1_epi32(1)), g1);
  if (__builtin_expect(_mm512_test_epi32_mask(lo, _mm512_set1_epi32(kBucketSlow)) != 0, 0)) return count_levels_slow(v, t);
  // a live lane has v ≥ t[0], so its level is at least 1 and comes from its bucket; the others are 0
  return _mm512_maskz_mov_epi32(live, _mm512_mask_add_epi32(lo, _mm512_cmple_epi32_mask(t0, v), lo, _mm512_set1_epi32(1)));
}

// The 32-bit index (ThresholdTable::packed, when packed_ok): the bucket key as above at the table's resolution
// (packed_shift = 23 - packed_bits), start(b) as the conversion with the low packed_shift bits cleared and converted back (exact), one masked 16-lane dword gather of L | R << 8 and one
// unsigned compare of v - start(b) with R. Lanes below t[0] are 0 (their gather is masked off).
__attribute__((always_inline)) inline __m512i count_levels_packed(__m512i v, const ThresholdTable* t) {
  const __mmask16 live = _mm512_cmpge_epi32_mask(v, _mm512_set1_epi32(t->padded[0]));
  if (live == 0) return _mm512_setzero_si512();
  const __m512i bits = _mm512_castps_si512(_mm512_cvt_roundepi32_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC));
  // a live lane has v ≥ t[0] ≥ 1: key ≥ 1
  const __m128i sh = _mm_cvtsi32_si128(t->packed_shift);
  const __m512i key = _mm512_sub_epi32(_mm512_srl_epi32(bits, sh), _mm512_set1_epi32(t->packed_key_bias));
  const __m512i start = _mm512_cvttps_epi32(_mm512_castsi512_ps(_mm512_sll_epi32(_mm512_srl_epi32(bits, sh), sh)));
  const __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, key, t->packed.data(), 4);
  const __m512i L = _mm512_and_si512(g, _mm512_set1_epi32(0xFF));
  const __mmask16 up = _mm512_mask_cmpge_epu32_mask(live, _mm512_sub_epi32(v, start), _mm512_srli_epi32(g, 8));
  return _mm512_mask_add_epi32(L, up, L, _mm512_set1_epi32(1));
}

// The arithmetic index (ThresholdRuns): the lane's run from S - 1 compares with the runs' starts, its constants by
// register permutes, q = floor(d / step) from one exact FMA (ThresholdRuns::exact) or estimated with one float
// multiply (within one of the truth, see there) and made exact with the integer remainder d - q·step.
struct RunRegs {
  __m512i start, step, cap, first, rshift, t0, t1, s1, s2;
  __m512 inv, mul, add;
  // the lines form (ThresholdRuns::lines): broadcast constants, the shift counts in the low qword
  __m512i l_base, l_cap, l_add[kMaxLines];
  __m128i l_rshift, l_shift[kMaxLines];
  __m512 l_mul, l_add_q;
  int n = 0, lines = 0;
  bool exact = false;
  RunRegs() = default;   // unused (no runs)
  RunRegs(const ThresholdRuns& r, int32_t t0v, int32_t t1v)
      : start(_mm512_load_si512(r.start)), step(_mm512_load_si512(r.step)), cap(_mm512_load_si512(r.cap)),
        first(_mm512_load_si512(r.first)), rshift(_mm512_load_si512(r.rshift)), t0(_mm512_set1_epi32(t0v)),
        t1(_mm512_set1_epi32(t1v)), s1(_mm512_set1_epi32(r.start[1])), s2(_mm512_set1_epi32(r.start[2])),
        inv(_mm512_load_ps(r.inv)), mul(_mm512_load_ps(r.mul)), add(_mm512_load_ps(r.add)),
        l_base(_mm512_set1_epi32(r.start[0])), l_cap(_mm512_set1_epi32(r.line_cap)),
        l_rshift(_mm_cvtsi32_si128(r.line_rshift)),
        l_mul(_mm512_set1_ps(r.line_mul)), l_add_q(_mm512_set1_ps(r.line_add_q)), n(r.count), lines(r.lines),
        exact(r.exact) {
    for (int k = 0; k < kMaxLines; ++k) {
      l_add[k] = _mm512_set1_epi32(r.line_add[k]);
      l_shift[k] = _mm_cvtsi32_si128(r.line_shift[k]);
    }
  }
  explicit RunRegs(const ThresholdTable* t) : RunRegs(t->runs, t->padded[0], t->padded[1]) {}
};

// The lines form's level of v ≥ start[0] (ThresholdRuns::lines; L lines): u = floor(min(v - start[0], cap) / g)
// by the exact one-FMA quotient (lanes below start[0] wrap to a large unsigned value, capped: the callers mask
// them off), then the minimum of the lines (u + add_k) >> shift_k. Measured on MobileNetV2's (8, 8) segmented
// tables (three runs): see docs/decisions.md, "Narrowing stores and the lines form".
template <int L>
__attribute__((always_inline)) inline __m512i lines_level(__m512i v, const RunRegs& R) {
  const __m512i d = _mm512_min_epu32(_mm512_sub_epi32(v, R.l_base), R.l_cap);
  const __m512 x = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srl_epi32(d, R.l_rshift)), R.l_mul, R.l_add_q);
  const __m512i u = _mm512_cvttps_epi32(x);
  __m512i level = _mm512_sra_epi32(_mm512_add_epi32(u, R.l_add[0]), R.l_shift[0]);
#pragma GCC unroll 4
  for (int k = 1; k < L; ++k) level = _mm512_min_epi32(level, _mm512_sra_epi32(_mm512_add_epi32(u, R.l_add[k]), R.l_shift[k]));
  return level;
}

// level of v ≥ start[0] (lanes below it produce a value the callers mask off). N: the number of runs when 1..3
// (the run from N - 1 compares with registers; with one run the permutes fold to constants), 0 for any number (a
// binary search over the starts, padded with INT32_MAX). Measured on a 1x1 QConv edge with 255 thresholds (Zen 4,
// ns per output including the GEMM): one run 0.25, three runs 0.33, the packed gather 0.53, ≤ 15 thresholds 0.30;
// selecting the three runs' constants with masked moves instead of permutes measured the same. Exact: the one-FMA
// quotient (ThresholdRuns::exact; the only form for dyadic runs).
template <int N, bool Exact>
__attribute__((always_inline)) inline __m512i runs_level(__m512i v, const RunRegs& R) {
  if constexpr (N < 0) return lines_level<-N>(v, R);
  const __m512i one = _mm512_set1_epi32(1);
  __m512i k = _mm512_setzero_si512();
  if constexpr (N == 2 || N == 3) k = _mm512_maskz_mov_epi32(_mm512_cmpge_epi32_mask(v, R.s1), one);
  if constexpr (N == 3) k = _mm512_mask_add_epi32(k, _mm512_cmpge_epi32_mask(v, R.s2), k, one);
  if constexpr (N == 0) k = _mm512_sub_epi32(search16(v, R.start), one);   // start[0] ≤ v: ≥ 0
  const __m512i start = _mm512_permutexvar_epi32(k, R.start), step = _mm512_permutexvar_epi32(k, R.step);
  // d = min(max(v, start) - start, cap): no overflow (start ≥ -2^30, v < 2^30)
  const __m512i d = _mm512_min_epi32(_mm512_sub_epi32(_mm512_max_epi32(v, start), start), _mm512_permutexvar_epi32(k, R.cap));
  if constexpr (Exact) {   // d >> rshift < 2^24: exact in float
    const __m512i ds = _mm512_srlv_epi32(d, _mm512_permutexvar_epi32(k, R.rshift));
    const __m512 x = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ds), _mm512_permutexvar_ps(k, R.mul), _mm512_permutexvar_ps(k, R.add));
    return _mm512_add_epi32(_mm512_permutexvar_epi32(k, R.first), _mm512_cvttps_epi32(x));
  }
  __m512i q = _mm512_cvttps_epi32(_mm512_mul_ps(_mm512_cvtepi32_ps(d), _mm512_permutexvar_ps(k, R.inv)));
  const __m512i r = _mm512_sub_epi32(d, _mm512_mullo_epi32(q, step));
  q = _mm512_mask_sub_epi32(q, _mm512_cmplt_epi32_mask(r, _mm512_setzero_si512()), q, one);
  q = _mm512_mask_add_epi32(q, _mm512_cmpge_epi32_mask(r, step), q, one);
  return _mm512_add_epi32(_mm512_permutexvar_epi32(k, R.first), q);
}

template <int N, bool Exact>
__attribute__((always_inline)) inline __m512i count_levels_runs(__m512i v, const RunRegs& R) {
  const __m512i below = _mm512_maskz_mov_epi32(_mm512_cmpge_epi32_mask(v, R.t0), _mm512_set1_epi32(1));   // [v ≥ t0]
  return _mm512_mask_mov_epi32(below, _mm512_cmpge_epi32_mask(v, R.t1), runs_level<N, Exact>(v, R));
}

// f(std::integral_constant<int, N>, std::bool_constant<Exact>) with N = the run count when 1..3, else 0 (the
// generic search), and Exact = ThresholdRuns::exact; N = -L for the lines form of L lines
template <class F>
__attribute__((always_inline)) inline void with_runs(const RunRegs& R, F f) {
  switch (R.lines) {
    case 1: return f(std::integral_constant<int, -1>{}, std::true_type{});
    case 2: return f(std::integral_constant<int, -2>{}, std::true_type{});
    case 3: return f(std::integral_constant<int, -3>{}, std::true_type{});
    case 4: return f(std::integral_constant<int, -4>{}, std::true_type{});
    default: break;
  }
  auto count = [&](auto exact) {
    switch (R.n) {
      case 1: f(std::integral_constant<int, 1>{}, exact); break;
      case 2: f(std::integral_constant<int, 2>{}, exact); break;
      case 3: f(std::integral_constant<int, 3>{}, exact); break;
      default: f(std::integral_constant<int, 0>{}, exact); break;
    }
  };
  if (R.exact) count(std::true_type{});
  else count(std::false_type{});
}

// The octave-class index (ThresholdTable::octave_ok, log-spaced sets): two dword permutes (octave entry, class
// entry), a variable shift for the bits below the bucket, and two byte permutes for v < 256: no gather. Needs
// AVX-512 VBMI (vpermi2b), so these functions carry their own target attribute and are only reached when
// cpu_supports_avx512_vbmi() held when the table was built (octave_ok is false otherwise).
#define WQ_VBMI __attribute__((target("avx512vbmi")))
// GCC 12 flags the intrinsics' own `__Y = __Y` placeholders when they are inlined into a target("...") function
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"

struct OctaveRegs {
  __m512i oct0, oct1, c0, c1, c2, c3, s0, s1, s2, s3, t0, reach;
};

WQ_VBMI __attribute__((always_inline)) inline OctaveRegs octave_regs(const ThresholdTable* t) {
  OctaveRegs r;
  r.oct0 = _mm512_load_si512(t->octave);
  r.oct1 = _mm512_load_si512(t->octave + 16);
  r.c0 = _mm512_load_si512(t->octave_class);
  r.c1 = _mm512_load_si512(t->octave_class + 16);
  r.c2 = _mm512_load_si512(t->octave_class + 32);
  r.c3 = _mm512_load_si512(t->octave_class + 48);
  r.s0 = _mm512_load_si512(t->octave_small);
  r.s1 = _mm512_load_si512(t->octave_small + 64);
  r.s2 = _mm512_load_si512(t->octave_small + 128);
  r.s3 = _mm512_load_si512(t->octave_small + 192);
  r.t0 = _mm512_set1_epi32(t->padded[0]);
  r.reach = _mm512_set1_epi32(t->octave_reach);
  return r;
}

// level = #{j : t[j] ≤ v} for 16 lanes (ThresholdTable::octave_ok; see there for the formula); Two: two classes
template <bool Two>
WQ_VBMI __attribute__((always_inline)) inline __m512i count_levels_octave(__m512i v, const OctaveRegs& R) {
  const __mmask16 live = _mm512_cmpge_epi32_mask(v, R.t0);   // t[0] ≥ 1: live lanes are positive
  // the truncating conversion keeps the exponent (e + 127) and the 5 bits below the leading one
  const __m512i bits = _mm512_castps_si512(_mm512_cvt_roundepi32_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC));
  const __m512i ex = _mm512_srli_epi32(bits, 23);
  const __m512i oct = _mm512_permutex2var_epi32(R.oct0, ex, R.oct1);             // index (127 + e) & 31
  const __m512i mi = _mm512_srli_epi32(bits, 18);                                // low 5 bits: m
  __m512i ent = _mm512_permutex2var_epi32(R.c0, mi, R.c1);
  if constexpr (Two) ent = _mm512_mask_mov_epi32(ent, _mm512_test_epi32_mask(oct, _mm512_set1_epi32(1)),
                                                 _mm512_permutex2var_epi32(R.c2, mi, R.c3));
  // frac << 8: the k = e - 5 bits below the bucket's at bits 8..31 (shift 37 - e = 164 - (e + 127); the bits from
  // the bucket's up leave the word), against D << 8 = the entry without L
  const __m512i frac8 = _mm512_sllv_epi32(v, _mm512_sub_epi32(_mm512_set1_epi32(164), ex));
  const __mmask16 below = _mm512_cmplt_epu32_mask(frac8, _mm512_andnot_si512(_mm512_set1_epi32(0xFF), ent));
  __m512i lv = _mm512_add_epi32(_mm512_srai_epi32(oct, 8), _mm512_and_si512(ent, _mm512_set1_epi32(0xFF)));
  lv = _mm512_min_epi32(_mm512_mask_sub_epi32(lv, below, lv, _mm512_set1_epi32(1)), R.reach);
  // v < 256: octave_small[v] through byte 0 of each lane (the other bytes zeroed by the mask)
  const __mmask64 byte0 = 0x1111111111111111ull;
  const __m512i lo = _mm512_maskz_permutex2var_epi8(byte0, R.s0, v, R.s1);
  const __m512i hi = _mm512_maskz_permutex2var_epi8(byte0, R.s2, v, R.s3);
  const __m512i sm = _mm512_mask_mov_epi32(lo, _mm512_test_epi32_mask(v, _mm512_set1_epi32(128)), hi);
  lv = _mm512_mask_mov_epi32(lv, _mm512_cmplt_epu32_mask(v, _mm512_set1_epi32(256)), sm);
  return _mm512_maskz_mov_epi32(live, lv);
}

// edge_levels over the octave index: the tables stay in registers, two vectors in flight
template <bool Two>
WQ_VBMI __attribute__((always_inline)) inline void edge_levels_octave_t(const int32_t* acc, uint8_t* y, size_t n,
                                                                        int32_t bias, const ThresholdTable* t) {
  const OctaveRegs R = octave_regs(t);
  const __m512i b = _mm512_set1_epi32(bias);
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512i l0 = count_levels_octave<Two>(_mm512_add_epi32(_mm512_loadu_si512(acc + i), b), R);
    const __m512i l1 = count_levels_octave<Two>(_mm512_add_epi32(_mm512_loadu_si512(acc + i + 16), b), R);
    store_levels4(y + i, l0, l1, l1, l1, 0xFFFF, 0xFFFF, 0, 0);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(static_cast<int>(n - i < 16 ? n - i : 16));
    const __m512i v = _mm512_add_epi32(_mm512_maskz_loadu_epi32(m, acc + i), b);
    store_levels(y + i, m, count_levels_octave<Two>(v, R));
  }
}

WQ_VBMI __attribute__((noinline)) void edge_levels_octave(const int32_t* acc, uint8_t* y, size_t n, int32_t bias,
                                                          const ThresholdTable* t) {
  if (t->octave_classes > 1) edge_levels_octave_t<true>(acc, y, n, bias, t);
  else edge_levels_octave_t<false>(acc, y, n, bias, t);
}

// One tile row of the register-tiled edge over the octave index: the tables are loaded once for its NV vectors
template <int NV, bool Two>
WQ_VBMI __attribute__((always_inline)) inline void edge_row_octave_t(__m512i a0, __m512i a1, __m512i a2, __mmask16 m0,
                                                                     __mmask16 m1, __mmask16 m2, int32_t bias,
                                                                     const ThresholdTable* t, uint8_t* out) {
  const OctaveRegs R = octave_regs(t);
  const __m512i b = _mm512_set1_epi32(bias);
  const __m512i l0 = count_levels_octave<Two>(_mm512_add_epi32(a0, b), R);
  const __m512i l1 = NV > 1 ? count_levels_octave<Two>(_mm512_add_epi32(a1, b), R) : l0;
  const __m512i l2 = NV > 2 ? count_levels_octave<Two>(_mm512_add_epi32(a2, b), R) : l0;
  store_levels4(out, l0, l1, l2, l2, m0, NV > 1 ? m1 : 0, NV > 2 ? m2 : 0, 0);
}

template <int NV>
WQ_VBMI __attribute__((noinline)) void edge_row_octave(__m512i a0, __m512i a1, __m512i a2, __mmask16 m0, __mmask16 m1,
                                                       __mmask16 m2, int32_t bias, const ThresholdTable* t, uint8_t* out) {
  if (t->octave_classes > 1) edge_row_octave_t<NV, true>(a0, a1, a2, m0, m1, m2, bias, t, out);
  else edge_row_octave_t<NV, false>(a0, a1, a2, m0, m1, m2, bias, t, out);
}

#pragma GCC diagnostic pop

// The tile edge calls it out of line: inlined 24 times per tile it bloats the ≤ 15-threshold (search16) tiles.
// (octave_ok tables never get here: edge_row takes them a row at a time)
__attribute__((noinline)) __m512i count_levels_far(__m512i v, const ThresholdTable* t) {
  return t->packed_ok ? count_levels_packed(v, t) : count_levels_bucketed(v, t);
}

// One tile row over the arithmetic index: its constants are set up once for the row's NV vectors
template <int NV>
__attribute__((noinline)) void edge_row_runs(__m512i a0, __m512i a1, __m512i a2, __mmask16 m0, __mmask16 m1,
                                             __mmask16 m2, int32_t bias, const ThresholdTable* t, uint8_t* out) {
  const RunRegs R(t);
  const __m512i b = _mm512_set1_epi32(bias);
  with_runs(R, [&](auto n, auto exact) {
    constexpr int N = decltype(n)::value;
    constexpr bool F = decltype(exact)::value;
    const __m512i l0 = count_levels_runs<N, F>(_mm512_add_epi32(a0, b), R);
    const __m512i l1 = NV > 1 ? count_levels_runs<N, F>(_mm512_add_epi32(a1, b), R) : l0;
    const __m512i l2 = NV > 2 ? count_levels_runs<N, F>(_mm512_add_epi32(a2, b), R) : l0;
    store_levels4(out, l0, l1, l2, l2, m0, NV > 1 ? m1 : 0, NV > 2 ? m2 : 0, 0);
  });
}

// floor(acc · r / 2^22) per lane, r = r_even (as int64 in the even lanes' qwords) and r_odd (the odd lanes'): as
// scale_rows, bits 22..53 of the exact int64 products (the result fits int32, so the logical shift's low 32 bits
// are the flooring arithmetic shift's)
inline __m512i scale_lanes(__m512i a, __m512i r_even, __m512i r_odd) {
  const __m512i even = _mm512_srli_epi64(_mm512_mul_epi32(a, r_even), 22);
  const __m512i odd = _mm512_slli_epi64(_mm512_srli_epi64(_mm512_mul_epi32(_mm512_srli_epi64(a, 32), r_odd), 22), 32);
  return _mm512_mask_blend_epi32(0xAAAA, even, odd);
}

// floor(a · r / 2^22) per lane for one row's scale r (vpmuldq reads the low dword of each qword: r in every one)
__attribute__((always_inline)) inline __m512i scale_row(__m512i a, int32_t r) {
  const __m512i rv = _mm512_set1_epi32(r);
  return scale_lanes(a, rv, rv);
}

// float32(float64(acc · r) · 2^-22 + float64(bias)) · scale for one row's scale r, 16 accumulators (op-contract §3
// with a row scale): |acc · r| < 2^52 is exact in float64 and so is its scaling by 2^-22, the FMA adds the bias with
// the one rounding of the float64 sum, vcvtpd2ps rounds to float32 (nearest even) and the exact power of two
// `scale` (a normal float32) rounds once more only where ldexpf would (a subnormal result)
__attribute__((always_inline)) inline __m512 edge_float_scaled16(__m512i a, int32_t r, int32_t bias, float scale) {
  const __m512i rv = _mm512_set1_epi32(r);
  const __m512d unit = _mm512_set1_pd(0x1p-22), b = _mm512_set1_pd(static_cast<double>(bias));
  const __m512d even = _mm512_fmadd_pd(_mm512_cvtepi64_pd(_mm512_mul_epi32(a, rv)), unit, b);
  const __m512d odd = _mm512_fmadd_pd(_mm512_cvtepi64_pd(_mm512_mul_epi32(_mm512_srli_epi64(a, 32), rv)), unit, b);
  const __m512i lanes = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512 f = _mm512_permutex2var_ps(_mm512_castps256_ps512(_mm512_cvtpd_ps(even)), lanes,
                                          _mm512_castps256_ps512(_mm512_cvtpd_ps(odd)));
  return _mm512_mul_ps(f, _mm512_set1_ps(scale));
}

bool shares_runs(const TileEdge& e, int rows) {
  if (e.raw || e.tables == nullptr) return false;
  const ThresholdTable* t = e.tables[0];
  if (t->blocks <= 1 || t->runs.count == 0) return false;
  for (int r = 1; r < rows; ++r)
    if (e.tables[r] != t) return false;
  return true;
}

// The tile's rows (acc: rows of 48 int32) through the one arithmetic index they share: edge_row_runs for all rows at
// once, so the run registers are loaded once per tile and the rows' independent chains overlap (measured on a 1x1
// QConv 16 -> 96 at 112x112, three runs, ns per output incl. GEMM, A/B in one session: int16 0.294 -> 0.268, u8
// 0.267 -> 0.240; build/exp6/edge_mb2.py)
template <int NV>
__attribute__((noinline)) void edge_tile_runs(const int32_t* acc, int rows, __mmask16 m0, __mmask16 m1, __mmask16 m2,
                                              const TileEdge& e) {
  const RunRegs R(e.tables[0]);
  with_runs(R, [&](auto n, auto exact) {
    constexpr int N = decltype(n)::value;
    constexpr bool F = decltype(exact)::value;
    for (int r = 0; r < rows; ++r) {
      const __m512i b = _mm512_set1_epi32(e.bias[r]);
      const int32_t* a = acc + 48 * r;
      uint8_t* out = static_cast<uint8_t*>(e.out[r]);
      auto v = [&](int i) {
        const __m512i x = _mm512_load_si512(a + 16 * i);
        return _mm512_add_epi32(e.row_scale != nullptr ? scale_row(x, e.row_scale[r]) : x, b);
      };
      const __m512i l0 = count_levels_runs<N, F>(v(0), R);
      const __m512i l1 = NV > 1 ? count_levels_runs<N, F>(v(1), R) : l0;
      const __m512i l2 = NV > 2 ? count_levels_runs<N, F>(v(2), R) : l0;
      store_levels4(out, l0, l1, l2, l2, m0, NV > 1 ? m1 : 0, NV > 2 ? m2 : 0, 0);
    }
  });
}

__attribute__((always_inline)) inline void edge_vector(__m512i acc, int r, int v, __mmask16 m, const TileEdge& e) {
  const __m512i x = _mm512_add_epi32(acc, _mm512_set1_epi32(e.bias[r]));
  if (e.raw) {
    store_i32(static_cast<int32_t*>(e.out[r]) + 16 * v, m, x);
  } else if (e.tables != nullptr) {
    const ThresholdTable* t = e.tables[r];
    const __m512i lv = t->blocks == 1 ? search16(x, _mm512_load_si512(t->padded)) : count_levels_far(x, t);
    store_levels(static_cast<uint8_t*>(e.out[r]) + 16 * v, m, lv);
  } else if (e.row_scale != nullptr) {
    store_f32(static_cast<float*>(e.out[r]) + 16 * v, m, edge_float_scaled16(acc, e.row_scale[r], e.bias[r], e.scale[r]));
  } else {
    const __m512 f = _mm512_cvt_roundepi32_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    store_f32(static_cast<float*>(e.out[r]) + 16 * v, m, _mm512_mul_ps(f, _mm512_set1_ps(e.scale[r])));
  }
}

template <int NV>
__attribute__((always_inline)) inline void edge_row(__m512i a0, __m512i a1, __m512i a2, int r, __mmask16 m0,
                                                    __mmask16 m1, __mmask16 m2, const TileEdge& e) {
  if (e.row_scale != nullptr && e.tables != nullptr) {   // levels: the quantizers below read the scaled accumulator
    a0 = scale_row(a0, e.row_scale[r]);
    if constexpr (NV > 1) a1 = scale_row(a1, e.row_scale[r]);
    if constexpr (NV > 2) a2 = scale_row(a2, e.row_scale[r]);
  }
  if (e.tables != nullptr && !e.raw) {
    const ThresholdTable* t = e.tables[r];
    if (t->blocks > 1 && t->runs.count > 0) {
      edge_row_runs<NV>(a0, a1, a2, m0, m1, m2, e.bias[r], t, static_cast<uint8_t*>(e.out[r]));
      return;
    }
    if (t->blocks > 1 && t->octave_ok) {
      edge_row_octave<NV>(a0, a1, a2, m0, m1, m2, e.bias[r], t, static_cast<uint8_t*>(e.out[r]));
      return;
    }
  }
  edge_vector(a0, r, 0, m0, e);
  if constexpr (NV > 1) edge_vector(a1, r, 1, m1, e);
  if constexpr (NV > 2) edge_vector(a2, r, 2, m2, e);
}

// QRelu's float thresholds, padded with NaN (never ≤ x): the same two-level search with ordered ≤ compares, so a
// NaN input counts nothing.
inline __m512i search16_f32(__m512 v, __m512 table) {
  __m512i pos = _mm512_setzero_si512();
  for (int step = 8; step >= 1; step >>= 1) {
    const __m512i cand = _mm512_add_epi32(pos, _mm512_set1_epi32(step));
    const __m512 t = _mm512_permutexvar_ps(_mm512_sub_epi32(cand, _mm512_set1_epi32(1)), table);
    pos = _mm512_mask_mov_epi32(pos, _mm512_cmp_ps_mask(t, v, _CMP_LE_OQ), cand);
  }
  return pos;
}

inline __m512i count_levels_f32(__m512 v, const FloatThresholds* t) {
  if (t->blocks == 1) return search16_f32(v, _mm512_load_ps(t->padded));
  // as count_levels, with ordered compares (NaN counts nothing)
  const __m512i blk = search16_f32(v, _mm512_load_ps(t->transposed[15]));
  auto C = [&](int j) { return _mm512_load_ps(t->transposed[j]); };
  auto le = [&](__m512 x) { return _mm512_cmp_ps_mask(x, v, _CMP_LE_OQ); };
  const __m512i s8 = _mm512_set1_epi32(8), s4 = _mm512_set1_epi32(4), s2 = _mm512_set1_epi32(2);
  __m512i pos = _mm512_maskz_mov_epi32(le(_mm512_permutexvar_ps(blk, C(7))), s8);
  __m512i idx = _mm512_add_epi32(blk, _mm512_slli_epi32(pos, 1));
  pos = _mm512_mask_add_epi32(pos, le(_mm512_permutex2var_ps(C(3), idx, C(11))), pos, s4);
  idx = _mm512_add_epi32(blk, _mm512_slli_epi32(_mm512_and_si512(pos, s4), 2));
  const __mmask16 hi8 = _mm512_test_epi32_mask(pos, s8);
  __m512 tv = _mm512_mask_mov_ps(_mm512_permutex2var_ps(C(1), idx, C(5)), hi8, _mm512_permutex2var_ps(C(9), idx, C(13)));
  pos = _mm512_mask_add_epi32(pos, le(tv), pos, s2);
  idx = _mm512_add_epi32(blk, _mm512_slli_epi32(_mm512_and_si512(pos, s2), 3));
  const __mmask16 b4 = _mm512_test_epi32_mask(pos, s4), b8 = _mm512_test_epi32_mask(pos, s8);
  const __m512 lo = _mm512_mask_mov_ps(_mm512_permutex2var_ps(C(0), idx, C(2)), b4, _mm512_permutex2var_ps(C(4), idx, C(6)));
  const __m512 hi = _mm512_mask_mov_ps(_mm512_permutex2var_ps(C(8), idx, C(10)), b4, _mm512_permutex2var_ps(C(12), idx, C(14)));
  tv = _mm512_mask_mov_ps(lo, b8, hi);
  pos = _mm512_mask_add_epi32(pos, le(tv), pos, _mm512_set1_epi32(1));
  return _mm512_add_epi32(_mm512_slli_epi32(blk, 4), pos);
}

// IsaKernels::gemv_nibbles for R (1 or 2) rows. A block of four k-pairs is one 64-byte load; nibble q of every
// word is the table index for pair 4g + q, and vpermw reads the low 5 bits of each index word, so the table
// repeated twice makes a shift alone (no mask) select nibble q. Four accumulators per row, one per nibble: one
// would chain four dependent vpdpwssd per block, and integer sums do not care about the order. Named accumulators,
// as in tile: in an array GCC keeps them on the stack once there are eight.
template <int R>
void gemv_nibbles_rows(const int16_t* a, size_t lda, const uint8_t* nibbles, const int16_t* table32, size_t kp,
                       int32_t* c, size_t ldc) {
  static_assert(R == 1 || R == 2, "gemv_nibbles: 1 or 2 rows (kNibbleRows)");
  const __m512i table = _mm512_loadu_si512(table32);
  const __m512i z = _mm512_setzero_si512();
  __m512i c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
  const char* a0 = reinterpret_cast<const char*>(a);
  const char* a1 = reinterpret_cast<const char*>(a + (R > 1 ? lda : 0));
  // the first P pairs of block g (P a constant)
  auto block = [&](size_t g, auto pairs) __attribute__((always_inline)) {
    constexpr int P = decltype(pairs)::value;
    const __m512i w = _mm512_loadu_si512(nibbles + 64 * g);
    // pair q: its weights (nibble q), then acc_r += them · the row's pair, which vpdpwssd reads from memory as its
    // embedded broadcast (no shuffle uop)
    auto pair = [&](int q, __m512i& acc0, __m512i& acc1) __attribute__((always_inline)) {
      const __m512i b = _mm512_permutexvar_epi16(q == 0 ? w : _mm512_srli_epi16(w, 4 * q), table);
      __asm__("vpdpwssd %2%{1to16%}, %1, %0"
              : "+v"(acc0)
              : "v"(b), "m"(*reinterpret_cast<const int32_t*>(a0 + 16 * g + 4 * q)));
      if constexpr (R > 1)
        __asm__("vpdpwssd %2%{1to16%}, %1, %0"
                : "+v"(acc1)
                : "v"(b), "m"(*reinterpret_cast<const int32_t*>(a1 + 16 * g + 4 * q)));
    };
    pair(0, c00, c10);
    if constexpr (P > 1) pair(1, c01, c11);
    if constexpr (P > 2) pair(2, c02, c12);
    if constexpr (P > 3) pair(3, c03, c13);
  };
  const size_t blocks = kp / 4, rest = kp % 4;
  for (size_t g = 0; g < blocks; ++g) block(g, std::integral_constant<int, 4>{});
  if (rest == 1) block(blocks, std::integral_constant<int, 1>{});
  if (rest == 2) block(blocks, std::integral_constant<int, 2>{});
  if (rest == 3) block(blocks, std::integral_constant<int, 3>{});
  _mm512_storeu_si512(c, _mm512_add_epi32(_mm512_add_epi32(c00, c01), _mm512_add_epi32(c02, c03)));
  if constexpr (R > 1)
    _mm512_storeu_si512(c + ldc, _mm512_add_epi32(_mm512_add_epi32(c10, c11), _mm512_add_epi32(c12, c13)));
}

}  // namespace

namespace isa_avx512 {

const int kMR = kRows;
const int kNR = kCols;

// the int16 tiles: strides in int16, kp pairs
void gemm_tile(const int16_t* a, size_t lda, const int16_t* b, size_t ldb, size_t kp, int32_t* c, size_t ldc, int rows,
               int ncols) {
  tile_any<Dot::kS16Pairs, false>(bytes_of(a), 2 * lda, bytes_of(b), 2 * ldb, kp, c, ldc, rows, ncols, nullptr);
}

void gemm_tile_edge(const int16_t* a, size_t lda, const int16_t* b, size_t ldb, size_t kp, int rows, int ncols,
                    const TileEdge& edge) {
  tile_any<Dot::kS16Pairs, true>(bytes_of(a), 2 * lda, bytes_of(b), 2 * ldb, kp, nullptr, 0, rows, ncols, &edge);
}

// the u8 × s8 tiles: strides in bytes, kq quads
void gemm_tile_u8(const int8_t* a, size_t lda, const uint8_t* b, size_t ldb, size_t kq, int32_t* c, size_t ldc,
                  int rows, int ncols) {
  tile_any<Dot::kU8S8Quads, false>(bytes_of(a), lda, bytes_of(b), ldb, kq, c, ldc, rows, ncols, nullptr);
}

void gemm_tile_u8_edge(const int8_t* a, size_t lda, const uint8_t* b, size_t ldb, size_t kq, int rows, int ncols,
                       const TileEdge& edge) {
  tile_any<Dot::kU8S8Quads, true>(bytes_of(a), lda, bytes_of(b), ldb, kq, nullptr, 0, rows, ncols, &edge);
}

void gemm_tile_pool_edge(const int16_t* a, size_t lda, const int16_t* b, size_t ldb, size_t kp, int rows, int ncols,
                         const TileEdge& edge) {
  tile_pool_any<Dot::kS16Pairs>(bytes_of(a), 2 * lda, bytes_of(b), 2 * ldb, kp, rows, ncols, edge);
}

void gemm_tile_u8_pool_edge(const int8_t* a, size_t lda, const uint8_t* b, size_t ldb, size_t kq, int rows, int ncols,
                            const TileEdge& edge) {
  tile_pool_any<Dot::kU8S8Quads>(bytes_of(a), lda, bytes_of(b), ldb, kq, rows, ncols, edge);
}

void gemv_nibbles(const int16_t* a, size_t lda, const uint8_t* nibbles, const int16_t* table32, size_t kp, int32_t* c,
                  size_t ldc, int rows) {
  if (rows == 1) gemv_nibbles_rows<1>(a, lda, nibbles, table32, kp, c, ldc);
  else gemv_nibbles_rows<2>(a, lda, nibbles, table32, kp, c, ldc);
}

namespace {

// 16 floats → int32 mantissas clip(rint(x · s), lo, hi), NaN → 0 (lanes outside m read as 0)
inline __m512i quantize16(const float* x, __mmask16 m, __m512 s, __m512 lo, __m512 hi) {
  __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x), s);
  v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);   // NaN → 0
  v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
  return _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// A 256-entry int16 table in eight registers; lookup of 32 uint8 indices (zero-extended to 16-bit lanes).
struct Table256 {
  __m512i t[8];
  explicit Table256(const int16_t* table) {
    for (int j = 0; j < 8; ++j) t[j] = _mm512_loadu_si512(table + 32 * j);
  }
  __m512i operator()(__m512i idx) const {
    // permutex2var uses the low 6 bits; bits 6 and 7 choose among the four 64-entry quarters
    const __m512i q0 = _mm512_permutex2var_epi16(t[0], idx, t[1]);
    const __m512i q1 = _mm512_permutex2var_epi16(t[2], idx, t[3]);
    const __m512i q2 = _mm512_permutex2var_epi16(t[4], idx, t[5]);
    const __m512i q3 = _mm512_permutex2var_epi16(t[6], idx, t[7]);
    const __mmask32 b6 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(64));
    const __mmask32 b7 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(128));
    const __m512i lo = _mm512_mask_mov_epi16(q0, b6, q1);
    const __m512i hi = _mm512_mask_mov_epi16(q2, b6, q3);
    return _mm512_mask_mov_epi16(lo, b7, hi);
  }
};

inline __mmask32 tail_mask32(size_t n) { return n >= 32 ? ~__mmask32(0) : (__mmask32(1) << n) - 1; }

inline uint8_t hmax_u8(__m256i v) {
  alignas(32) uint8_t b[32];
  _mm256_store_si256(reinterpret_cast<__m256i*>(b), v);
  uint8_t m = 0;
  for (uint8_t x : b) m = x > m ? x : m;
  return m;
}

}  // namespace

void quantize(const float* x, int16_t* y, size_t n, float scale, float xmax) {
  const __m512 s = _mm512_set1_ps(scale), hi = _mm512_set1_ps(xmax), lo = _mm512_set1_ps(-xmax);
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(static_cast<int>(n - i < 16 ? n - i : 16));
    store_words(y + i, m, quantize16(x + i, m, s, lo, hi));
  }
}

uint8_t lookup(const uint8_t* x, int16_t* y, size_t n, const int16_t* table256) {
  const Table256 table(table256);
  __m256i mx = _mm256_setzero_si256();
  for (size_t i = 0; i < n; i += 32) {
    const __mmask32 m = tail_mask32(n - i);
    const __m256i b = _mm256_maskz_loadu_epi8(m, x + i);
    mx = _mm256_max_epu8(mx, b);
    store_i16(y + i, m, table(_mm512_cvtepu8_epi16(b)));
  }
  return hmax_u8(mx);
}

// int16 permutes interleaving two registers of 32 int16 into int32 (first, second): elements 0..15 and 16..31
alignas(64) static const int16_t kInterleaveLo[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                                      8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
alignas(64) static const int16_t kInterleaveHi[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                                      24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};

uint8_t pair_levels(const uint8_t* x0, const uint8_t* x1, int32_t* dst, size_t n, const int16_t* table256) {
  const __m512i lo = _mm512_load_si512(kInterleaveLo), hi = _mm512_load_si512(kInterleaveHi);
  const Table256 table(table256);
  __m256i mx = _mm256_setzero_si256();
  for (size_t i = 0; i < n; i += 32) {
    const size_t cnt = n - i < 32 ? n - i : 32;
    const __mmask32 m = tail_mask32(cnt);
    const __m256i b0 = _mm256_maskz_loadu_epi8(m, x0 + i);
    const __m256i b1 = x1 != nullptr ? _mm256_maskz_loadu_epi8(m, x1 + i) : _mm256_setzero_si256();
    mx = _mm256_max_epu8(mx, _mm256_max_epu8(b0, b1));
    const __m512i a = table(_mm512_cvtepu8_epi16(b0));
    const __m512i b = x1 != nullptr ? table(_mm512_cvtepu8_epi16(b1)) : _mm512_setzero_si512();
    store_i32(dst + i, tail_mask(static_cast<int>(cnt)), _mm512_permutex2var_epi16(a, lo, b));
    if (cnt > 16)
      store_i32(dst + i + 16, tail_mask(static_cast<int>(cnt - 16)), _mm512_permutex2var_epi16(a, hi, b));
  }
  return hmax_u8(mx);
}

// The quad image without VBMI: the int16 table lookups of pair_levels for the four channels (every entry is within
// 0..255, so the high bytes are zero), the channels joined as (m0 | m1 << 8) and (m2 | m3 << 8) per int16 lane and
// those interleaved into int32 as pair_levels does.
uint8_t quad_levels(const uint8_t* x0, const uint8_t* x1, const uint8_t* x2, const uint8_t* x3, int32_t* dst, size_t n,
                    const int16_t* table256) {
  const __m512i lo = _mm512_load_si512(kInterleaveLo), hi = _mm512_load_si512(kInterleaveHi);
  const Table256 table(table256);
  const uint8_t* const x[4] = {x0, x1, x2, x3};
  __m256i mx = _mm256_setzero_si256();
  for (size_t i = 0; i < n; i += 32) {
    const size_t cnt = n - i < 32 ? n - i : 32;
    const __mmask32 m = tail_mask32(cnt);
    __m512i w[4];
    for (int c = 0; c < 4; ++c) {
      w[c] = _mm512_setzero_si512();
      if (x[c] == nullptr) continue;
      const __m256i b = _mm256_maskz_loadu_epi8(m, x[c] + i);
      mx = _mm256_max_epu8(mx, b);
      w[c] = table(_mm512_cvtepu8_epi16(b));
    }
    const __m512i w01 = _mm512_or_si512(w[0], _mm512_slli_epi16(w[1], 8));
    const __m512i w23 = _mm512_or_si512(w[2], _mm512_slli_epi16(w[3], 8));
    store_i32(dst + i, tail_mask(static_cast<int>(cnt)), _mm512_permutex2var_epi16(w01, lo, w23));
    if (cnt > 16)
      store_i32(dst + i + 16, tail_mask(static_cast<int>(cnt - 16)), _mm512_permutex2var_epi16(w01, hi, w23));
  }
  return hmax_u8(mx);
}

// ---- AVX-512 VBMI level lookups: the table's byte planes (kLevelTableInt16) in eight registers, 64 lookups per
// pair of vpermi2b (bit 7 of the level picks the upper 128 entries), the int16 / int32-pair results put together
// with unpacks, the input bytes pre-permuted so the unpacks (within 128-bit lanes) come out in order.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace {

struct BytePlanes {
  __m512i l0, l1, l2, l3, h0, h1, h2, h3;
};

WQ_VBMI __attribute__((always_inline)) inline BytePlanes byte_planes(const int16_t* table256) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(table256 + 256);
  BytePlanes t;
  t.l0 = _mm512_loadu_si512(p), t.l1 = _mm512_loadu_si512(p + 64);
  t.l2 = _mm512_loadu_si512(p + 128), t.l3 = _mm512_loadu_si512(p + 192);
  t.h0 = _mm512_loadu_si512(p + 256), t.h1 = _mm512_loadu_si512(p + 320);
  t.h2 = _mm512_loadu_si512(p + 384), t.h3 = _mm512_loadu_si512(p + 448);
  return t;
}

// the low and high bytes of table[idx] for 64 byte indices
WQ_VBMI __attribute__((always_inline)) inline void lookup64(__m512i idx, const BytePlanes& t, __m512i* lo, __m512i* hi) {
  const __mmask64 top = _mm512_movepi8_mask(idx);
  *lo = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(t.l0, idx, t.l1), _mm512_permutex2var_epi8(t.l2, idx, t.l3));
  *hi = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(t.h0, idx, t.h1), _mm512_permutex2var_epi8(t.h2, idx, t.h3));
}

inline __mmask64 bytes_mask(size_t n) { return n >= 64 ? ~__mmask64(0) : (__mmask64(1) << n) - 1; }

WQ_VBMI __attribute__((always_inline)) inline uint8_t hmax_u8_512(__m512i v) {
  return hmax_u8(_mm256_max_epu8(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)));
}

}  // namespace

WQ_VBMI uint8_t lookup_vbmi(const uint8_t* x, int16_t* y, size_t n, const int16_t* table256) {
  const BytePlanes t = byte_planes(table256);
  // 128-bit lane j gets input bytes 8j..8j+7 and 32+8j..: unpacklo / unpackhi then give elements 0..31 / 32..63
  const __m512i order = _mm512_setr_epi64(0, 4, 1, 5, 2, 6, 3, 7);
  __m512i mx = _mm512_setzero_si512();
  for (size_t i = 0; i < n; i += 64) {
    const size_t cnt = n - i < 64 ? n - i : 64;
    const __m512i b = _mm512_maskz_loadu_epi8(bytes_mask(cnt), x + i);
    mx = _mm512_max_epu8(mx, b);
    __m512i lo, hi;
    lookup64(_mm512_permutexvar_epi64(order, b), t, &lo, &hi);
    store_i16(y + i, tail_mask32(cnt), _mm512_unpacklo_epi8(lo, hi));
    if (cnt > 32) store_i16(y + i + 32, tail_mask32(cnt - 32), _mm512_unpackhi_epi8(lo, hi));
  }
  return hmax_u8_512(mx);
}

WQ_VBMI uint8_t pair_levels_vbmi(const uint8_t* x0, const uint8_t* x1, int32_t* dst, size_t n, const int16_t* table256) {
  const BytePlanes t = byte_planes(table256);
  // dword 4j + q of the permuted input = dword 4q + j: 128-bit lane j holds elements 4j.., 16+4j.., 32+4j.., 48+4j..,
  // so the byte unpacks (words) and then the word unpacks (pairs) give elements 0..15, 16..31, 32..47, 48..63
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i z = _mm512_setzero_si512();
  __m512i mx = z;
  for (size_t i = 0; i < n; i += 64) {
    const size_t cnt = n - i < 64 ? n - i : 64;
    const __mmask64 m = bytes_mask(cnt);
    const __m512i b0 = _mm512_maskz_loadu_epi8(m, x0 + i);
    const __m512i b1 = x1 != nullptr ? _mm512_maskz_loadu_epi8(m, x1 + i) : z;
    mx = _mm512_max_epu8(mx, _mm512_max_epu8(b0, b1));
    __m512i lo0, hi0, lo1 = z, hi1 = z;
    lookup64(_mm512_permutexvar_epi32(order, b0), t, &lo0, &hi0);
    if (x1 != nullptr) lookup64(_mm512_permutexvar_epi32(order, b1), t, &lo1, &hi1);
    const __m512i w0l = _mm512_unpacklo_epi8(lo0, hi0), w0h = _mm512_unpackhi_epi8(lo0, hi0);
    const __m512i w1l = _mm512_unpacklo_epi8(lo1, hi1), w1h = _mm512_unpackhi_epi8(lo1, hi1);
    const int c = static_cast<int>(cnt);
    store_i32(dst + i, tail_mask(c), _mm512_unpacklo_epi16(w0l, w1l));
    if (c > 16) store_i32(dst + i + 16, tail_mask(c - 16), _mm512_unpackhi_epi16(w0l, w1l));
    if (c > 32) store_i32(dst + i + 32, tail_mask(c - 32), _mm512_unpacklo_epi16(w0h, w1h));
    if (c > 48) store_i32(dst + i + 48, tail_mask(c - 48), _mm512_unpackhi_epi16(w0h, w1h));
  }
  return hmax_u8_512(mx);
}

// The quad image with VBMI: the low-byte plane of the level table is the u8 table itself (entries within 0..255),
// four registers, 64 lookups per channel per pair of vpermi2b; the channels' bytes are then unpacked to words
// (0,1 and 2,3) and the words to dwords, with the input order of pair_levels_vbmi so they come out in order.
WQ_VBMI uint8_t quad_levels_vbmi(const uint8_t* x0, const uint8_t* x1, const uint8_t* x2, const uint8_t* x3,
                                 int32_t* dst, size_t n, const int16_t* table256) {
  const uint8_t* t = reinterpret_cast<const uint8_t*>(table256 + 256);
  const __m512i t0 = _mm512_loadu_si512(t), t1 = _mm512_loadu_si512(t + 64);
  const __m512i t2 = _mm512_loadu_si512(t + 128), t3 = _mm512_loadu_si512(t + 192);
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const uint8_t* const x[4] = {x0, x1, x2, x3};
  const __m512i z = _mm512_setzero_si512();
  __m512i mx = z;
  for (size_t i = 0; i < n; i += 64) {
    const size_t cnt = n - i < 64 ? n - i : 64;
    const __mmask64 m = bytes_mask(cnt);
    __m512i b[4];
    for (int c = 0; c < 4; ++c) {
      b[c] = z;
      if (x[c] == nullptr) continue;
      const __m512i lv = _mm512_maskz_loadu_epi8(m, x[c] + i);
      mx = _mm512_max_epu8(mx, lv);
      const __m512i idx = _mm512_permutexvar_epi32(order, lv);
      b[c] = _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), _mm512_permutex2var_epi8(t0, idx, t1),
                                    _mm512_permutex2var_epi8(t2, idx, t3));
    }
    const __m512i w01l = _mm512_unpacklo_epi8(b[0], b[1]), w01h = _mm512_unpackhi_epi8(b[0], b[1]);
    const __m512i w23l = _mm512_unpacklo_epi8(b[2], b[3]), w23h = _mm512_unpackhi_epi8(b[2], b[3]);
    const int c = static_cast<int>(cnt);
    store_i32(dst + i, tail_mask(c), _mm512_unpacklo_epi16(w01l, w23l));
    if (c > 16) store_i32(dst + i + 16, tail_mask(c - 16), _mm512_unpackhi_epi16(w01l, w23l));
    if (c > 32) store_i32(dst + i + 32, tail_mask(c - 32), _mm512_unpacklo_epi16(w01h, w23h));
    if (c > 48) store_i32(dst + i + 48, tail_mask(c - 48), _mm512_unpackhi_epi16(w01h, w23h));
  }
  return hmax_u8_512(mx);
}

// The 32-bit table entries of `cnt` ≤ 64 levels from a 256-entry table held as four byte planes (p[b][q]: byte b
// of entries 64q..64q+63), in level order: dec[q] holds levels 16q..16q+15. The levels are permuted so that the
// byte unpacks below (bytes 0,1 and 2,3 to words, the words to dwords) come out in order.
WQ_VBMI inline void decode_planes64(const __m512i p[4][4], const uint8_t* lv, size_t cnt, __m512i dec[4]) {
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i idx = _mm512_permutexvar_epi32(order, _mm512_maskz_loadu_epi8(bytes_mask(cnt), lv));
  const __mmask64 top = _mm512_movepi8_mask(idx);   // levels 128..255 come from planes q = 2, 3
  __m512i b[4];
  for (int k = 0; k < 4; ++k)
    b[k] = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(p[k][0], idx, p[k][1]),
                                  _mm512_permutex2var_epi8(p[k][2], idx, p[k][3]));
  const __m512i w01l = _mm512_unpacklo_epi8(b[0], b[1]), w01h = _mm512_unpackhi_epi8(b[0], b[1]);
  const __m512i w23l = _mm512_unpacklo_epi8(b[2], b[3]), w23h = _mm512_unpackhi_epi8(b[2], b[3]);
  dec[0] = _mm512_unpacklo_epi16(w01l, w23l), dec[1] = _mm512_unpackhi_epi16(w01l, w23l);
  dec[2] = _mm512_unpacklo_epi16(w01h, w23h), dec[3] = _mm512_unpackhi_epi16(w01h, w23h);
}

// QDecode: the float32 table as four byte planes (16 registers), 64 levels per iteration; the same input order
// as pair_levels_vbmi (bytes 0,1 and 2,3 unpacked to words, the words to dwords)
WQ_VBMI void qdecode_vbmi(const uint8_t* x, float* y, size_t n, const float* table256) {
  bool small = true;   // ≤ 32 entries: qdecode's single two-register permute is cheaper
  for (int j = 32; j < 256 && small; ++j) small = table256[j] == 0.0f;
  if (small) {
    qdecode(x, y, n, table256);
    return;
  }
  alignas(64) uint8_t planes[4][256];
  for (int j = 0; j < 256; ++j) {
    uint32_t u;
    std::memcpy(&u, table256 + j, sizeof(u));
    for (int b = 0; b < 4; ++b) planes[b][j] = static_cast<uint8_t>(u >> (8 * b));
  }
  __m512i t[4][4];
  for (int b = 0; b < 4; ++b)
    for (int q = 0; q < 4; ++q) t[b][q] = _mm512_load_si512(planes[b] + 64 * q);
  for (size_t i = 0; i < n; i += 64) {
    const size_t cnt = n - i < 64 ? n - i : 64;
    __m512i dec[4];
    decode_planes64(t, x + i, cnt, dec);
    for (int q = 0; q < 4 && 16 * q < static_cast<int>(cnt); ++q)
      store_i32(y + i + 16 * q, tail_mask(static_cast<int>(cnt) - 16 * q), dec[q]);
  }
}

#pragma GCC diagnostic pop

void pair_floats(const float* x0, const float* x1, int32_t* dst, size_t n, float scale, float xmax) {
  const __m512 s = _mm512_set1_ps(scale), hi = _mm512_set1_ps(xmax), lo = _mm512_set1_ps(-xmax);
  const __m512i low16 = _mm512_set1_epi32(0xFFFF);
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(static_cast<int>(n - i < 16 ? n - i : 16));
    const __m512i a = _mm512_and_si512(quantize16(x0 + i, m, s, lo, hi), low16);
    const __m512i b = x1 != nullptr ? _mm512_slli_epi32(quantize16(x1 + i, m, s, lo, hi), 16) : _mm512_setzero_si512();
    store_i32(dst + i, m, _mm512_or_si512(a, b));
  }
}

// The quad image of a float input (u8 path): byte c of dst[i] = clip(rint(x_c[i] · scale), ±xmax) + 128, a u8 since
// xmax ≤ 127 (QConv folds −128 · Σ C into the bias); a null channel gives 128 (its weights are zero).
void quad_floats(const float* x0, const float* x1, const float* x2, const float* x3, int32_t* dst, size_t n,
                 float scale, float xmax) {
  const __m512 s = _mm512_set1_ps(scale), hi = _mm512_set1_ps(xmax), lo = _mm512_set1_ps(-xmax);
  const __m512i offset = _mm512_set1_epi32(128);
  auto byte = [&](const float* x, size_t i, __mmask16 m) {
    return x != nullptr ? _mm512_add_epi32(quantize16(x + i, m, s, lo, hi), offset) : offset;
  };
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(static_cast<int>(n - i < 16 ? n - i : 16));
    const __m512i q = _mm512_or_si512(_mm512_or_si512(byte(x0, i, m), _mm512_slli_epi32(byte(x1, i, m), 8)),
                                      _mm512_or_si512(_mm512_slli_epi32(byte(x2, i, m), 16),
                                                      _mm512_slli_epi32(byte(x3, i, m), 24)));
    store_i32(dst + i, m, q);
  }
}

uint8_t max_u8(const uint8_t* x, size_t n) { return max_u8_generic(x, n); }

void edge_float(const int32_t* acc, float* y, size_t n, int32_t bias, float scale) {
  const __m512i b = _mm512_set1_epi32(bias);
  const __m512 s = _mm512_set1_ps(scale);
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(static_cast<int>(n - i < 16 ? n - i : 16));
    const __m512i v = _mm512_add_epi32(_mm512_maskz_loadu_epi32(m, acc + i), b);
    const __m512 f = _mm512_cvt_roundepi32_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    store_f32(y + i, m, _mm512_mul_ps(f, s));
  }
}

void edge_float_scaled(const int32_t* acc, float* y, size_t n, int32_t bias, int32_t r, float scale) {
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(static_cast<int>(n - i < 16 ? n - i : 16));
    store_f32(y + i, m, edge_float_scaled16(_mm512_maskz_loadu_epi32(m, acc + i), r, bias, scale));
  }
}

// floor(acc · r / 2^22) for 16 lanes, as in the AVX2 version (vpmuldq on even and odd lanes, bits 22..53)
void scale_rows(const int32_t* acc, int32_t* y, size_t n, int32_t r) {
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(static_cast<int>(n - i < 16 ? n - i : 16));
    store_i32(y + i, m, scale_row(_mm512_maskz_loadu_epi32(m, acc + i), r));
  }
}

void edge_levels(const int32_t* acc, uint8_t* y, size_t n, int32_t bias, const ThresholdTable* t) {
  const __m512i b = _mm512_set1_epi32(bias);
  size_t i = 0;
  if (t->blocks == 1) {   // ≤ 15 thresholds: the table stays in a register, four vectors in flight
    const __m512i table = _mm512_load_si512(t->padded);
    for (; i + 64 <= n; i += 64) {
      const __m512i l0 = search16(_mm512_add_epi32(_mm512_loadu_si512(acc + i), b), table);
      const __m512i l1 = search16(_mm512_add_epi32(_mm512_loadu_si512(acc + i + 16), b), table);
      const __m512i l2 = search16(_mm512_add_epi32(_mm512_loadu_si512(acc + i + 32), b), table);
      const __m512i l3 = search16(_mm512_add_epi32(_mm512_loadu_si512(acc + i + 48), b), table);
      store_levels4(y + i, l0, l1, l2, l3, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF);
    }
  }
  if (t->blocks > 1 && t->runs.count > 0) {
    const RunRegs R(t);
    with_runs(R, [&](auto nr, auto exact) {
      constexpr int N = decltype(nr)::value;
      constexpr bool F = decltype(exact)::value;
      for (; i < n; i += 16) {
        const __mmask16 m = tail_mask(static_cast<int>(n - i < 16 ? n - i : 16));
        const __m512i v = _mm512_add_epi32(_mm512_maskz_loadu_epi32(m, acc + i), b);
        store_levels(y + i, m, count_levels_runs<N, F>(v, R));
      }
    });
    return;
  }
  if (t->blocks > 1 && t->octave_ok) {
    edge_levels_octave(acc + i, y + i, n - i, bias, t);
    return;
  }
  if (t->blocks > 1 && t->packed_ok) {
    for (; i < n; i += 16) {
      const __mmask16 m = tail_mask(static_cast<int>(n - i < 16 ? n - i : 16));
      const __m512i v = _mm512_add_epi32(_mm512_maskz_loadu_epi32(m, acc + i), b);
      store_levels(y + i, m, count_levels_packed(v, t));
    }
    return;
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(static_cast<int>(n - i < 16 ? n - i : 16));
    const __m512i v = _mm512_add_epi32(_mm512_maskz_loadu_epi32(m, acc + i), b);
    store_levels(y + i, m, count_levels_bucketed(v, t));
  }
}

namespace {

// QRelu's arithmetic index (FloatThresholds::runs) in registers, set up once per call: its integer runs on
// n = trunc(min(x, t[count - 1]) · 2^-E), through runs_level with the run count and quotient known at compile time
// (with_qrelu), as the integer edge's count_levels_runs: AddDecodeQRelu 128 x 56 x 56 in cache 0.61 -> 0.30 ns per
// element against the generic search with the corrected quotient (build/exp7/join_mb.py, docs/decisions.md).
struct FloatRunRegs {
  RunRegs R;
  __m512 t0, t1, top, unit_inv;
  explicit FloatRunRegs(const FloatThresholds* t)
      : R(t->runs, 0, 0), t0(_mm512_set1_ps(t->padded[0])), t1(_mm512_set1_ps(t->padded[1])),
        top(_mm512_set1_ps(t->runs_top)), unit_inv(_mm512_set1_ps(t->runs_unit_inv)) {}
};

template <int N, bool Exact>
__attribute__((always_inline)) inline __m512i qrelu16_runs(__m512 v, __mmask16 m, const FloatRunRegs& F) {
  const __m512i below = _mm512_maskz_mov_epi32(_mm512_mask_cmp_ps_mask(m, v, F.t0, _CMP_GE_OQ), _mm512_set1_epi32(1));
  const __mmask16 ge1 = _mm512_mask_cmp_ps_mask(m, v, F.t1, _CMP_GE_OQ);
  // other lanes (NaN, below t[1]) compute a value the mask drops (min(NaN, top) is top)
  const __m512i n = _mm512_cvttps_epi32(_mm512_mul_ps(_mm512_min_ps(v, F.top), F.unit_inv));
  return _mm512_mask_mov_epi32(below, ge1, runs_level<N, Exact>(n, F.R));
}

// QRelu's level of 16 floats in the lanes of m (0 elsewhere) for a table without the arithmetic index (with_qrelu
// routes those to qrelu16_runs): the octave-class index, the 32-bit bucket index (FloatThresholds::packed) when
// there is one, else the two-level search. NaN and x < t[0] are level 0 without a lookup.
inline __m512i qrelu16(__m512 v, __mmask16 m, const FloatThresholds* t) {
  if (t->blocks > 1 && t->octave_ok) {   // the octave-class index: register permutes, no gather
    const __mmask16 live = _mm512_mask_cmp_ps_mask(m, v, _mm512_set1_ps(t->padded[0]), _CMP_GE_OQ);
    if (live == 0) return _mm512_setzero_si512();
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i ex = _mm512_srli_epi32(bits, 23);
    const __m512i oct = _mm512_permutex2var_epi32(_mm512_load_si512(t->octave), ex, _mm512_load_si512(t->octave + 16));
    const __m512i mi = _mm512_srli_epi32(bits, 18);
    __m512i ent = _mm512_permutex2var_epi32(_mm512_load_si512(t->octave_class), mi, _mm512_load_si512(t->octave_class + 16));
    if (t->octave_classes > 1)
      ent = _mm512_mask_mov_epi32(ent, _mm512_test_epi32_mask(oct, _mm512_set1_epi32(1)),
                                  _mm512_permutex2var_epi32(_mm512_load_si512(t->octave_class + 32), mi,
                                                            _mm512_load_si512(t->octave_class + 48)));
    const __m512i cnt = _mm512_set1_epi32(t->count);
    __m512i lv = _mm512_add_epi32(_mm512_srai_epi32(oct, 8), _mm512_and_si512(ent, _mm512_set1_epi32(0xFF)));
    const __mmask16 below = _mm512_cmplt_epu32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x3FFFF)), _mm512_srli_epi32(ent, 8));
    lv = _mm512_mask_sub_epi32(lv, below, lv, _mm512_set1_epi32(1));
    lv = _mm512_mask_add_epi32(lv, _mm512_cmpge_epi32_mask(bits, _mm512_set1_epi32(t->octave_wrap)), lv,
                               _mm512_set1_epi32(t->octave_wrap_add));
    lv = _mm512_min_epi32(lv, cnt);
    lv = _mm512_mask_mov_epi32(lv, _mm512_cmpge_epi32_mask(bits, _mm512_set1_epi32(t->octave_top)), cnt);
    return _mm512_maskz_mov_epi32(live, lv);
  }
  if (t->blocks == 1 || !t->packed_ok) return _mm512_maskz_mov_epi32(m, count_levels_f32(v, t));
  const __mmask16 live = _mm512_mask_cmp_ps_mask(m, v, _mm512_set1_ps(t->padded[0]), _CMP_GE_OQ);
  if (live == 0) return _mm512_setzero_si512();
  // a live lane is a positive float ≥ t[0] (+Inf included): key ≥ 0, clamped to the last key (level count)
  const __m512i bits = _mm512_castps_si512(v);
  const __m128i sh = _mm_cvtsi32_si128(t->packed_shift);
  const __m512i key = _mm512_min_epi32(_mm512_sub_epi32(_mm512_srl_epi32(bits, sh), _mm512_set1_epi32(t->base)),
                                       _mm512_set1_epi32(t->packed_keys - 1));
  const __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, key, t->packed.data(), 4);
  const __m512i L = _mm512_and_si512(g, _mm512_set1_epi32(0xFF));
  const __m512i low = _mm512_set1_epi32((1 << t->packed_shift) - 1);
  const __mmask16 up = _mm512_mask_cmpge_epu32_mask(live, _mm512_and_si512(bits, low), _mm512_srli_epi32(g, 8));
  return _mm512_mask_add_epi32(L, up, L, _mm512_set1_epi32(1));
}

// f(q) with q(v, m) = the QRelu levels of 16 floats, specialized on the table's index once per call
template <class F>
__attribute__((always_inline)) inline void with_qrelu(const FloatThresholds* t, F f) {
  if (t->blocks > 1 && t->runs.count > 0) {
    const FloatRunRegs FR(t);
    with_runs(FR.R, [&](auto n, auto exact) {
      constexpr int N = decltype(n)::value;
      constexpr bool E = decltype(exact)::value;
      f([&](__m512 v, __mmask16 m) { return qrelu16_runs<N, E>(v, m, FR); });
    });
    return;
  }
  f([&](__m512 v, __mmask16 m) { return qrelu16(v, m, t); });
}

// table256[idx] for 16 level indices < 256 (< 32 when small): two-register permutes and a select on bits 5-7 (a
// 16-lane gather costs about twice as much on Zen 4)
inline __m512 decode256(__m512i idx, const float* table256, bool small) {
  auto T = [&](int j) { return _mm512_loadu_ps(table256 + 16 * j); };
  if (small) return _mm512_permutex2var_ps(T(0), idx, T(1));
  const __m512 q0 = _mm512_permutex2var_ps(T(0), idx, T(1)), r0 = _mm512_permutex2var_ps(T(2), idx, T(3));
  const __m512 q1 = _mm512_permutex2var_ps(T(4), idx, T(5)), r1 = _mm512_permutex2var_ps(T(6), idx, T(7));
  const __m512 q2 = _mm512_permutex2var_ps(T(8), idx, T(9)), r2 = _mm512_permutex2var_ps(T(10), idx, T(11));
  const __m512 q3 = _mm512_permutex2var_ps(T(12), idx, T(13)), r3 = _mm512_permutex2var_ps(T(14), idx, T(15));
  const __mmask16 h5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
  const __mmask16 h6 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(64));
  const __mmask16 h7 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(128));
  const __m512 lo = _mm512_mask_mov_ps(_mm512_mask_mov_ps(q0, h5, r0), h6, _mm512_mask_mov_ps(q1, h5, r1));
  const __m512 hi = _mm512_mask_mov_ps(_mm512_mask_mov_ps(q2, h5, r2), h6, _mm512_mask_mov_ps(q3, h5, r3));
  return _mm512_mask_mov_ps(lo, h7, hi);
}

}  // namespace

void qrelu(const float* x, uint8_t* y, size_t n, const FloatThresholds* t) {
  with_qrelu(t, [&](auto q) {
    for (size_t i = 0; i < n; i += 16) {
      const __mmask16 m = tail_mask(static_cast<int>(n - i < 16 ? n - i : 16));
      store_levels(y + i, m, q(_mm512_maskz_loadu_ps(m, x + i), m));
    }
  });
}

// columns ahead of a join call's first that it prefetches B and Y for (96-128 measured best on ResNet-50's stage-0
// join at batch 32: 0.81 -> 0.60-0.64 ns per output; 384 and more are slower)
constexpr size_t kJoinPrefetch = 128;

void add_qrelu_rows(const float* a, size_t lda, const float* b, const uint8_t* lv, size_t ldb, const float* table256,
                    int table_size, uint8_t* y, size_t ldy, int rows, size_t n, const FloatThresholds* t) {
  const bool small = table_size <= 32;   // levels < 32 (checked by the caller): one permute
  with_qrelu(t, [&](auto q) {
    for (int r = 0; r < rows; ++r) {
      const float* ar = a + r * lda;
      uint8_t* yr = y + r * ldy;
      // as add_decode_qrelu_vbmi: B's and Y's lines a few tiles ahead (float B: 48 columns are three lines)
      if (lv == nullptr) {
        const char* br = reinterpret_cast<const char*>(b + r * ldb) + 4 * kJoinPrefetch;
        __builtin_prefetch(br, 0, 3);
        __builtin_prefetch(br + 64, 0, 3);
        __builtin_prefetch(br + 128, 0, 3);
      } else {
        __builtin_prefetch(lv + r * ldb + kJoinPrefetch, 0, 3);
      }
      __builtin_prefetch(yr + kJoinPrefetch, 1, 3);
      for (size_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(static_cast<int>(n - i < 16 ? n - i : 16));
        __m512 vb;
        if (lv == nullptr) {
          vb = _mm512_maskz_loadu_ps(m, b + r * ldb + i);
        } else {
          const __m512i idx = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, lv + r * ldb + i));
          vb = decode256(idx, table256, small);
        }
        const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, ar + i), vb);
        store_levels(yr + i, m, q(v, m));
      }
    }
  });
}

void add_qrelu(const float* a, const float* b, const uint8_t* lv, const float* table256, int table_size, uint8_t* y,
               size_t n, const FloatThresholds* t) {
  add_qrelu_rows(a, 0, b, lv, 0, table256, table_size, y, 0, 1, n, t);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"

// the loop of add_qrelu_rows_vbmi over one QRelu quantizer q (with_qrelu), the decode planes loaded once
template <class Q>
WQ_VBMI void add_decode_qrelu_vbmi(const float* a, size_t lda, const uint8_t* lv, size_t ldb, const float* table256,
                                   uint8_t* y, size_t ldy, int rows, size_t n, const Q& q) {
  const uint8_t* planes = reinterpret_cast<const uint8_t*>(table256 + 256);
  __m512i p[4][4];
  for (int k = 0; k < 4; ++k)
    for (int j = 0; j < 4; ++j) p[k][j] = _mm512_load_si512(planes + 256 * k + 64 * j);
  for (int r = 0; r < rows; ++r) {
    const float* ar = a + r * lda;
    const uint8_t* lr = lv + r * ldb;
    uint8_t* yr = y + r * ldy;
    // the join's streamed order (batch 32) calls this for the same rows at the next 48 columns next: fetch B's and
    // Y's lines a few tiles ahead, one line per row and call (prefetches never fault, past the plane included)
    __builtin_prefetch(lr + kJoinPrefetch, 0, 3);
    __builtin_prefetch(yr + kJoinPrefetch, 1, 3);
    for (size_t i = 0; i < n; i += 64) {
      const size_t cnt = n - i < 64 ? n - i : 64;
      __m512i dec[4];
      decode_planes64(p, lr + i, cnt, dec);
      for (int j = 0; j < 4 && 16 * j < static_cast<int>(cnt); ++j) {
        const __mmask16 m = tail_mask(static_cast<int>(cnt) - 16 * j);
        const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, ar + i + 16 * j), _mm512_castsi512_ps(dec[j]));
        store_levels(yr + i + 16 * j, m, q(v, m));
      }
    }
  }
}

// AddDecodeQRelu with a table of more than 32 entries: 64 levels decoded per iteration from the byte planes that
// follow the table (DecodeTable), as qdecode_vbmi, then the sums quantized 16 at a time
void add_qrelu_rows_vbmi(const float* a, size_t lda, const float* b, const uint8_t* lv, size_t ldb,
                         const float* table256, int table_size, uint8_t* y, size_t ldy, int rows, size_t n,
                         const FloatThresholds* t) {
  if (lv == nullptr || table_size <= 32) {
    add_qrelu_rows(a, lda, b, lv, ldb, table256, table_size, y, ldy, rows, n, t);
    return;
  }
  with_qrelu(t, [&](auto q) { add_decode_qrelu_vbmi(a, lda, lv, ldb, table256, y, ldy, rows, n, q); });
}

void add_qrelu_vbmi(const float* a, const float* b, const uint8_t* lv, const float* table256, int table_size,
                    uint8_t* y, size_t n, const FloatThresholds* t) {
  add_qrelu_rows_vbmi(a, 0, b, lv, 0, table256, table_size, y, 0, 1, n, t);
}

#pragma GCC diagnostic pop

void qdecode(const uint8_t* x, float* y, size_t n, const float* table256) {
  size_t i = 0;
  // the caller zero-fills table entries past the table: when all of 32..255 are zero and no index reaches them
  // (checked by the caller against the table size) a two-register permute replaces the gather
  const __m512 t0 = _mm512_loadu_ps(table256), t1 = _mm512_loadu_ps(table256 + 16);
  bool small = true;
  for (int j = 32; j < 256 && small; ++j) small = table256[j] == 0.0f;
  if (small) {
    for (; i + 16 <= n; i += 16) {
      const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
      const __mmask16 big = _mm512_cmpge_epu32_mask(idx, _mm512_set1_epi32(32));
      if (big) break;   // an index the permute cannot serve: finish with the gather below
      _mm512_storeu_ps(y + i, _mm512_permutex2var_ps(t0, idx, t1));
    }
  }
  for (; i + 16 <= n; i += 16) {
    const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    _mm512_storeu_ps(y + i, _mm512_i32gather_ps(idx, table256, 4));
  }
  qdecode_generic(x + i, y + i, n - i, table256);
}

// Depthwise, dilation 1 along x: the int16 pair (x[k], x[k + 1]) is an int32 lane of an unaligned load, so one
// vpdpwssd applies two taps (kx, kx + 1) to 16 outputs. The padded plane is treated as one long row: "virtual"
// output v = oy·w + ox reads x[S·v + ky·dh·w + kx] (stride S = 1 or 2, the same in both axes), so whole vectors
// run over row ends whatever the row length; the virtual outputs past each row end (ox ≥ ow) are discarded when
// the rows are compacted. Stride 2: lanes are 16 consecutive virtual outputs (pair at 2v + offset). Stride 1: 32
// virtual outputs as even and odd halves (pairs at v0 + 2i + offset and v0 + 2i + 1 + offset), re-interleaved on
// store. Four vectors are in flight to hide the vpdpwssd latency.
template <int KH, int KW, int S>
void depthwise_fixed(const DepthwisePlane& p) {
  const int64_t kh = KH > 0 ? KH : p.kh, kw = KW > 0 ? KW : p.kw;
  constexpr int kMaxSteps = 16 * 8;
  __m512i wv[kMaxSteps];   // per (ky, pair of kx): the broadcast weight pair (w[kx], w[kx + 1] or 0)
  int64_t off[kMaxSteps];  // per step: int16 offset of the pair from the virtual output's base
  int steps = 0;
  for (int64_t ky = 0; ky < kh; ++ky)
    for (int64_t kx = 0; kx < kw; kx += 2) {
      const uint32_t lo = static_cast<uint16_t>(p.filter[ky * kw + kx]);
      const uint32_t hi = kx + 1 < kw ? static_cast<uint16_t>(p.filter[ky * kw + kx + 1]) : 0u;
      wv[steps] = _mm512_set1_epi32(static_cast<int32_t>(lo | (hi << 16)));
      off[steps] = ky * p.dh * p.w + kx;
      ++steps;
    }
  if (KH > 0 && KW > 0) steps = KH * ((KW + 1) / 2);
  const int64_t virt = (p.oh - 1) * p.w + p.ow;
  int32_t* v = p.scratch;
  constexpr int64_t kChunk = S == 1 ? 32 : 16;   // virtual outputs per vector (pair)
  constexpr int kUnroll = S == 1 ? 2 : 4;
  const __m512i even_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i odd_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  // named accumulators (GCC keeps an array of vectors in memory around the inline asm)
  auto store = [&](int32_t* dst, __m512i e, __m512i o) {
    if (S == 1) {
      _mm512_storeu_si512(dst, _mm512_permutex2var_epi32(e, even_idx, o));
      _mm512_storeu_si512(dst + 16, _mm512_permutex2var_epi32(e, odd_idx, o));
    } else {
      _mm512_storeu_si512(dst, e);
    }
  };
  // virtual outputs [begin, end) (whole vectors: up to kChunk - 1 past end)
  auto run_range = [&](int64_t begin, int64_t end) {
  int64_t v0 = begin;
  for (; v0 + kChunk * kUnroll <= end; v0 += kChunk * kUnroll) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    const int16_t* b = p.x + S * v0;
#pragma GCC unroll 16
    for (int s = 0; s < steps; ++s) {
      const int16_t* q = b + off[s];
      if (S == 1) {
        WQ_DPWSSD(a0, _mm512_loadu_si512(q), wv[s]);
        WQ_DPWSSD(a1, _mm512_loadu_si512(q + 1), wv[s]);
        WQ_DPWSSD(a2, _mm512_loadu_si512(q + 32), wv[s]);
        WQ_DPWSSD(a3, _mm512_loadu_si512(q + 33), wv[s]);
      } else {
        WQ_DPWSSD(a0, _mm512_loadu_si512(q), wv[s]);
        WQ_DPWSSD(a1, _mm512_loadu_si512(q + 32), wv[s]);
        WQ_DPWSSD(a2, _mm512_loadu_si512(q + 64), wv[s]);
        WQ_DPWSSD(a3, _mm512_loadu_si512(q + 96), wv[s]);
      }
    }
    if (S == 1) {
      store(v + v0, a0, a1);
      store(v + v0 + 32, a2, a3);
    } else {
      store(v + v0, a0, a0);
      store(v + v0 + 16, a1, a1);
      store(v + v0 + 32, a2, a2);
      store(v + v0 + 48, a3, a3);
    }
  }
  for (; v0 < end; v0 += kChunk) {
    __m512i e = _mm512_setzero_si512(), o = e;
    const int16_t* b = p.x + S * v0;
    for (int s = 0; s < steps; ++s) {
      WQ_DPWSSD(e, _mm512_loadu_si512(b + off[s]), wv[s]);
      if (S == 1) WQ_DPWSSD(o, _mm512_loadu_si512(b + off[s] + 1), wv[s]);
    }
    store(v + v0, e, o);
  }
  };
  // Stride 2 computes every virtual output of a padded row (w, about twice ow): row by row, only the ow that are
  // kept (rounded up to whole vectors), when that is fewer vectors (large planes; small ones keep the long row)
  if (S == 2 && p.oh * ((p.ow + kChunk - 1) / kChunk) < (virt + kChunk - 1) / kChunk) {
    for (int64_t oy = 0; oy < p.oh; ++oy) run_range(oy * p.w, oy * p.w + p.ow);
  } else {
    run_range(0, virt);
  }
  for (int64_t oy = 0; oy < p.oh; ++oy) std::memcpy(p.acc + oy * p.ow, v + oy * p.w, sizeof(int32_t) * p.ow);
}

void depthwise(const DepthwisePlane& p) {
  const bool s1 = p.sw == 1 && p.sh == 1, s2 = p.sw == 2 && p.sh == 2;
  if (p.pad_top != 0 || p.pad_left != 0 || p.dw != 1 || !(s1 || s2) || p.kw > 16 || p.kh > 16 || !p.scratch) {
    depthwise_generic(p);
    return;
  }
  if (p.kh == 3 && p.kw == 3) s1 ? depthwise_fixed<3, 3, 1>(p) : depthwise_fixed<3, 3, 2>(p);
  else if (p.kh == 5 && p.kw == 5) s1 ? depthwise_fixed<5, 5, 1>(p) : depthwise_fixed<5, 5, 2>(p);
  else s1 ? depthwise_fixed<0, 0, 1>(p) : depthwise_fixed<0, 0, 2>(p);
}

// ---- Depthwise with the channels in the vector lanes (DepthwiseLanes, AVX-512 VBMI) ----
// A small plane (7x7 .. 28x28) gives the per-plane kernel above only a few vectors, so its fixed costs (lookup,
// padding copy, kernel set-up, the edge passes) dominate. Here 16 channels share every instruction instead: their
// levels are transposed to [pixel][channel] bytes (16x16 byte transposes, two rounds of vpermt2b), looked up row by
// row into a zero-padded int16 row and paired to (X[y][x], X[y][x + dw]) per lane, so one vpdpwssd applies the two
// taps (kx, kx + 1) of all 16 channels to one output pixel. The output edge (row scale, bias, quantizer: one
// thresholds table for every lane) runs on the accumulators in registers and the levels are transposed back to
// the NCHW planes. The integers are those of the per-plane kernel (the same exact int32 sums, in another order).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace {

// vpermt2b indices of transpose16_u8: round 1 gathers rows 0..7 (or 8..15) x columns 0..7 (or 8..15) of two
// source vectors as [column][row] (8 x 8 bytes), round 2 joins the row halves into 4 output rows of 16 bytes.
struct TransposeIdx {
  alignas(64) uint8_t round1[2][64];   // [column half]: byte 8j + i = source row i (of 8), column j + 8·half
  alignas(64) uint8_t round2[2][64];   // [output pair of the half]: byte 16jj + i = row i of column 4m + jj
};

constexpr TransposeIdx make_transpose_idx() {
  TransposeIdx t{};
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 8; ++j)
      for (int i = 0; i < 8; ++i) t.round1[h][8 * j + i] = static_cast<uint8_t>(16 * i + j + 8 * h);
  for (int m = 0; m < 2; ++m)
    for (int jj = 0; jj < 4; ++jj)
      for (int i = 0; i < 16; ++i)
        t.round2[m][16 * jj + i] = static_cast<uint8_t>(i < 8 ? 8 * (4 * m + jj) + i : 64 + 8 * (4 * m + jj) + i - 8);
  return t;
}

constexpr TransposeIdx kTransposeIdx = make_transpose_idx();

// dst row j, byte i = src row i, byte j (16 x 16 bytes). Reads rows i < rows, bytes j < cols of each (the rest are
// 0); writes rows j < dst_rows (≤ cols), `store` bytes of each. Rows 16 bytes apart go as whole vectors.
WQ_VBMI inline void transpose16_u8(const uint8_t* src, int64_t ss, int rows, int cols, uint8_t* dst, int64_t ds,
                                   int dst_rows, int store) {
  __m512i z[4];
  if (ss == 16 && cols == 16) {
    for (int k = 0; k < 4; ++k)
      z[k] = _mm512_maskz_loadu_epi8(bytes_mask(static_cast<size_t>(std::max(0, rows - 4 * k)) * 16), src + 64 * k);
  } else {
    const __mmask16 cm = tail_mask(cols);
    __m128i r[16];
    for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm_maskz_loadu_epi8(cm, src + i * ss) : _mm_setzero_si128();
    for (int k = 0; k < 4; ++k) {
      const __m512i lo = _mm512_castsi256_si512(_mm256_inserti128_si256(_mm256_castsi128_si256(r[4 * k]), r[4 * k + 1], 1));
      const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(r[4 * k + 2]), r[4 * k + 3], 1);
      z[k] = _mm512_inserti64x4(lo, hi, 1);
    }
  }
  const __m512i i10 = _mm512_load_si512(kTransposeIdx.round1[0]), i11 = _mm512_load_si512(kTransposeIdx.round1[1]);
  const __m512i a0 = _mm512_permutex2var_epi8(z[0], i10, z[1]), a1 = _mm512_permutex2var_epi8(z[0], i11, z[1]);
  const __m512i b0 = _mm512_permutex2var_epi8(z[2], i10, z[3]), b1 = _mm512_permutex2var_epi8(z[2], i11, z[3]);
  const __m512i i20 = _mm512_load_si512(kTransposeIdx.round2[0]), i21 = _mm512_load_si512(kTransposeIdx.round2[1]);
  const __m512i out[4] = {_mm512_permutex2var_epi8(a0, i20, b0), _mm512_permutex2var_epi8(a0, i21, b0),
                          _mm512_permutex2var_epi8(a1, i20, b1), _mm512_permutex2var_epi8(a1, i21, b1)};
  if (ds == 16 && store == 16) {
    for (int m = 0; m < 4; ++m)
      store_i8(dst + 64 * m, bytes_mask(static_cast<size_t>(std::max(0, dst_rows - 4 * m)) * 16), out[m]);
    return;
  }
  const __mmask16 sm = tail_mask(store);
  auto put = [&](int j, __m128i v) {   // whole rows unmasked (masked stores are slow on Zen 4)
    if (j >= dst_rows) return;
    if (store == 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j * ds), v);
    else _mm_mask_storeu_epi8(dst + j * ds, sm, v);
  };
  for (int m = 0; m < 4; ++m) {
    put(4 * m, _mm512_castsi512_si128(out[m]));
    put(4 * m + 1, _mm512_extracti32x4_epi32(out[m], 1));
    put(4 * m + 2, _mm512_extracti32x4_epi32(out[m], 2));
    put(4 * m + 3, _mm512_extracti32x4_epi32(out[m], 3));
  }
}

// The quantizers of the lanes' edge, by the table's index (ThresholdTable): level = #{j : t[j] ≤ v} per lane
struct Search16Lanes {   // ≤ 15 thresholds: search16 with the table pre-shifted per step (t[pos + step - 1] is
                         // one vpermd of pos), so each step is a permute, a compare and a masked add
  __m512i t7, t3, t1, t0;
  explicit Search16Lanes(const ThresholdTable* t) {
    alignas(64) int32_t shifted[3][16];
    const int by[3] = {3, 1, 0};
    for (int s = 0; s < 3; ++s)
      for (int i = 0; i < 16; ++i) shifted[s][i] = i + by[s] < 16 ? t->padded[i + by[s]] : INT32_MAX;
    t7 = _mm512_set1_epi32(t->padded[7]);
    t3 = _mm512_load_si512(shifted[0]), t1 = _mm512_load_si512(shifted[1]), t0 = _mm512_load_si512(shifted[2]);
  }
  WQ_VBMI __attribute__((always_inline)) __m512i operator()(__m512i v) const {
    __m512i pos = _mm512_maskz_mov_epi32(_mm512_cmple_epi32_mask(t7, v), _mm512_set1_epi32(8));
    pos = _mm512_mask_add_epi32(pos, _mm512_cmple_epi32_mask(_mm512_permutexvar_epi32(pos, t3), v), pos, _mm512_set1_epi32(4));
    pos = _mm512_mask_add_epi32(pos, _mm512_cmple_epi32_mask(_mm512_permutexvar_epi32(pos, t1), v), pos, _mm512_set1_epi32(2));
    return _mm512_mask_add_epi32(pos, _mm512_cmple_epi32_mask(_mm512_permutexvar_epi32(pos, t0), v), pos, _mm512_set1_epi32(1));
  }
};
template <bool Two>
struct OctaveLanes {     // log-spaced sets (octave_ok): register permutes only
  OctaveRegs regs;
  WQ_VBMI __attribute__((always_inline)) __m512i operator()(__m512i v) const { return count_levels_octave<Two>(v, regs); }
};
template <int N, bool Exact>
struct RunLanes {        // piecewise evenly spaced sets (the arithmetic index): arithmetic and permutes only
  RunRegs regs;
  WQ_VBMI __attribute__((always_inline)) __m512i operator()(__m512i v) const { return count_levels_runs<N, Exact>(v, regs); }
};
struct PackedLanes {     // one masked dword gather (packed_ok)
  const ThresholdTable* t;
  WQ_VBMI __attribute__((always_inline)) __m512i operator()(__m512i v) const { return count_levels_packed(v, t); }
};
struct BucketLanes {     // the 64-bit bucket index, else the binary search
  const ThresholdTable* t;
  WQ_VBMI __attribute__((always_inline)) __m512i operator()(__m512i v) const { return count_levels_bucketed(v, t); }
};

// Columns x = 0, step, 2·step, .. < end of one padded row of the pair image: dst[x] lane c = (X_c[x], X_c[x + dw])
// from the zero-padded int16 row [x][16 channels] (vpermt2w interleaves the 16 channels of the two pixels)
WQ_VBMI inline void pair_row(const int16_t* row, int64_t end, int64_t step, int64_t dw, int32_t* dst) {
  alignas(64) static const int16_t inter[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                                8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i idx = _mm512_load_si512(inter);
  for (int64_t x = 0; x < end; x += step) {
    const __m512i a = _mm512_castsi256_si512(_mm256_load_si256(reinterpret_cast<const __m256i*>(row + 16 * x)));
    const __m512i b = _mm512_castsi256_si512(_mm256_load_si256(reinterpret_cast<const __m256i*>(row + 16 * (x + dw))));
    _mm512_store_si512(dst + 16 * x, _mm512_permutex2var_epi16(a, idx, b));
  }
}

// The output edge of the lanes (lambdas would not inherit the VBMI target, so the quantizers would not inline):
// row scale, bias and quantizer per lane, then the levels (0..255) of 4 pixels to bytes (store_levels4: pixel i's
// 16 channels at out + 16 i, [pixel][channel] order)
template <bool Scaled, class Quant>
struct LaneEdge {
  const Quant& quant;
  __m512i bias, r_even, r_odd;
  WQ_VBMI LaneEdge(const DepthwiseLanes& p, const Quant& q) : quant(q) {
    bias = _mm512_maskz_loadu_epi32(tail_mask(static_cast<int>(p.nc)), p.bias);
    r_even = r_odd = _mm512_setzero_si512();
    if (Scaled) {
      r_even = _mm512_maskz_loadu_epi32(tail_mask(static_cast<int>(p.nc)), p.row_scale);
      r_odd = _mm512_srli_epi64(r_even, 32);
    }
  }
  WQ_VBMI __attribute__((always_inline)) __m512i level(__m512i a) const {
    if constexpr (Scaled) a = scale_lanes(a, r_even, r_odd);
    return quant(_mm512_add_epi32(a, bias));
  }
  WQ_VBMI __attribute__((always_inline)) void store4(__m512i a0, __m512i a1, __m512i a2, __m512i a3, uint8_t* out) const {
    store_levels4(out, level(a0), level(a1), level(a2), level(a3), 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF);
  }
};

// The convolution and its edge over the pair image: groups of 4 output pixels of a row (4 independent
// accumulators), (kh · ceil(kw / 2)) vpdpwssd each; the levels of pixel i go to levels[16 i ..] (a group past the
// row's end writes pixels the next group rewrites, or the 4 spare pixels at the end). KH, KW > 0: a fixed kernel.
template <int KH, int KW, bool Scaled, class Quant>
WQ_VBMI void lanes_conv(const DepthwiseLanes& p, const DepthwiseLanesLayout& l, const int32_t* pairs,
                        const __m512i* wv, const Quant& quant, uint8_t* levels) {
  const int64_t kh = KH > 0 ? KH : p.kh, steps = KW > 0 ? (KW + 1) / 2 : (p.kw + 1) / 2;
  const LaneEdge<Scaled, Quant> edge(p, quant);
  const int64_t row = 16 * l.wpc, sx = 16 * p.sw, ky_step = p.dh * row, kx_step = 32 * p.dw;
  for (int64_t oy = 0; oy < p.oh; ++oy) {
    const int32_t* base = pairs + oy * p.sh * row;
    uint8_t* out = levels + 16 * oy * p.ow;
    for (int64_t ox = 0; ox < p.ow; ox += 4) {
      __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
      const int32_t* b = base + ox * sx;
#pragma GCC unroll 16
      for (int64_t ky = 0; ky < kh; ++ky) {
#pragma GCC unroll 8
        for (int64_t k = 0; k < steps; ++k) {
          const int32_t* q = b + ky * ky_step + k * kx_step;
          const __m512i w = wv[ky * steps + k];
          WQ_DPWSSD(a0, _mm512_load_si512(q), w);
          WQ_DPWSSD(a1, _mm512_load_si512(q + sx), w);
          WQ_DPWSSD(a2, _mm512_load_si512(q + 2 * sx), w);
          WQ_DPWSSD(a3, _mm512_load_si512(q + 3 * sx), w);
        }
      }
      edge.store4(a0, a1, a2, a3, out + 16 * ox);
    }
  }
}

template <int KH, int KW, bool Scaled, class Quant>
WQ_VBMI uint8_t lanes_block(const DepthwiseLanes& p, const Quant& quant) {
  const DepthwiseLanesLayout l = depthwise_lanes_layout(p);
  char* const s = static_cast<char*>(p.scratch);
  uint8_t* const tr = reinterpret_cast<uint8_t*>(s + l.transposed);
  int16_t* const row = reinterpret_cast<int16_t*>(s + l.row);
  int32_t* const pairs = reinterpret_cast<int32_t*>(s + l.pairs);
  uint8_t* const levels = reinterpret_cast<uint8_t*>(s + l.levels);
  const int nc = static_cast<int>(p.nc);
  // [pixel][channel] levels (lanes ≥ nc are level 0)
  const int64_t hw = p.h * p.w;
  for (int64_t i = 0; i < hw; i += 16) {
    const int n = static_cast<int>(std::min<int64_t>(16, hw - i));
    transpose16_u8(p.x + i, hw, nc, n, tr + 16 * i, 16, n, 16);
  }
  // weight pairs per (ky, pair of kx): lane c = (w_c[ky][2k], w_c[ky][2k + 1] or 0); lanes ≥ nc are 0
  const int64_t steps = (p.kw + 1) / 2;
  __m512i wv[16 * 8];
  for (int64_t ky = 0; ky < p.kh; ++ky)
    for (int64_t k = 0; k < steps; ++k) {
      alignas(64) int32_t lane[16] = {};
      for (int c = 0; c < nc; ++c) {
        const int32_t* f = p.filter + c * p.kh * p.kw + ky * p.kw;
        const uint32_t lo = static_cast<uint16_t>(f[2 * k]);
        const uint32_t hi = 2 * k + 1 < p.kw ? static_cast<uint16_t>(f[2 * k + 1]) : 0u;
        lane[c] = static_cast<int32_t>(lo | hi << 16);
      }
      wv[ky * steps + k] = _mm512_load_si512(lane);
    }
  // the pair image, row by row: padding rows are 0, the others looked up into the zero-padded row and paired.
  // Only the columns valid outputs read are built: below `end`, and only the even ones with an even stride (the
  // rest, read by the spare pixels of a row's last group of 4, are left as they are: their sums are discarded).
  const int64_t end = (p.ow - 1) * p.sw + 2 * (steps - 1) * p.dw + 1, step = p.sw % 2 == 0 ? 2 : 1;
  std::memset(row, 0, static_cast<size_t>(l.wpc + p.dw) * 32);
  uint8_t max_level = 0;
  for (int64_t y = 0; y < l.hn; ++y) {
    int32_t* dst = pairs + y * l.wpc * 16;
    const int64_t iy = y - p.pt;
    if (iy < 0 || iy >= p.h) {
      std::memset(dst, 0, static_cast<size_t>(end) * 64);
      continue;
    }
    max_level = std::max(max_level, lookup_vbmi(tr + 16 * iy * p.w, row + 16 * p.pl, static_cast<size_t>(16 * p.w),
                                                p.table256));
    pair_row(row, end, step, p.dw, dst);
  }
  lanes_conv<KH, KW, Scaled>(p, l, pairs, wv, quant, levels);
  // back to the channels' planes
  const int64_t plane = p.oh * p.ow;
  for (int64_t i = 0; i < plane; i += 16) {
    const int n = static_cast<int>(std::min<int64_t>(16, plane - i));
    transpose16_u8(levels + 16 * i, 16, n, 16, p.y + i, plane, nc, n);
  }
  return max_level;
}

template <class Quant>
WQ_VBMI uint8_t lanes_shape(const DepthwiseLanes& p, const Quant& quant) {
  const bool scaled = p.row_scale != nullptr;
  if (p.kh == 3 && p.kw == 3) return scaled ? lanes_block<3, 3, true>(p, quant) : lanes_block<3, 3, false>(p, quant);
  return scaled ? lanes_block<0, 0, true>(p, quant) : lanes_block<0, 0, false>(p, quant);
}

}  // namespace

WQ_VBMI uint8_t depthwise_lanes_vbmi(const DepthwiseLanes& p) {
  const ThresholdTable* t = p.table;
  if (t->blocks == 1) return lanes_shape(p, Search16Lanes(t));
  if (t->runs.count > 0) {
    uint8_t top = 0;
    with_runs(RunRegs(t), [&](auto n, auto exact) {
      top = lanes_shape(p, RunLanes<decltype(n)::value, decltype(exact)::value>{RunRegs(t)});
    });
    return top;
  }
  if (t->octave_ok)
    return t->octave_classes > 1 ? lanes_shape(p, OctaveLanes<true>{octave_regs(t)})
                                 : lanes_shape(p, OctaveLanes<false>{octave_regs(t)});
  if (t->packed_ok) return lanes_shape(p, PackedLanes{t});
  return lanes_shape(p, BucketLanes{t});
}

#pragma GCC diagnostic pop

namespace {

// One run at column stride 1 or 2 (S) in whole vectors, unmasked unless it is in the panel's last row
// (pack_panel_with): the last vector reads up to 16·S - 1 int32 past the run (inside the padded image and its
// slack, PanelPack) and writes up to 15 past it, into columns written after it. Short runs are the common case on
// small images (MNIST's conv2: ~5 runs of <= 14 columns per panel row), where per-run masks were most of
// pack_panel's time: MNIST (8,8) at batch 32, 1.095 -> 1.022 ms.
template <int S>
inline void copy_run_vectors(const int32_t* src, int32_t* out, int64_t len, bool last) {
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (int64_t i = 0; i < len; i += 16) {
    const __m512i v = S == 1 ? _mm512_loadu_si512(src + i)
                             : _mm512_permutex2var_epi32(_mm512_loadu_si512(src + 2 * i), evens,
                                                         _mm512_loadu_si512(src + 2 * i + 16));
    if (!last) _mm512_storeu_si512(out + i, v);
    else store_i32(out + i, tail_mask(static_cast<int>(len - i < 16 ? len - i : 16)), v);
  }
}

}  // namespace

void pack_panel(const PanelPack& p) {
  pack_panel_with(p, [](const int32_t* s, int32_t* o, int64_t len, int64_t sx, bool last) {
    if (sx == 1) copy_run_vectors<1>(s, o, len, last);
    else if (sx == 2) copy_run_vectors<2>(s, o, len, last);
    else copy_run_generic(s, o, len, sx, last);
  });
}

namespace {

inline __mmask64 tail_mask64(int64_t n) { return n >= 64 ? ~__mmask64(0) : (__mmask64(1) << n) - 1; }

// Per 16-bit lane, the max of its two bytes (as a 16-bit value ≤ 255).
inline __m512i pair_max_u8(__m512i v) {
  return _mm512_max_epu16(_mm512_and_si512(v, _mm512_set1_epi16(0x00FF)), _mm512_srli_epi16(v, 8));
}

void max_rows(uint8_t* acc, const uint8_t* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 64) {
    const __mmask64 m = tail_mask64(n - i);
    store_i8(acc + i, m, _mm512_max_epu8(_mm512_maskz_loadu_epi8(m, acc + i), _mm512_maskz_loadu_epi8(m, x + i)));
  }
}

// y[i] = max_kx r[i·sw + kx·dw]; strides 1 and 2 in vectors (stride 2: 32 outputs per vector, the even bytes of
// 16-bit lanes), with masked loads that read only the bytes the windows use.
void max_window(const uint8_t* r, uint8_t* y, int64_t n, int64_t kw, int64_t sw, int64_t dw) {
  if (sw == 1) {
    for (int64_t i = 0; i < n; i += 64) {
      const __mmask64 m = tail_mask64(n - i);
      __m512i v = _mm512_maskz_loadu_epi8(m, r + i);
      for (int64_t kx = 1; kx < kw; ++kx) v = _mm512_max_epu8(v, _mm512_maskz_loadu_epi8(m, r + i + kx * dw));
      store_i8(y + i, m, v);
    }
    return;
  }
  if (sw == 2) {
    const __m512i lo_bytes = _mm512_set1_epi16(0x00FF);
    for (int64_t i = 0; i < n; i += 32) {
      const int64_t cnt = n - i < 32 ? n - i : 32;
      const __mmask64 m = tail_mask64(2 * cnt - 1);   // bytes 2j of the window's tap, j < cnt
      __m512i v;
      if (kw == 2 && dw == 1) {
        v = pair_max_u8(_mm512_maskz_loadu_epi8(tail_mask64(2 * cnt), r + 2 * i));
      } else {
        v = _mm512_and_si512(_mm512_maskz_loadu_epi8(m, r + 2 * i), lo_bytes);
        for (int64_t kx = 1; kx < kw; ++kx)
          v = _mm512_max_epu16(v, _mm512_and_si512(_mm512_maskz_loadu_epi8(m, r + 2 * i + kx * dw), lo_bytes));
      }
      store_word_bytes(y + i, static_cast<__mmask32>(tail_mask64(cnt)), v);
    }
    return;
  }
  max_window_generic(r, y, n, kw, sw, dw);
}

}  // namespace

void max_pool(const PoolPlane& p) {
  const bool k2s2 = p.kh == 2 && p.kw == 2 && p.sh == 2 && p.sw == 2 && p.dh == 1 && p.dw == 1;
  if (k2s2 && p.pt == 0 && p.pl == 0 && 2 * p.oh <= p.h && 2 * p.ow <= p.w) {
    // every window inside the plane (the common 2x2 pool): both rows and the pair max in registers
    for (int64_t oy = 0; oy < p.oh; ++oy) {
      const uint8_t* r0 = p.x + 2 * oy * p.w;
      const uint8_t* r1 = r0 + p.w;
      for (int64_t i = 0; i < p.ow; i += 32) {
        const int64_t cnt = p.ow - i < 32 ? p.ow - i : 32;
        const __mmask64 m = tail_mask64(2 * cnt);
        const __m512i v = _mm512_max_epu8(_mm512_maskz_loadu_epi8(m, r0 + 2 * i), _mm512_maskz_loadu_epi8(m, r1 + 2 * i));
        store_word_bytes(p.y + oy * p.ow + i, static_cast<__mmask32>(tail_mask64(cnt)), pair_max_u8(v));
      }
    }
    return;
  }
  max_pool_plane_with(p, max_rows, max_window);
}

namespace {

void max_rows_i32(int32_t* acc, const int32_t* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(static_cast<int>(n - i < 16 ? n - i : 16));
    store_i32(acc + i, m, _mm512_max_epi32(_mm512_maskz_loadu_epi32(m, acc + i), _mm512_maskz_loadu_epi32(m, x + i)));
  }
}

// y[i] = max_kx r[i·sw + kx]; r is rowmax scratch with 2·kw + 96 readable int32 past its row (PoolPlaneI32), so
// whole vectors are read (lanes past n are discarded by the masked store). Stride 2: the even lanes of two vectors
// per tap.
void max_window_i32(const int32_t* r, int32_t* y, int64_t n, int64_t kw, int64_t sw) {
  if (sw == 1) {
    for (int64_t i = 0; i < n; i += 16) {
      __m512i v = _mm512_loadu_si512(r + i);
      for (int64_t kx = 1; kx < kw; ++kx) v = _mm512_max_epi32(v, _mm512_loadu_si512(r + i + kx));
      store_i32(y + i, tail_mask(static_cast<int>(n - i < 16 ? n - i : 16)), v);
    }
    return;
  }
  if (sw == 2 && kw <= 32) {
    const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (int64_t i = 0; i < n; i += 16) {
      const int32_t* b = r + 2 * i;
      __m512i v = _mm512_permutex2var_epi32(_mm512_loadu_si512(b), evens, _mm512_loadu_si512(b + 16));
      for (int64_t kx = 1; kx < kw; ++kx)
        v = _mm512_max_epi32(v, _mm512_permutex2var_epi32(_mm512_loadu_si512(b + kx), evens, _mm512_loadu_si512(b + kx + 16)));
      store_i32(y + i, tail_mask(static_cast<int>(n - i < 16 ? n - i : 16)), v);
    }
    return;
  }
  max_window_i32_generic(r, y, n, kw, sw);
}

}  // namespace

void max_pool_i32(const PoolPlaneI32& p) {
  if (p.kh == 2 && p.kw == 2 && p.sh == 2 && p.sw == 2 && p.pt == 0 && p.pl == 0 && 2 * p.oh <= p.h && 2 * p.ow <= p.w) {
    // every window inside the plane (the common 2x2 pool): both rows and the pair max in registers
    const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
    for (int64_t oy = 0; oy < p.oh; ++oy) {
      const int32_t* r0 = p.x + 2 * oy * p.w;
      const int32_t* r1 = r0 + p.w;
      for (int64_t i = 0; i < p.ow; i += 16) {
        const int64_t cnt = p.ow - i < 16 ? p.ow - i : 16;
        const __mmask16 m0 = tail_mask(static_cast<int>(2 * cnt)), m1 = tail_mask(static_cast<int>(2 * cnt - 16 > 0 ? 2 * cnt - 16 : 0));
        const __m512i a = _mm512_max_epi32(_mm512_maskz_loadu_epi32(m0, r0 + 2 * i), _mm512_maskz_loadu_epi32(m0, r1 + 2 * i));
        const __m512i b = _mm512_max_epi32(_mm512_maskz_loadu_epi32(m1, r0 + 2 * i + 16), _mm512_maskz_loadu_epi32(m1, r1 + 2 * i + 16));
        const __m512i v = _mm512_max_epi32(_mm512_permutex2var_epi32(a, evens, b), _mm512_permutex2var_epi32(a, odds, b));
        store_i32(p.y + oy * p.ow + i, tail_mask(static_cast<int>(cnt)), v);
      }
    }
    return;
  }
  max_pool_i32_with(p, max_rows_i32, max_window_i32);
}

}  // namespace isa_avx512
}  // namespace wq
