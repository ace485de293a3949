// Run-time choice of the instruction set (compiled with the baseline flags: this file must run on any x86-64).
#include "integer_gemm.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "common.h"
#include "integer_gemm_isa.h"

namespace wq {
namespace {

#define WQ_ISA_TABLE(ns, label, fused)                                                                          \
  IsaKernels {                                                                                                  \
    label, ns::kMR, ns::kNR, ns::gemm_tile, ns::quantize, ns::lookup, ns::pair_levels, ns::pair_floats, ns::max_u8, \
        ns::edge_float, ns::edge_levels, ns::qrelu, ns::qdecode, ns::depthwise, ns::pack_panel, ns::max_pool, fused        \
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
  int in_bucket[1024] = {0};
  for (int j = 0; j < count; ++j) ++in_bucket[threshold_bucket(t[j])];
  int lo = 0;
  for (int b = 0; b < 1024; ++b) {
    const int32_t head = lo + (in_bucket[b] > 1 ? kBucketSlow : 0);
    out->bucket[b] = static_cast<uint32_t>(out->padded[lo]) | static_cast<uint64_t>(static_cast<uint32_t>(head)) << 32;
    lo += in_bucket[b];
  }
}

void build_float_thresholds(const float* t, int count, FloatThresholds* out) {
  out->count = count;
  out->blocks = (count + 16) / 16;
  for (int j = 0; j < 256; ++j) out->padded[j] = j < count ? t[j] : std::numeric_limits<float>::quiet_NaN();
  for (int j = 0; j < 16; ++j)
    for (int b = 0; b < 16; ++b) out->transposed[j][b] = out->padded[16 * b + j];
}

}  // namespace wq
