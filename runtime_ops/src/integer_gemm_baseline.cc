// The portable path: plain C++ loops (the compiler may use x86-64's baseline SSE2), no run-time requirement.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "integer_gemm_isa.h"

namespace wq {
namespace {
#include "integer_gemm_generic.h"
}  // namespace

namespace isa_baseline {

const int kMR = 4;
const int kNR = 16;

void gemm_tile(const int16_t* a, size_t lda, const int16_t* b, size_t ldb, size_t kp, int32_t* c, size_t ldc, int rows,
               int ncols) {
  gemm_tile_generic<4, 16>(a, lda, b, ldb, kp, c, ldc, rows, ncols);
}
void quantize(const float* x, int16_t* y, size_t n, float scale, float xmax) { quantize_generic(x, y, n, scale, xmax); }
uint8_t lookup(const uint8_t* x, int16_t* y, size_t n, const int16_t* table256) { return lookup_generic(x, y, n, table256); }
uint8_t pair_levels(const uint8_t* x0, const uint8_t* x1, int32_t* dst, size_t n, const int16_t* table256) {
  return pair_levels_generic(x0, x1, dst, n, table256);
}
void pair_floats(const float* x0, const float* x1, int32_t* dst, size_t n, float scale, float xmax) {
  pair_floats_generic(x0, x1, dst, n, scale, xmax);
}
uint8_t max_u8(const uint8_t* x, size_t n) { return max_u8_generic(x, n); }
void edge_float(const int32_t* acc, float* y, size_t n, int32_t bias, float scale) {
  edge_float_generic(acc, y, n, bias, scale);
}
void scale_rows(const int32_t* acc, int32_t* y, size_t n, int32_t r) { scale_rows_generic(acc, y, n, r); }
void edge_levels(const int32_t* acc, uint8_t* y, size_t n, int32_t bias, const ThresholdTable* t) {
  edge_levels_generic(acc, y, n, bias, t);
}
void qrelu(const float* x, uint8_t* y, size_t n, const FloatThresholds* t) { qrelu_generic(x, y, n, t); }
void add_qrelu(const float* a, const float* b, const uint8_t* lv, const float* table256, int table_size, uint8_t* y,
               size_t n, const FloatThresholds* t) {
  add_qrelu_generic(a, b, lv, table256, y, n, t);
}
void qdecode(const uint8_t* x, float* y, size_t n, const float* table256) { qdecode_generic(x, y, n, table256); }
void depthwise(const DepthwisePlane& p) { depthwise_generic(p); }
void pack_panel(const PanelPack& p) { pack_panel_with(p, copy_run_generic); }
void max_pool(const PoolPlane& p) { max_pool_plane_with(p, max_rows_generic, max_window_generic); }
void max_pool_i32(const PoolPlaneI32& p) { max_pool_i32_with(p, max_rows_i32_generic, max_window_i32_generic); }

}  // namespace isa_baseline
}  // namespace wq
