// Run-time choice of the instruction set (compiled with the baseline flags: this file must run on any x86-64).
#include "integer_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "common.h"
#include "integer_gemm_isa.h"

namespace wq {
namespace {

#define WQ_ISA_TABLE(ns, label, fused)                                                                          \
  IsaKernels {                                                                                                  \
    label, ns::kMR, ns::kNR, ns::gemm_tile, ns::quantize, ns::lookup, ns::pair_levels, ns::pair_floats, ns::max_u8, \
        ns::edge_float, ns::scale_rows, ns::edge_levels, ns::qrelu, ns::qdecode, ns::depthwise, ns::pack_panel, ns::max_pool, ns::max_pool_i32, ns::add_qrelu, fused,       \
        nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr                    \
  }

const IsaKernels& table_baseline() {
  static const IsaKernels k = WQ_ISA_TABLE(isa_baseline, "baseline", nullptr);
  return k;
}
const IsaKernels& table_avx2() {
  static const IsaKernels k = WQ_ISA_TABLE(isa_avx2, "avx2", nullptr);
  return k;
}
// the entry points only AVX-512 has (the u8 × s8 path: quad image and vpdpbusd tiles; the row-scaled float edge;
// the residual join's whole-tile quantizer) on top of an AVX-512 table
IsaKernels with_avx512_only(IsaKernels t, bool vbmi) {
  t.quad_levels = vbmi ? isa_avx512::quad_levels_vbmi : isa_avx512::quad_levels;
  t.quad_floats = isa_avx512::quad_floats;
  t.gemm_tile_u8 = isa_avx512::gemm_tile_u8;
  t.gemm_tile_u8_edge = isa_avx512::gemm_tile_u8_edge;
  t.add_qrelu_rows = vbmi ? isa_avx512::add_qrelu_rows_vbmi : isa_avx512::add_qrelu_rows;
  t.edge_float_scaled = isa_avx512::edge_float_scaled;
  t.gemv_nibbles = isa_avx512::gemv_nibbles;
  t.gemm_tile_pool_edge = isa_avx512::gemm_tile_pool_edge;
  t.gemm_tile_u8_pool_edge = isa_avx512::gemm_tile_u8_pool_edge;
  return t;
}

const IsaKernels& table_avx512() {
  static const IsaKernels k = with_avx512_only(WQ_ISA_TABLE(isa_avx512, "avx512", isa_avx512::gemm_tile_edge), false);
  return k;
}

// AVX-512 with the VBMI level lookups (inputs, QDecode, AddDecodeQRelu, channels-in-lanes depthwise; the fused quantizer's VBMI index is chosen per table: ThresholdTable::octave_ok)
const IsaKernels& table_avx512_vbmi() {
  static const IsaKernels k = [] {
    IsaKernels t = WQ_ISA_TABLE(isa_avx512, "avx512", isa_avx512::gemm_tile_edge);
    t.lookup = isa_avx512::lookup_vbmi;
    t.pair_levels = isa_avx512::pair_levels_vbmi;
    t.qdecode = isa_avx512::qdecode_vbmi;
    t.add_qrelu = isa_avx512::add_qrelu_vbmi;
    t.depthwise_lanes = isa_avx512::depthwise_lanes_vbmi;   // its byte transposes are vpermt2b
    return with_avx512_only(t, true);
  }();
  return k;
}

const IsaKernels& best_avx512() { return cpu_supports_avx512_vbmi() ? table_avx512_vbmi() : table_avx512(); }

}  // namespace

bool cpu_supports_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}

bool cpu_supports_avx512() {
  __builtin_cpu_init();
  // every extension the AVX-512 file is compiled with (runtime_ops/CMakeLists.txt): DQ for the int64 → double edge
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni");
}

const IsaKernels& select_isa() {
  const char* env = std::getenv("WQCOMPILE_ISA");
  const std::string want = env ? env : "";
  if (want.empty() || want == "auto") {
    if (cpu_supports_avx512()) return best_avx512();
    if (cpu_supports_avx2()) return table_avx2();
    return table_baseline();
  }
  if (want == "baseline") return table_baseline();
  if (want == "avx2") {
    if (!cpu_supports_avx2()) throw Error("WQCOMPILE_ISA=avx2 but this CPU has no AVX2");
    return table_avx2();
  }
  if (want == "avx512") {
    if (!cpu_supports_avx512()) throw Error("WQCOMPILE_ISA=avx512 but this CPU lacks AVX-512 F/BW/VL/VNNI");
    return best_avx512();
  }
  throw Error("WQCOMPILE_ISA must be baseline, avx2, avx512 or auto, got '" + want + "'");
}

namespace {

// One bucket's requirement in an octave-class index (ThresholdTable::octave_ok, FloatThresholds::octave_ok): free
// (its values are below t[0], never looked up), exact (L and D ∈ [dlo, dhi] give its levels exactly) and/or at
// least `lmin` (its values are above every reachable threshold: the level is clamped to the count, so any
// L - [frac < D] ≥ lmin will do).
struct OctaveCell {
  bool exact = false;
  int L = 0;
  int64_t dlo = 0, dhi = 0;
  int lmin = -1;   // < 0: no lower bound
};

// L - [frac < D] at its smallest, with D = max(dlo, 0) (the value stored)
bool cell_ok(const OctaveCell& c) { return !c.exact || c.lmin < 0 || c.L - (c.dlo > 0 ? 1 : 0) >= c.lmin; }

bool merge_cell(OctaveCell* c, const OctaveCell& n) {
  OctaveCell r = *c;
  if (n.exact) {
    if (r.exact) {
      if (r.L != n.L) return false;
      r.dlo = std::max(r.dlo, n.dlo);
      r.dhi = std::min(r.dhi, n.dhi);
      if (r.dlo > r.dhi) return false;
    } else {
      r.exact = true, r.L = n.L, r.dlo = n.dlo, r.dhi = n.dhi;
    }
  }
  r.lmin = std::max(r.lmin, n.lmin);
  if (!cell_ok(r)) return false;
  *c = r;
  return true;
}

// The classes of an octave-class index: an octave's 32 cells join a class when they agree with it up to a constant
// shift s of L (a partial octave counts from a different first level: its base is lo - s).
struct OctaveClasses {
  static constexpr int kMax = 2;
  OctaveCell cls[kMax][32];
  int n = 0;

  // Class index (or -1) and the octave's shift s (class L = cell L + s); when s < 0 the class is raised by
  // *raised = -s instead (s = 0; the caller lowers the bases of the class's earlier octaves by as much).
  // `only` ≥ 0 restricts the choice to that class.
  int assign(const OctaveCell* cells, int only, int* shift, int* raised) {
    *raised = 0;
    for (int ci = 0; ci < n; ++ci) {
      if (only >= 0 && ci != only) continue;
      int s = 0;   // from the first cell exact in both (else 0)
      for (int m = 0; m < 32; ++m)
        if (cls[ci][m].exact && cells[m].exact) {
          s = cls[ci][m].L - cells[m].L;
          break;
        }
      const int up = s < 0 ? -s : 0;
      s += up;
      OctaveCell trial[32];
      bool ok = true;
      for (int m = 0; m < 32 && ok; ++m) {
        OctaveCell c = cells[m];
        c.L += s;
        if (c.lmin >= 0) c.lmin += s;
        trial[m] = cls[ci][m];
        trial[m].L += up;
        if (trial[m].lmin >= 0) trial[m].lmin += up;
        ok = merge_cell(&trial[m], c);
      }
      if (!ok) continue;
      for (int m = 0; m < 32; ++m) cls[ci][m] = trial[m];
      *shift = s;
      *raised = up;
      return ci;
    }
    if (n == kMax || only >= 0) return -1;
    for (int m = 0; m < 32; ++m) {
      cls[n][m] = OctaveCell{};
      if (!merge_cell(&cls[n][m], cells[m])) return -1;
    }
    *shift = 0;
    return n++;
  }

  // octave_class entries L | D << 8 (classes past n repeat class 0)
  bool store(uint32_t* out) const {
    for (int ci = 0; ci < kMax; ++ci)
      for (int m = 0; m < 32; ++m) {
        const OctaveCell& c = cls[ci < n ? ci : 0][m];
        uint32_t L = 0, D = 0;
        if (c.exact) {
          L = static_cast<uint32_t>(c.L);
          D = static_cast<uint32_t>(std::max<int64_t>(c.dlo, 0));
        } else if (c.lmin >= 0) {
          L = static_cast<uint32_t>(c.lmin);
        }
        if (L > 255 || D > 0xFFFFFF) return false;
        out[32 * ci + m] = L | D << 8;
      }
    return true;
  }
};

// The cells of one octave: buckets [start(m), start(m) + width) in the value domain of the sorted t[0..count)
// (int32 accumulators, or float bits); `lo` = #{t < the octave's first value}. frac is v - start scaled by
// 2^shift, so frac ≥ D ⇔ v - start ≥ r (the threshold's residual) for (r - 1)·2^shift < D ≤ r·2^shift.
// False: a bucket holds two thresholds.
template <typename Start>
bool octave_cells(const int32_t* t, int count, int lo, int64_t width, Start start_of, int shift, OctaveCell* cells) {
  const int32_t* end = t + count;
  for (int m = 0; m < 32; ++m) {
    const int64_t start = start_of(m);
    OctaveCell& c = cells[m];
    c = OctaveCell{};
    if (start + width <= t[0]) continue;   // below t[0]: never looked up
    if (start > t[count - 1]) {            // above the last threshold: at least the rest of them
      c.lmin = count - lo;
      continue;
    }
    const int a = static_cast<int>(std::lower_bound(t, end, static_cast<int32_t>(start)) - t);
    const int b = start + width > INT32_MAX ? count
                                            : static_cast<int>(std::lower_bound(t, end, static_cast<int32_t>(start + width)) - t);
    const int n = b - a, lo_rel = a - lo;
    c.exact = true;
    if (n == 0) {
      c.L = lo_rel;   // D = 0: [frac < 0] never holds
    } else if (n == 1) {
      c.L = lo_rel + 1;
      const int64_t r = int64_t(t[a]) - start;
      c.dlo = r > 0 ? ((r - 1) << shift) + 1 : 0;   // r = 0 (a threshold at the bucket start): D = 0
      c.dhi = r << shift;
    } else {
      return false;
    }
  }
  return true;
}

// Builds ThresholdTable::octave* (see there) over the reachable thresholds t[0..reachable); false when the set does
// not fit (a bucket of an octave ≥ 8 holding two thresholds, more than two classes, a base outside the entry).
bool build_octave_index(const int32_t* t, int reachable, ThresholdTable* out) {
  if (reachable < 1 || t[0] < 1) return false;
  OctaveClasses classes;
  int base_of[30] = {0}, class_of[30] = {0};
  bool member[30] = {false};
  for (int e = 8; e <= 29; ++e) {
    const int lo = static_cast<int>(std::lower_bound(t, t + reachable, int32_t(1) << e) - t);
    // above every reachable threshold (lo = reachable): base = lo + 1 and L - [frac < D] ≥ -1 give ≥ lo, clamped
    int base = lo + 1, ci = 0;
    if (lo < reachable) {
      const int k = e - 5;
      OctaveCell cells[32];
      // frac = (v - start) << (24 - k)
      if (!octave_cells(t, reachable, lo, int64_t(1) << k, [&](int m) { return int64_t(32 + m) << k; }, 24 - k, cells))
        return false;
      int s = 0, raised = 0;
      ci = classes.assign(cells, -1, &s, &raised);
      if (ci < 0) return false;
      for (int f = 8; f < e; ++f)
        if (member[f] && class_of[f] == ci) base_of[f] -= raised;
      base = lo - s;
      member[e] = true;
    }
    base_of[e] = base;
    class_of[e] = ci;
  }
  for (int j = 0; j < 32; ++j) out->octave[j] = 0;
  for (int e = 8; e <= 29; ++e) {
    if (base_of[e] < -(1 << 22) || base_of[e] >= (1 << 22)) return false;
    out->octave[(127 + e) & 31] = static_cast<int32_t>(static_cast<uint32_t>(base_of[e]) << 8) | class_of[e];
  }
  if (!classes.store(out->octave_class)) return false;
  out->octave_classes = std::max(1, classes.n);
  const int32_t* end = t + reachable;
  for (int v = 0; v < 256; ++v) out->octave_small[v] = static_cast<uint8_t>(std::upper_bound(t, end, int32_t(v)) - t);
  out->octave_reach = reachable;
  return true;
}

// FloatThresholds::octave* over t[0..count) (positive, finite, non-decreasing: their bits order as the floats)
bool build_float_octave_index(const int32_t* bits, int count, FloatThresholds* out) {
  if (count < 1 || bits[0] <= 0 || bits[count - 1] >= 0x7F800000) return false;
  // octaves e0 .. e0 + 32: the last shares the first's slot and class; its lanes add octave_wrap_add
  const int e0 = bits[0] >> 23;
  if ((bits[count - 1] >> 23) > e0 + 32 || e0 + 33 > 255) return false;
  OctaveClasses classes;
  int base_of[33] = {0}, class_of[33] = {0};   // by e - e0
  bool member[33] = {false};
  for (int e = e0; e <= e0 + 32; ++e) {
    const int lo = static_cast<int>(std::lower_bound(bits, bits + count, static_cast<int32_t>(e << 23)) - bits);
    int base = lo + 1, ci = e == e0 + 32 ? class_of[0] : 0;   // lo = count: as in build_octave_index
    if (lo < count) {
      OctaveCell cells[32];
      // frac = bits & 0x3FFFF = bits - start: D = r exactly
      if (!octave_cells(bits, count, lo, int64_t(1) << 18, [&](int m) { return (int64_t(e) << 23) | (int64_t(m) << 18); },
                        0, cells))
        return false;
      int s = 0, raised = 0;
      ci = classes.assign(cells, e == e0 + 32 ? class_of[0] : -1, &s, &raised);
      if (ci < 0) return false;
      for (int f = 0; f < e - e0; ++f)
        if (member[f] && class_of[f] == ci) base_of[f] -= raised;
      base = lo - s;
      member[e - e0] = true;
    }
    base_of[e - e0] = base;
    class_of[e - e0] = ci;
  }
  for (int f = 0; f < 32; ++f) {
    if (base_of[f] < -(1 << 22) || base_of[f] >= (1 << 22)) return false;
    out->octave[(e0 + f) & 31] = static_cast<int32_t>(static_cast<uint32_t>(base_of[f]) << 8) | class_of[f];
  }
  if (!classes.store(out->octave_class)) return false;
  out->octave_classes = std::max(1, classes.n);
  out->octave_wrap = (e0 + 32) << 23;
  out->octave_wrap_add = base_of[32] - base_of[0];
  out->octave_top = (e0 + 33) << 23;
  return true;
}

// ThresholdTable::runs over t[1..reachable) (t non-decreasing; see ThresholdRuns)
void build_int_runs(const int32_t* t, int count, int reachable, ThresholdTable* out) {
  out->runs.count = 0;
  if (count <= 15 || reachable < 2) return;
  std::vector<int64_t> v(t, t + reachable);
  build_threshold_runs(v.data(), 1, reachable, 2, &out->runs);
}

// FloatThresholds::runs when t[1..count) are multiples of one power of two below 2^24 of it (see there)
void build_float_runs(const float* t, int count, FloatThresholds* out) {
  out->runs.count = 0;
  if (count <= 15 || !(t[1] > 0.0f)) return;
  int unit = std::numeric_limits<int>::max();   // E: the lowest set bit's exponent over t[1..count)
  for (int j = 1; j < count; ++j) {
    if (!std::isfinite(t[j])) return;
    int e;
    const double m = std::frexp(static_cast<double>(t[j]), &e);    // t = m · 2^e, m in [0.5, 1) with ≤ 24 bits
    const auto mant = static_cast<uint64_t>(std::ldexp(m, 24));
    unit = std::min(unit, e - 24 + __builtin_ctzll(mant));
  }
  const float unit_inv = std::ldexp(1.0f, -unit);
  if (!std::isnormal(unit_inv) || std::ldexp(static_cast<double>(t[count - 1]), -unit) >= 16777216.0) return;
  std::vector<int64_t> n(static_cast<size_t>(count));
  for (int j = 1; j < count; ++j) n[static_cast<size_t>(j)] = static_cast<int64_t>(std::ldexp(static_cast<double>(t[j]), -unit));
  if (!build_threshold_runs(n.data(), 1, count, 2, &out->runs, 0)) return;   // exact multiples: integer runs
  out->runs_unit_inv = unit_inv;
  out->runs_top = t[count - 1];
}

}  // namespace

bool cpu_supports_avx512_vbmi() {
  __builtin_cpu_init();
  const char* off = std::getenv("WQCOMPILE_NO_VBMI");
  if (off != nullptr && off[0] != '\0' && off[0] != '0') return false;
  return cpu_supports_avx512() && __builtin_cpu_supports("avx512vbmi");
}

namespace {

int64_t floor_div(int64_t a, int64_t b) {   // b > 0
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// (p, X) with ceil((X + i·p) / 2^q) = v[j + i] for i < len and p ≥ 2^q, if any: X + i·p must lie in
// ((v_i - 1)·2^q, v_i·2^q]. The run's two ends bound p to at most ~2^(q+1)/(len - 1) + 1 candidates; each is
// checked against every threshold (the X interval) in O(len).
struct RunFit {
  int len = 1;
  int64_t p = 1, x = 0;
};
bool fit_run(const int64_t* v, int j, int len, int q, RunFit* fit) {
  const int64_t unit = int64_t(1) << q;
  if (len == 1) {
    *fit = RunFit{1, unit, v[j] * unit};
    return true;
  }
  const int64_t last = j + len - 1, delta = len - 1;
  const int64_t lo = std::max(unit, floor_div((v[last] - 1 - v[j]) * unit, delta) + 1);   // from the two ends
  const int64_t hi = floor_div((v[last] - v[j] + 1) * unit - 1, delta);
  for (int64_t p = lo; p <= hi; ++p) {
    int64_t xl = std::numeric_limits<int64_t>::min(), xh = std::numeric_limits<int64_t>::max();
    for (int i = 0; i < len && xl <= xh; ++i) {
      xl = std::max(xl, (v[j + i] - 1) * unit - i * p + 1);
      xh = std::min(xh, v[j + i] * unit - i * p);
    }
    if (xl <= xh) {
      *fit = RunFit{len, p, xl};   // the smallest X
      return true;
    }
  }
  return false;
}

// The longest run of v[j..end) at this q: fitting is monotone in the length (a run's prefix is a run), so a
// galloping search takes O(log len) fits. Two strictly increasing values always fit.
RunFit longest_run(const int64_t* v, int j, int end, int q) {
  RunFit best;
  fit_run(v, j, 1, q, &best);
  int good = 1, bad = end - j + 1;   // fits at good, not at bad (past the end)
  for (int len = 2; len < bad; len = std::min(2 * len, bad)) {
    RunFit f;
    if (!fit_run(v, j, len, q, &f)) {
      bad = len;
      break;
    }
    best = f, good = len;
    if (len == end - j) break;
  }
  while (bad - good > 1) {
    const int mid = good + (bad - good) / 2;
    RunFit f;
    if (fit_run(v, j, mid, q, &f)) best = f, good = mid;
    else bad = mid;
  }
  return best;
}

// ThresholdRuns' lines form over integer runs already found (see there): kept only when it matches the count at
// every grid point up to the last threshold and the quotient is exact at every multiple of g and one below it.
void build_threshold_lines(const int64_t* v, int begin, int end, int first_level, ThresholdRuns* out) {
  out->lines = 0;
  if (out->count > kMaxLines || end - begin < 2) return;
  for (int k = 0; k < out->count; ++k)
    if (out->shift[k] != 0) return;
  const int64_t base = v[begin];
  int64_t g = 0;
  for (int j = begin + 1; j < end; ++j) g = std::gcd(g, v[j] - base);
  // the checks below walk every grid point: at most 2^16 of them (~0.2 ms a table; the compiler's segmented sets
  // have ~1,600), so a model with many odd per-channel tables cannot stall the session start
  const int64_t top_n = g > 0 ? (v[end - 1] - base) / g : 0;
  if (g <= 0 || top_n >= (int64_t(1) << 16)) return;
  const int z = __builtin_ctzll(static_cast<uint64_t>(g));
  const int64_t g_odd = g >> z;
  if (top_n * g_odd >= (int64_t(1) << 24)) return;   // d >> z must be exact in float
  ThresholdRuns r = *out;
  for (int k = 0; k < r.count; ++k) {
    const int64_t p = r.step[k] / g, n_k = (r.start[k] - base) / g;
    if (p * g != r.step[k] || (p & (p - 1)) != 0) return;   // a spacing that is not g·2^s
    const int s = __builtin_ctzll(static_cast<uint64_t>(p));
    r.line_add[k] = static_cast<int32_t>(r.first[k] * p - n_k);
    r.line_shift[k] = s;
  }
  r.lines = r.count;
  r.line_cap = static_cast<int32_t>(top_n * g);
  r.line_rshift = z;
  r.line_mul = static_cast<float>(1.0 / static_cast<double>(g_odd));
  r.line_add_q = static_cast<float>(0.5 / static_cast<double>(g_odd));
  // the quotient: trunc(fma(x, mul, add)) is non-decreasing in x, so right at q·g' and q·g' - 1 for every q means
  // right everywhere in between
  auto quotient = [&](int64_t x) {
    return static_cast<int64_t>(std::fmaf(static_cast<float>(x), r.line_mul, r.line_add_q));
  };
  for (int64_t q = 0; q <= top_n; ++q)
    if (quotient(q * g_odd) != q || (q > 0 && quotient(q * g_odd - 1) != q - 1)) return;
  // the lines' minimum against the count at every grid point u ≤ top_n (the vector paths cap u there; the last
  // line reaches the top level at top_n, so no cap on the level is needed)
  int j = begin;
  for (int64_t u = 0; u <= top_n; ++u) {
    while (j < end && v[j] - base <= u * g) ++j;
    int64_t level = std::numeric_limits<int64_t>::max();
    for (int k = 0; k < r.lines; ++k) level = std::min<int64_t>(level, (u + r.line_add[k]) >> r.line_shift[k]);
    if (level != first_level - 1 + (j - begin)) return;
  }
  *out = r;
}

}  // namespace

bool build_threshold_runs(const int64_t* v, int begin, int end, int first_level, ThresholdRuns* out, int max_shift) {
  out->count = 0;
  out->exact = false;
  out->lines = 0;   // with_runs reads lines first: no stale lines on a set that gets no runs
  if (end <= begin || v[begin] < -(int64_t(1) << 30) || v[end - 1] >= (int64_t(1) << 31)) return false;
  int k = 0;
  bool exact = true, fractional = false;
  for (int j = begin; j < end;) {
    if (k == kMaxRuns) return false;
    if (j + 1 < end && v[j + 1] == v[j]) return false;   // equal thresholds: no arithmetic on them
    RunFit best = longest_run(v, j, end, 0);
    int shift = 0;
    for (int q = 1; q <= max_shift && j + best.len < end; ++q) {   // a dyadic spacing only if it runs longer
      const RunFit f = longest_run(v, j, end, q);
      if (f.len > best.len) best = f, shift = q;
    }
    const int64_t unit = int64_t(1) << shift;
    const int64_t cap = v[j + best.len - 1] - v[j], frac = v[j] * unit - best.x;
    if (cap * unit + frac + best.p > std::numeric_limits<int32_t>::max()) return false;
    out->start[k] = static_cast<int32_t>(v[j]);
    out->step[k] = static_cast<int32_t>(best.p);
    out->cap[k] = static_cast<int32_t>(cap);
    out->first[k] = first_level + (j - begin);
    out->shift[k] = shift;
    out->frac[k] = static_cast<int32_t>(frac);
    out->inv[k] = static_cast<float>(1.0 / static_cast<double>(best.p));
    // an integer run's step p = p'·2^z: floor(d / p) = floor((d >> z) / p') (the compiler's steps are dyadic with
    // few significant bits, so p' is small even on a fine int16 accumulator)
    const int z = shift == 0 ? __builtin_ctzll(static_cast<uint64_t>(best.p)) : 0;
    const int64_t p_odd = best.p >> z;
    out->rshift[k] = z;
    out->mul[k] = static_cast<float>(static_cast<double>(unit) / static_cast<double>(p_odd));
    out->add[k] = static_cast<float>((static_cast<double>(frac) + 0.5) / static_cast<double>(p_odd));
    exact = exact && p_odd < (1 << 13) && (cap >> z) * unit + frac < (int64_t(1) << 24);
    fractional = fractional || shift > 0;
    ++k;
    j += best.len;
  }
  // a dyadic run needs the exact quotient (the corrected one has no shift): else integer runs, or no index
  if (fractional && !exact) return max_shift > 0 && build_threshold_runs(v, begin, end, first_level, out, 0);
  for (int i = k; i < 16; ++i) {   // never selected: a lane's run index is < count
    out->start[i] = std::numeric_limits<int32_t>::max();
    out->step[i] = 1;
    out->cap[i] = 0;
    out->first[i] = 0;
    out->shift[i] = 0;
    out->frac[i] = 0;
    out->inv[i] = 1.0f;
    out->mul[i] = 0.0f;
    out->add[i] = 0.0f;
    out->rshift[i] = 0;
  }
  out->count = k;
  out->exact = exact;
  if (!fractional) build_threshold_lines(v, begin, end, first_level, out);
  return true;
}

std::string threshold_index_refusal(int count, bool packed_ok, int packed_bits, bool octave_ok, int runs, int lines) {
  const char* want = std::getenv("WQCOMPILE_REQUIRE_THRESHOLD_INDEX");
  if (want == nullptr || want[0] == '\0' || want[0] == '0' || count <= 15) return "";
  const std::string w(want);
  if (w == "octave"       ? octave_ok
      : w == "arithmetic" ? runs > 0
      : w == "lines"      ? lines > 0
                          : (packed_ok || octave_ok || runs > 0))
    return "";
  const std::string got = lines > 0 ? "the arithmetic index in lines (" + std::to_string(lines) + " lines)"
                          : runs > 0  ? "the arithmetic index (" + std::to_string(runs) + " runs)"
                          : octave_ok ? "the octave index"
                          : packed_ok ? "the packed index at P = " + std::to_string(packed_bits)
                                      : "no O(1) index (bucket / binary search)";
  return "WQCOMPILE_REQUIRE_THRESHOLD_INDEX=" + std::string(want) + ": " + std::to_string(count) +
         " thresholds got " + got;
}

void build_threshold_table(const int32_t* t, int count, ThresholdTable* out) {
  out->count = count;
  out->blocks = (count + 16) / 16;
  for (int j = 0; j < 256; ++j) out->padded[j] = j < count ? t[j] : std::numeric_limits<int32_t>::max();
  for (int j = 0; j < 16; ++j)
    for (int b = 0; b < 16; ++b) out->transposed[j][b] = out->padded[16 * b + j];
  // the O(1) bucket index (t is non-decreasing, so bucket(t[j]) is too)
  int all[1024] = {0};
  int* in_bucket = all;
  for (int j = 0; j < count; ++j) ++in_bucket[threshold_bucket(t[j])];
  int lo = 0;
  for (int b = 0; b < 1024; ++b) {
    const int32_t head = lo + (in_bucket[b] > 1 ? kBucketSlow : 0);
    out->bucket[b] = static_cast<uint32_t>(out->padded[lo]) | static_cast<uint64_t>(static_cast<uint32_t>(head)) << 32;
    lo += in_bucket[b];
  }
  // the 32-bit index (see ThresholdTable::packed) over the reachable thresholds: prepare_layer enforces
  // |acc| ≤ 2^30 - 1, so thresholds ≥ 2^30 (the compiler's clamp for unreachable ones) are never met and stay out.
  // The coarsest resolution P in 5..9 that keeps every bucket of width > 1 to at most one threshold.
  out->packed_ok = false;
  out->packed.clear();
  out->octave_ok = false;
  int reachable = 0;
  while (reachable < count && t[reachable] < (int32_t(1) << 30)) ++reachable;
  // the arithmetic index (needs no positive t[0]); every path prefers it, so a table with it needs no other
  build_int_runs(t, count, reachable, out);
  if (count < 1 || t[0] < 1 || out->runs.count > 0) return;
  // the gather-free octave index (AVX-512 VBMI only; built when this CPU can use it)
  out->octave_ok = cpu_supports_avx512_vbmi() && build_octave_index(t, reachable, out);
  for (int p = 5; p <= 9 && !out->packed_ok; ++p) {
    const int nb = 32 << p;
    std::vector<int> in_b(static_cast<size_t>(nb), 0);
    for (int j = 0; j < reachable; ++j) ++in_b[static_cast<size_t>(threshold_bucket_p(t[j], p))];
    std::vector<uint32_t> packed(static_cast<size_t>(nb), 0u);
    bool ok = true;
    lo = 0;
    for (int b = 0; b < nb && ok; ++b) {
      uint32_t L = 0, R = 0;
      const int e = (b - 1) >> p, m = (b - 1) & ((1 << p) - 1);
      const int k = in_b[static_cast<size_t>(b)];
      if (b == 0) {
        // v ≤ 0 < t[0]: never looked up
      } else if (k == 0) {
        // lo = 0: below t[0], never looked up (R = 2^24 - 1 all the same)
        L = lo > 0 ? static_cast<uint32_t>(lo - 1) : 0u;
        R = lo > 0 ? 0u : 0xFFFFFFu;
      } else if (e < p) {   // width 1: every threshold in it equals v
        L = static_cast<uint32_t>(lo + k - 1);
      } else if (k == 1) {
        const int64_t start = static_cast<int64_t>((int64_t(1) << p) + m) << (e - p);
        const int64_t r = static_cast<int64_t>(t[lo]) - start;
        if (r < 0 || r > 0xFFFFFF) ok = false;   // cannot happen below 2^30 (width ≤ 2^(30-P))
        L = static_cast<uint32_t>(lo);
        R = static_cast<uint32_t>(r & 0xFFFFFF);
      } else {
        ok = false;
      }
      packed[static_cast<size_t>(b)] = L | R << 8;
      lo += k;
    }
    if (!ok) continue;
    out->packed_ok = true;
    out->packed_bits = p;
    out->packed_shift = 23 - p;
    out->packed_key_bias = (127 << p) - 1;
    out->packed = std::move(packed);
  }
}

void build_float_thresholds(const float* t, int count, FloatThresholds* out) {
  out->count = count;
  out->blocks = (count + 16) / 16;
  for (int j = 0; j < 256; ++j) out->padded[j] = j < count ? t[j] : std::numeric_limits<float>::quiet_NaN();
  for (int j = 0; j < 16; ++j)
    for (int b = 0; b < 16; ++b) out->transposed[j][b] = out->padded[16 * b + j];
  // the 32-bit index on the float bits (see FloatThresholds::packed): the coarsest resolution P in 5..9 for which
  // every key holds at most one threshold and all of them lie below the last key
  out->octave_ok = false;
  out->packed_ok = false;
  out->packed.clear();
  build_float_runs(t, count, out);   // every path prefers it, so a table with it needs no other index
  if (count < 1 || !(t[0] > 0.0f) || out->runs.count > 0) return;
  int32_t bits[256];
  for (int j = 0; j < count; ++j) std::memcpy(&bits[j], &t[j], sizeof(int32_t));
  out->octave_ok = cpu_supports_avx512_vbmi() && build_float_octave_index(bits, count, out);
  for (int p = 5; p <= 9 && !out->packed_ok; ++p) {
    const int shift = 23 - p;
    const int32_t keys = 32 << p, base = bits[0] >> shift;
    bool ok = true;
    for (int j = 0; j < count && ok; ++j) {
      const int32_t k = (bits[j] >> shift) - base;   // t non-decreasing and > 0: 0 ≤ k, non-decreasing
      ok = k < keys - 1 && (j == 0 || k != (bits[j - 1] >> shift) - base);
    }
    if (!ok) continue;
    std::vector<uint32_t> packed(static_cast<size_t>(keys), 0u);
    int lo = 0;   // #{j : key(t[j]) < k}
    for (int32_t k = 0; k < keys; ++k) {
      uint32_t L = 0, R = 0;
      if (lo < count && (bits[lo] >> shift) - base == k) {
        L = static_cast<uint32_t>(lo);
        R = static_cast<uint32_t>(bits[lo] & ((1 << shift) - 1));
        ++lo;
      } else {
        L = lo > 0 ? static_cast<uint32_t>(lo - 1) : 0u;   // lo = 0 only below t[0]'s key 0: never looked up
      }
      packed[static_cast<size_t>(k)] = L | R << 8;
    }
    out->packed_ok = true;
    out->packed_bits = p;
    out->packed_shift = shift;
    out->packed_keys = keys;
    out->base = base;
    out->packed = std::move(packed);
  }
}

}  // namespace wq
