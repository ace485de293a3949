// AVX2 path (vpmaddwd + vpaddd: 16 int16 MACs per pair of instructions). Compiled with -mavx2 -mfma off
// (no FMA: -ffp-contract=off anyway) and only called after select_isa() has checked the CPU.
//
// GEMM tile: up to 4 rows × 16 columns of int32 accumulators (8 ymm).
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "integer_gemm_isa.h"

namespace wq {
namespace {
#include "integer_gemm_generic.h"

constexpr int kRows = 4;
constexpr int kCols = 16;

inline int32_t load_pair(const int16_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <int R>
void tile(const int16_t* a, size_t lda, const int16_t* b, size_t ldb, size_t kp, int32_t* c, size_t ldc, int ncols) {
  __m256i acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  for (size_t p = 0; p < kp; ++p) {
    const int16_t* bp = b + p * ldb;
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 16));
    for (int r = 0; r < R; ++r) {
      const __m256i av = _mm256_set1_epi32(load_pair(a + r * lda + 2 * p));
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, b0));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, b1));
    }
  }
  alignas(32) int32_t buf[16];
  for (int r = 0; r < R; ++r) {
    if (ncols == 16) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * ldc), acc[r][0]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * ldc + 8), acc[r][1]);
    } else {
      _mm256_store_si256(reinterpret_cast<__m256i*>(buf), acc[r][0]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(buf + 8), acc[r][1]);
      for (int j = 0; j < ncols; ++j) c[r * ldc + j] = buf[j];
    }
  }
}

}  // namespace

namespace isa_avx2 {

const int kMR = kRows;
const int kNR = kCols;

void gemm_tile(const int16_t* a, size_t lda, const int16_t* b, size_t ldb, size_t kp, int32_t* c, size_t ldc, int rows,
               int ncols) {
  switch (rows) {
    case 1: tile<1>(a, lda, b, ldb, kp, c, ldc, ncols); break;
    case 2: tile<2>(a, lda, b, ldb, kp, c, ldc, ncols); break;
    case 3: tile<3>(a, lda, b, ldb, kp, c, ldc, ncols); break;
    default: tile<4>(a, lda, b, ldb, kp, c, ldc, ncols); break;
  }
}

namespace {

// 8 floats → int32 mantissas clip(rint(x · s), lo, hi), NaN → 0
inline __m256i quantize8(const float* x, __m256 s, __m256 lo, __m256 hi) {
  __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x), s);
  v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));   // NaN → 0
  v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
  return _mm256_cvtps_epi32(v);                            // MXCSR default: round half to even
}

}  // namespace

void quantize(const float* x, int16_t* y, size_t n, float scale, float xmax) {
  const __m256 s = _mm256_set1_ps(scale), hi = _mm256_set1_ps(xmax), lo = _mm256_set1_ps(-xmax);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i q = quantize8(x + i, s, lo, hi);
    const __m128i packed = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), packed);
  }
  quantize_generic(x + i, y + i, n - i, scale, xmax);
}

uint8_t lookup(const uint8_t* x, int16_t* y, size_t n, const int16_t* table256) { return lookup_generic(x, y, n, table256); }

uint8_t pair_levels(const uint8_t* x0, const uint8_t* x1, int32_t* dst, size_t n, const int16_t* table256) {
  return pair_levels_generic(x0, x1, dst, n, table256);
}

void pair_floats(const float* x0, const float* x1, int32_t* dst, size_t n, float scale, float xmax) {
  const __m256 s = _mm256_set1_ps(scale), hi = _mm256_set1_ps(xmax), lo = _mm256_set1_ps(-xmax);
  const __m256i low16 = _mm256_set1_epi32(0xFFFF);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i a = _mm256_and_si256(quantize8(x0 + i, s, lo, hi), low16);
    const __m256i b = x1 != nullptr ? _mm256_slli_epi32(quantize8(x1 + i, s, lo, hi), 16) : _mm256_setzero_si256();
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_or_si256(a, b));
  }
  pair_floats_generic(x0 + i, x1 != nullptr ? x1 + i : nullptr, dst + i, n - i, scale, xmax);
}
uint8_t max_u8(const uint8_t* x, size_t n) { return max_u8_generic(x, n); }

void edge_float(const int32_t* acc, float* y, size_t n, int32_t bias, float scale) {
  const __m256i b = _mm256_set1_epi32(bias);
  const __m256 s = _mm256_set1_ps(scale);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i)), b);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_cvtepi32_ps(v), s));
  }
  edge_float_generic(acc + i, y + i, n - i, bias, scale);
}

// floor(acc · r / 2^22) for 8 lanes: vpmuldq on the even and the odd lanes gives exact int64 products; the result
// fits 32 bits, so bits 22..53 of the product are the floored quotient (a logical 64-bit shift is enough).
void scale_rows(const int32_t* acc, int32_t* y, size_t n, int32_t r) {
  const __m256i rv = _mm256_set1_epi32(r);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i));
    const __m256i even = _mm256_srli_epi64(_mm256_mul_epi32(a, rv), 22);
    const __m256i odd = _mm256_slli_epi64(_mm256_srli_epi64(_mm256_mul_epi32(_mm256_srli_epi64(a, 32), rv), 22), 32);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), _mm256_blend_epi32(even, odd, 0xAA));
  }
  scale_rows_generic(acc + i, y + i, n - i, r);
}

void edge_levels(const int32_t* acc, uint8_t* y, size_t n, int32_t bias, const ThresholdTable* t) {
  if (t->count > 32) {
    edge_levels_generic(acc, y, n, bias, t);
    return;
  }
  const __m256i b = _mm256_set1_epi32(bias);
  size_t i = 0;
  alignas(32) int32_t buf[8];
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i)), b);
    __m256i cnt = _mm256_setzero_si256();
    for (int j = 0; j < t->count; ++j) {
      // t ≤ v  ⇔  not (t > v); cmpgt gives -1 where t > v, so count = Σ (1 + mask)
      const __m256i gt = _mm256_cmpgt_epi32(_mm256_set1_epi32(t->padded[j]), v);
      cnt = _mm256_sub_epi32(cnt, _mm256_xor_si256(gt, _mm256_set1_epi32(-1)));
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(buf), cnt);
    for (int k = 0; k < 8; ++k) y[i + k] = static_cast<uint8_t>(buf[k]);
  }
  edge_levels_generic(acc + i, y + i, n - i, bias, t);
}

void qrelu(const float* x, uint8_t* y, size_t n, const FloatThresholds* t) {
  if (t->count > 32) {
    qrelu_generic(x, y, n, t);
    return;
  }
  size_t i = 0;
  alignas(32) int32_t buf[8];
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    __m256i cnt = _mm256_setzero_si256();
    for (int j = 0; j < t->count; ++j) {
      const __m256 le = _mm256_cmp_ps(_mm256_set1_ps(t->padded[j]), v, _CMP_LE_OQ);   // NaN → false
      cnt = _mm256_sub_epi32(cnt, _mm256_castps_si256(le));
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(buf), cnt);
    for (int k = 0; k < 8; ++k) y[i + k] = static_cast<uint8_t>(buf[k]);
  }
  qrelu_generic(x + i, y + i, n - i, t);
}

void qdecode(const uint8_t* x, float* y, size_t n, const float* table256) { qdecode_generic(x, y, n, table256); }
void depthwise(const DepthwisePlane& p) { depthwise_generic(p); }
void pack_panel(const PanelPack& p) { pack_panel_with(p, copy_run_generic); }

namespace {

// The 2x2 stride-2 window: 32 row bytes → 16 outputs (max of each byte pair as 16-bit lanes, then packed).
void max_window(const uint8_t* r, uint8_t* y, int64_t n, int64_t kw, int64_t sw, int64_t dw) {
  int64_t i = 0;
  if (kw == 2 && sw == 2 && dw == 1) {
    const __m256i lo_bytes = _mm256_set1_epi16(0x00FF);
    for (; i + 16 <= n; i += 16) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + 2 * i));
      const __m256i m = _mm256_max_epu16(_mm256_and_si256(v, lo_bytes), _mm256_srli_epi16(v, 8));
      const __m128i packed = _mm_packus_epi16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), packed);
    }
  }
  max_window_generic(r + i * sw, y + i, n - i, kw, sw, dw);
}

}  // namespace

void max_pool(const PoolPlane& p) { max_pool_plane_with(p, max_rows_generic, max_window); }
void max_pool_i32(const PoolPlaneI32& p) { max_pool_i32_with(p, max_rows_i32_generic, max_window_i32_generic); }

void add_qrelu(const float* a, const float* b, const uint8_t* lv, const float* table256, int table_size, uint8_t* y,
               size_t n, const FloatThresholds* t) {
  alignas(32) float sum[256];
  for (size_t i0 = 0; i0 < n; i0 += 256) {
    const size_t m = n - i0 < 256 ? n - i0 : 256;
    for (size_t i = 0; i < m; ++i) sum[i] = a[i0 + i] + (lv != nullptr ? table256[lv[i0 + i]] : b[i0 + i]);
    qrelu(sum, y + i0, m, t);
  }
}

}  // namespace isa_avx2
}  // namespace wq
