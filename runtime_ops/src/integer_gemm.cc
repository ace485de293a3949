// Run-time choice of the instruction set (compiled with the baseline flags: this file must run on any x86-64).
#include "integer_gemm.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
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
        ns::edge_float, ns::scale_rows, ns::edge_levels, ns::qrelu, ns::qdecode, ns::depthwise, ns::pack_panel, ns::max_pool, ns::max_pool_i32, ns::add_qrelu, fused        \
  }

const IsaKernels& table_baseline() {
  static const IsaKernels k = WQ_ISA_TABLE(isa_baseline, "baseline", nullptr);
  return k;
}
const IsaKernels& table_avx2() {
  static const IsaKernels k = WQ_ISA_TABLE(isa_avx2, "avx2", nullptr);
  return k;
}
const IsaKernels& table_avx512() {
  static const IsaKernels k = WQ_ISA_TABLE(isa_avx512, "avx512", isa_avx512::gemm_tile_edge);
  return k;
}

}  // namespace

bool cpu_supports_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}

bool cpu_supports_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}

const IsaKernels& select_isa() {
  const char* env = std::getenv("WQCOMPILE_ISA");
  const std::string want = env ? env : "";
  if (want.empty() || want == "auto") {
    if (cpu_supports_avx512()) return table_avx512();
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
    return table_avx512();
  }
  throw Error("WQCOMPILE_ISA must be baseline, avx2, avx512 or auto, got '" + want + "'");
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
  if (count < 1 || t[0] < 1) return;
  int reachable = 0;
  while (reachable < count && t[reachable] < (int32_t(1) << 30)) ++reachable;
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
  // the 32-bit index on the float bits (see FloatThresholds::packed)
  out->packed_ok = count >= 1 && t[0] > 0.0f;
  if (!out->packed_ok) return;
  int32_t bits[256];
  for (int j = 0; j < count; ++j) std::memcpy(&bits[j], &t[j], sizeof(int32_t));
  out->base = bits[0] >> 18;
  int in_key[1024] = {0};
  for (int j = 0; j < count; ++j) {
    const int32_t k = (bits[j] >> 18) - out->base;   // t non-decreasing and > 0: 0 ≤ k, non-decreasing
    if (k >= 1023 || ++in_key[k] > 1) {
      out->packed_ok = false;
      return;
    }
  }
  int lo = 0;
  for (int k = 0; k < 1024; ++k) {
    uint32_t L = 0, R = 0;
    if (in_key[k] == 1) {
      L = static_cast<uint32_t>(lo);
      R = static_cast<uint32_t>(bits[lo] & 0x3FFFF);
    } else {
      L = lo > 0 ? static_cast<uint32_t>(lo - 1) : 0u;   // lo = 0 only below t[0]'s key 0: never looked up
    }
    out->packed[k] = L | R << 8;
    lo += in_key[k];
  }
}

}  // namespace wq
