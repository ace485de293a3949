// Portable implementations of the IsaKernels entry points, written so the compiler vectorizes them for whatever
// target flags the including file is compiled with. Included by every integer_gemm_<isa>.cc inside an anonymous
// namespace, so each instruction set gets its own internal copy (no inline function is shared between files built
// with different -m flags, which would let the linker pick an AVX-512 copy for the baseline path).
//
// No std:: templates here: their out-of-line instantiations would be such shared copies.
// The including file includes <cmath>, <cstdint> and integer_gemm.h first (this header sits inside a namespace).

inline int64_t g_min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t g_max(int64_t a, int64_t b) { return a > b ? a : b; }

template <int MR, int NR>
void gemm_tile_generic(const int16_t* a, size_t lda, const int16_t* b, size_t ldb, size_t kp, int32_t* c, size_t ldc,
                       int rows, int ncols) {
  int32_t acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) acc[r][j] = 0;
  for (size_t p = 0; p < kp; ++p) {
    const int16_t* bp = b + p * ldb;
    for (int r = 0; r < rows; ++r) {
      const int32_t a0 = a[r * lda + 2 * p];
      const int32_t a1 = a[r * lda + 2 * p + 1];
      for (int j = 0; j < ncols; ++j) acc[r][j] += a0 * bp[2 * j] + a1 * bp[2 * j + 1];
    }
  }
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < ncols; ++j) c[r * ldc + j] = acc[r][j];
}

inline int16_t quantize_one(float x, float scale, float xmax) {
  float v = x * scale;                 // exact: scale is a power of two (over/underflow round like ldexp)
  v = (v == v) ? v : 0.0f;             // NaN → 0
  v = v < -xmax ? -xmax : v;
  v = v > xmax ? xmax : v;             // ±Inf saturate
  return static_cast<int16_t>(std::nearbyint(v));   // round half to even (default rounding mode)
}

inline void quantize_generic(const float* x, int16_t* y, size_t n, float scale, float xmax) {
  for (size_t i = 0; i < n; ++i) y[i] = quantize_one(x[i], scale, xmax);
}

inline uint8_t lookup_generic(const uint8_t* x, int16_t* y, size_t n, const int16_t* table256) {
  uint8_t m = 0;
  for (size_t i = 0; i < n; ++i) {
    y[i] = table256[x[i]];
    m = x[i] > m ? x[i] : m;
  }
  return m;
}

// an int32 lane holding the int16 pair (lo, hi), lo in the low half (the operand layout of vpdpwssd / vpmaddwd)
inline int32_t pack_pair(int16_t lo, int16_t hi) {
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(lo)) |
                              static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16);
}

inline uint8_t pair_levels_generic(const uint8_t* x0, const uint8_t* x1, int32_t* dst, size_t n,
                                   const int16_t* table256) {
  uint8_t m = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t a = x0[i], b = x1 != nullptr ? x1[i] : 0;
    m = a > m ? a : m;
    m = b > m ? b : m;
    dst[i] = pack_pair(table256[a], x1 != nullptr ? table256[b] : int16_t(0));
  }
  return m;
}

inline void pair_floats_generic(const float* x0, const float* x1, int32_t* dst, size_t n, float scale, float xmax) {
  for (size_t i = 0; i < n; ++i)
    dst[i] = pack_pair(quantize_one(x0[i], scale, xmax), x1 != nullptr ? quantize_one(x1[i], scale, xmax) : int16_t(0));
}

inline uint8_t max_u8_generic(const uint8_t* x, size_t n) {
  uint8_t m = 0;
  for (size_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

inline void edge_float_generic(const int32_t* acc, float* y, size_t n, int32_t bias, float scale) {
  for (size_t i = 0; i < n; ++i) y[i] = static_cast<float>(acc[i] + bias) * scale;
}

// Branch-free upper bound over the padded table: the number of entries ≤ v (int32 and float32 thresholds).
template <typename T>
inline int count_le(const T* t, int count, T v) {
  int lo = 0, len = count;
  while (len > 0) {
    int half = len / 2;
    bool le = t[lo + half] <= v;
    lo = le ? lo + half + 1 : lo;
    len = le ? len - half - 1 : half;
  }
  return lo;
}

inline int count_le_i32(const int32_t* t, int count, int32_t v) { return count_le(t, count, v); }

// #{j : t[j] ≤ v} in O(1) through the bucket index (a search only in a bucket holding more than 2 thresholds)
inline int count_le_bucketed(const wq::ThresholdTable* t, int32_t v) {
  const uint64_t e = t->bucket[wq::threshold_bucket(v)];
  const int32_t head = static_cast<int32_t>(e >> 32), t0 = static_cast<int32_t>(static_cast<uint32_t>(e));
  if (head & wq::kBucketSlow) return count_le_i32(t->padded, t->count, v);
  return head + (t0 <= v);
}

// floor(acc · r / 2^22): the int64 product is below 2^52, and >> on a negative int64 floors (C++20, and gcc)
static_assert((int64_t(-3) >> 1) == -2, "scale_rows needs an arithmetic (flooring) right shift");
inline void scale_rows_generic(const int32_t* acc, int32_t* y, size_t n, int32_t r) {
  for (size_t i = 0; i < n; ++i) y[i] = static_cast<int32_t>((int64_t(acc[i]) * r) >> 22);
}

// #{j : t[j] ≤ v} through the packed index (ThresholdTable::packed, packed_ok), the scalar form of the AVX-512
// lookup: the bucket of v at resolution P = packed_bits (threshold_bucket_p) and start(b) = v with the bits more
// than P below its leading one cleared (= the vector path's truncated float conversion with its low 23 - P
// mantissa bits cleared, converted back). v < t[0] (≥ 1) is level 0 without a lookup.
inline int count_le_packed(const wq::ThresholdTable* t, int32_t v) {
  if (v < t->padded[0]) return 0;
  const int p = t->packed_bits;
  const int e = 31 - __builtin_clz(static_cast<uint32_t>(v));   // v ≥ t[0] ≥ 1
  const int low = e > p ? e - p : 0;
  const uint32_t start = static_cast<uint32_t>(v) >> low << low;
  const uint32_t g = t->packed[static_cast<size_t>(wq::threshold_bucket_p(v, p))];
  return static_cast<int>(g & 0xFFu) + (static_cast<uint32_t>(v) - start >= g >> 8);
}

// The level of v ≥ runs.start[0] through the arithmetic index (ThresholdRuns): integer division in its run
inline int runs_level(const wq::ThresholdRuns& r, int32_t v) {
  int k = 0;
  while (k + 1 < r.count && v >= r.start[k + 1]) ++k;
  const int32_t d = v - r.start[k];   // ≥ 0; start ≥ -2^30 keeps it in int32
  // < 2^31 by construction (build_threshold_runs)
  const int32_t dq = ((d < r.cap[k] ? d : r.cap[k]) << r.shift[k]) + r.frac[k];
  return r.first[k] + dq / r.step[k];
}

inline int count_le_runs(const wq::ThresholdTable* t, int32_t v) {
  return v < t->padded[1] ? v >= t->padded[0] : runs_level(t->runs, v);
}

inline void edge_levels_generic(const int32_t* acc, uint8_t* y, size_t n, int32_t bias, const wq::ThresholdTable* t) {
  if (t->count > 15 && t->runs.count > 0) {
    for (size_t i = 0; i < n; ++i) y[i] = static_cast<uint8_t>(count_le_runs(t, acc[i] + bias));
    return;
  }
  if (t->count > 15 && t->packed_ok) {   // one load per output (dense 8-bit sets leave the bucket index to search)
    for (size_t i = 0; i < n; ++i) y[i] = static_cast<uint8_t>(count_le_packed(t, acc[i] + bias));
    return;
  }
  for (size_t i = 0; i < n; ++i) y[i] = static_cast<uint8_t>(count_le_bucketed(t, acc[i] + bias));
}

inline int count_le_f32(const float* t, int count, float v) {
  if (!(v == v)) return 0;   // NaN compares false with every threshold
  return count_le(t, count, v);
}

// #{j : t[j] ≤ v} through FloatThresholds::packed (packed_ok), as the AVX-512 lookup: NaN and v < t[0] (ordered
// compare) are 0; otherwise v is a positive float or +Inf and its bits order it within its key
inline int count_le_f32_packed(const wq::FloatThresholds* t, float v) {
  if (!(v >= t->padded[0])) return 0;
  int32_t bits;
  __builtin_memcpy(&bits, &v, sizeof(bits));
  const int32_t k = (bits >> t->packed_shift) - t->base;
  const int32_t key = k < t->packed_keys - 1 ? k : t->packed_keys - 1;
  const uint32_t g = t->packed[static_cast<size_t>(key)];
  return static_cast<int>(g & 0xFFu) + ((static_cast<uint32_t>(bits) & ((1u << t->packed_shift) - 1u)) >= g >> 8);
}

// #{j : t[j] ≤ v} through FloatThresholds::runs: the integer n = v / 2^E, then as count_le_runs
inline int count_le_f32_runs(const wq::FloatThresholds* t, float v) {
  if (!(v >= t->padded[1])) return v >= t->padded[0];   // NaN: 0
  const float c = v < t->runs_top ? v : t->runs_top;
  return runs_level(t->runs, static_cast<int32_t>(c * t->runs_unit_inv));
}

template <class Value>
inline void qrelu_each(uint8_t* y, size_t n, const wq::FloatThresholds* t, Value value) {
  if (t->count > 15 && t->runs.count > 0) {
    for (size_t i = 0; i < n; ++i) y[i] = static_cast<uint8_t>(count_le_f32_runs(t, value(i)));
    return;
  }
  if (t->count > 15 && t->packed_ok) {
    for (size_t i = 0; i < n; ++i) y[i] = static_cast<uint8_t>(count_le_f32_packed(t, value(i)));
    return;
  }
  for (size_t i = 0; i < n; ++i) y[i] = static_cast<uint8_t>(count_le_f32(t->padded, t->count, value(i)));
}

inline void qrelu_generic(const float* x, uint8_t* y, size_t n, const wq::FloatThresholds* t) {
  qrelu_each(y, n, t, [x](size_t i) { return x[i]; });
}

inline void add_qrelu_generic(const float* a, const float* b, const uint8_t* lv, const float* table256, uint8_t* y,
                              size_t n, const wq::FloatThresholds* t) {
  if (lv != nullptr) qrelu_each(y, n, t, [=](size_t i) { return a[i] + table256[lv[i]]; });
  else qrelu_each(y, n, t, [=](size_t i) { return a[i] + b[i]; });
}

inline void qdecode_generic(const uint8_t* x, float* y, size_t n, const float* table256) {
  for (size_t i = 0; i < n; ++i) y[i] = table256[x[i]];
}

// acc[ow] += w · x[ow·S + offset] over ow in [lo, hi): the vectorizable inner loop of the depthwise kernel.
template <int S>
inline void dw_row_fixed(int32_t* __restrict acc, const int16_t* __restrict x, int32_t w, int64_t lo, int64_t hi,
                         int64_t offset) {
  for (int64_t o = lo; o < hi; ++o) acc[o] += w * static_cast<int32_t>(x[o * S + offset]);
}

inline void dw_row_any(int32_t* __restrict acc, const int16_t* __restrict x, int32_t w, int64_t lo, int64_t hi,
                       int64_t offset, int64_t s) {
  for (int64_t o = lo; o < hi; ++o) acc[o] += w * static_cast<int32_t>(x[o * s + offset]);
}

inline void depthwise_generic(const wq::DepthwisePlane& p) {
  for (int64_t oy = 0; oy < p.oh; ++oy) {
    int32_t* acc = p.acc + oy * p.ow;
    for (int64_t o = 0; o < p.ow; ++o) acc[o] = 0;
    for (int64_t ky = 0; ky < p.kh; ++ky) {
      const int64_t iy = oy * p.sh + ky * p.dh - p.pad_top;
      if (iy < 0 || iy >= p.h) continue;
      const int16_t* row = p.x + iy * p.w;
      for (int64_t kx = 0; kx < p.kw; ++kx) {
        const int32_t w = p.filter[ky * p.kw + kx];
        if (w == 0) continue;
        // valid outputs: 0 ≤ o·sw + kx·dw - pad_left < w
        const int64_t offset = kx * p.dw - p.pad_left;
        int64_t lo = offset >= 0 ? 0 : (-offset + p.sw - 1) / p.sw;
        int64_t hi = (p.w - 1 - offset) >= 0 ? (p.w - 1 - offset) / p.sw + 1 : 0;
        hi = g_min(hi, p.ow);
        if (lo >= hi) continue;
        if (p.sw == 1) dw_row_fixed<1>(acc, row, w, lo, hi, offset);
        else if (p.sw == 2) dw_row_fixed<2>(acc, row, w, lo, hi, offset);
        else dw_row_any(acc, row, w, lo, hi, offset, p.sw);
      }
    }
  }
}

// Copy one run of `len` pairs with source step sx (the stride of the convolution along x); exactly len, so the
// panel's last row (`last`, see pack_panel_with) needs nothing special.
inline void copy_run_generic(const int32_t* __restrict s, int32_t* __restrict o, int64_t len, int64_t sx,
                             bool /*last*/) {
  if (sx == 1) {
    for (int64_t i = 0; i < len; ++i) o[i] = s[i];
  } else {
    for (int64_t i = 0; i < len; ++i) o[i] = s[i * sx];
  }
}

// The panel's rows (q, ky, kx) in order, each its runs in column order and then its zero tail ncols..nr:
// copy(src, out, len, sx, last), last = the panel's last row. A copy may write past its run's end (up to 15 int32,
// the vector paths' whole vectors) except in the last row: those columns are written after it (the next run, the
// row's zero tail or the next row), and past the last row lies another panel.
template <typename CopyRun>
inline void pack_panel_with(const wq::PanelPack& p, CopyRun copy) {
  int32_t* d = p.dst;
  const int64_t rows = p.nq * p.kh * p.kw;
  for (int64_t row = 0, q = 0; q < p.nq; ++q)
    for (int64_t ky = 0; ky < p.kh; ++ky)
      for (int64_t kx = 0; kx < p.kw; ++kx, ++row, d += p.nr) {
        const int32_t* base = p.x2 + q * p.q_stride + ky * p.ky_stride + kx * p.kx_stride;
        for (int r = 0; r < p.nruns; ++r)
          copy(base + p.runs[r].src, d + p.runs[r].col, p.runs[r].len, p.sx, row + 1 == rows);
        for (int64_t j = p.ncols; j < p.nr; ++j) d[j] = 0;
      }
}

// acc[i] = max(acc[i], x[i])
inline void max_rows_generic(uint8_t* __restrict acc, const uint8_t* __restrict x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] = acc[i] > x[i] ? acc[i] : x[i];
}

// y[i] = max over kx < kw of r[i·sw + kx·dw], for i < n (every index read lies inside r)
inline void max_window_generic(const uint8_t* __restrict r, uint8_t* __restrict y, int64_t n, int64_t kw, int64_t sw,
                               int64_t dw) {
  if (kw == 2 && sw == 2 && dw == 1) {
    for (int64_t i = 0; i < n; ++i) y[i] = r[2 * i] > r[2 * i + 1] ? r[2 * i] : r[2 * i + 1];
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* w = r + i * sw;
    uint8_t m = w[0];
    for (int64_t kx = 1; kx < kw; ++kx) m = w[kx * dw] > m ? w[kx * dw] : m;
    y[i] = m;
  }
}

// One max-pool plane (PoolPlane or PoolPlaneI32, element T): per output row the vertical max of the window's valid
// rows (rowmax), then the horizontal max over its columns: `rows(acc, x, n)` and `window(r, y, n, kw, sw, dw)` are
// the vector parts, the windows that touch the left or right padding are done here; `empty` is the output of a
// window entirely in the padding (and the identity of max).
template <typename T, typename Plane, typename Rows, typename Window>
inline void max_pool_with(const Plane& p, int64_t dh, int64_t dw, T empty, Rows rows, Window window) {
  // outputs whose window lies inside the row: 0 ≤ ox·sw - pl and ox·sw - pl + (kw-1)·dw < w
  const int64_t lo = g_min(p.ow, (p.pl + p.sw - 1) / p.sw);
  const int64_t last = p.w - 1 - (p.kw - 1) * dw + p.pl;   // largest ox·sw allowed
  const int64_t hi = g_max(lo, g_min(p.ow, last >= 0 ? last / p.sw + 1 : 0));
  for (int64_t oy = 0; oy < p.oh; ++oy) {
    T* out = p.y + oy * p.ow;
    bool any = false;
    for (int64_t ky = 0; ky < p.kh; ++ky) {
      const int64_t iy = oy * p.sh + ky * dh - p.pt;
      if (iy < 0 || iy >= p.h) continue;
      if (!any) {
        for (int64_t i = 0; i < p.w; ++i) p.rowmax[i] = p.x[iy * p.w + i];
        any = true;
      } else {
        rows(p.rowmax, p.x + iy * p.w, p.w);
      }
    }
    if (!any) {
      for (int64_t ox = 0; ox < p.ow; ++ox) out[ox] = empty;
      continue;
    }
    auto edge = [&](int64_t ox) {
      T m = empty;
      for (int64_t kx = 0; kx < p.kw; ++kx) {
        const int64_t ix = ox * p.sw - p.pl + kx * dw;
        if (ix >= 0 && ix < p.w) m = p.rowmax[ix] > m ? p.rowmax[ix] : m;
      }
      out[ox] = m;
    };
    for (int64_t ox = 0; ox < lo; ++ox) edge(ox);
    if (hi > lo) window(p.rowmax + lo * p.sw - p.pl, out + lo, hi - lo, p.kw, p.sw, dw);
    for (int64_t ox = hi; ox < p.ow; ++ox) edge(ox);
  }
}

template <typename Rows, typename Window>
inline void max_pool_plane_with(const wq::PoolPlane& p, Rows rows, Window window) {
  max_pool_with<uint8_t>(p, p.dh, p.dw, uint8_t{0}, rows, window);
}

// ---- QConvMaxPool: max pool of int32 accumulators (PoolPlaneI32, dilation 1) ----

inline void max_rows_i32_generic(int32_t* __restrict acc, const int32_t* __restrict x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] = acc[i] > x[i] ? acc[i] : x[i];
}

// y[i] = max over kx < kw of r[i·sw + kx], for i < n (every index read lies inside r)
inline void max_window_i32_generic(const int32_t* __restrict r, int32_t* __restrict y, int64_t n, int64_t kw,
                                   int64_t sw) {
  for (int64_t i = 0; i < n; ++i) {
    const int32_t* w = r + i * sw;
    int32_t m = w[0];
    for (int64_t kx = 1; kx < kw; ++kx) m = w[kx] > m ? w[kx] : m;
    y[i] = m;
  }
}

// QConvMaxPool's planes (dilation 1): `window(r, y, n, kw, sw)`; a window entirely in the padding gives INT32_MIN.
template <typename Rows, typename Window>
inline void max_pool_i32_with(const wq::PoolPlaneI32& p, Rows rows, Window window) {
  max_pool_with<int32_t>(p, 1, 1, int32_t{-2147483647 - 1}, rows,
                         [&](const int32_t* r, int32_t* y, int64_t n, int64_t kw, int64_t sw, int64_t) {
                           window(r, y, n, kw, sw);
                         });
}
