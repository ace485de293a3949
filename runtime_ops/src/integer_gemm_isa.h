// The entry points every integer_gemm_<isa>.cc defines in its own namespace (wq::isa_<name>); integer_gemm.cc
// gathers them into IsaKernels tables. Declared through one macro so the three sets cannot drift apart.
#pragma once

#include "integer_gemm.h"

#define WQ_DECLARE_ISA_ENTRY_POINTS                                                                              \
  extern const int kMR;                                                                                          \
  extern const int kNR;                                                                                          \
  void gemm_tile(const int16_t* a, size_t lda, const int16_t* b, size_t ldb, size_t kp, int32_t* c, size_t ldc,  \
                 int rows, int ncols);                                                                          \
  void quantize(const float* x, int16_t* y, size_t n, float scale, float xmax);                                   \
  uint8_t lookup(const uint8_t* x, int16_t* y, size_t n, const int16_t* table256);                                \
  uint8_t pair_levels(const uint8_t* x0, const uint8_t* x1, int32_t* dst, size_t n, const int16_t* table256);      \
  void pair_floats(const float* x0, const float* x1, int32_t* dst, size_t n, float scale, float xmax);           \
  uint8_t max_u8(const uint8_t* x, size_t n);                                                                    \
  void edge_float(const int32_t* acc, float* y, size_t n, int32_t bias, float scale);                            \
  void scale_rows(const int32_t* acc, int32_t* y, size_t n, int32_t r);                                         \
  void edge_levels(const int32_t* acc, uint8_t* y, size_t n, int32_t bias, const ThresholdTable* t);             \
  void qrelu(const float* x, uint8_t* y, size_t n, const FloatThresholds* t);                                    \
  void qdecode(const uint8_t* x, float* y, size_t n, const float* table256);                                     \
  void depthwise(const DepthwisePlane& p);                                                                       \
  void pack_panel(const PanelPack& p);                                                                         \
  void max_pool(const PoolPlane& p);                                                                             \
  void max_pool_i32(const PoolPlaneI32& p);                                                                      \
  void add_qrelu(const float* a, const float* b, const uint8_t* lv, const float* table256, int table_size,         \
                 uint8_t* y, size_t n, const FloatThresholds* t);

namespace wq {
namespace isa_baseline { WQ_DECLARE_ISA_ENTRY_POINTS }
namespace isa_avx2 { WQ_DECLARE_ISA_ENTRY_POINTS }
namespace isa_avx512 {
WQ_DECLARE_ISA_ENTRY_POINTS
void gemm_tile_edge(const int16_t* a, size_t lda, const int16_t* b, size_t ldb, size_t kp, int rows, int ncols,
                    const TileEdge& edge);
// the u8 × s8 path (vpdpbusd; IsaKernels::quad_levels, gemm_tile_u8, gemm_tile_u8_edge)
uint8_t quad_levels(const uint8_t* x0, const uint8_t* x1, const uint8_t* x2, const uint8_t* x3, int32_t* dst, size_t n,
                    const int16_t* table256);
void quad_floats(const float* x0, const float* x1, const float* x2, const float* x3, int32_t* dst, size_t n,
                 float scale, float xmax);
void gemm_tile_u8(const int8_t* a, size_t lda, const uint8_t* b, size_t ldb, size_t kq, int32_t* c, size_t ldc,
                  int rows, int ncols);
void gemm_tile_u8_edge(const int8_t* a, size_t lda, const uint8_t* b, size_t ldb, size_t kq, int rows, int ncols,
                       const TileEdge& edge);
// AVX-512 VBMI versions (byte permutes over the level table's byte planes), used when cpu_supports_avx512_vbmi()
uint8_t lookup_vbmi(const uint8_t* x, int16_t* y, size_t n, const int16_t* table256);
uint8_t pair_levels_vbmi(const uint8_t* x0, const uint8_t* x1, int32_t* dst, size_t n, const int16_t* table256);
uint8_t quad_levels_vbmi(const uint8_t* x0, const uint8_t* x1, const uint8_t* x2, const uint8_t* x3, int32_t* dst,
                         size_t n, const int16_t* table256);
void qdecode_vbmi(const uint8_t* x, float* y, size_t n, const float* table256);
void add_qrelu_vbmi(const float* a, const float* b, const uint8_t* lv, const float* table256, int table_size,
                    uint8_t* y, size_t n, const FloatThresholds* t);
void edge_float_scaled(const int32_t* acc, float* y, size_t n, int32_t bias, int32_t r, float scale);
void add_qrelu_rows(const float* a, size_t lda, const float* b, const uint8_t* lv, size_t ldb, const float* table256,
                    int table_size, uint8_t* y, size_t ldy, int rows, size_t n, const FloatThresholds* t);
void add_qrelu_rows_vbmi(const float* a, size_t lda, const float* b, const uint8_t* lv, size_t ldb,
                         const float* table256, int table_size, uint8_t* y, size_t ldy, int rows, size_t n,
                         const FloatThresholds* t);
uint8_t depthwise_lanes_vbmi(const DepthwiseLanes& p);
void gemv_nibbles(const int16_t* a, size_t lda, const uint8_t* nibbles, const int16_t* table32, size_t kp, int32_t* c,
                  size_t ldc, int rows);
void gemm_tile_pool_edge(const int16_t* a, size_t lda, const int16_t* b, size_t ldb, size_t kp, int rows, int ncols,
                         const TileEdge& edge);
void gemm_tile_u8_pool_edge(const int8_t* a, size_t lda, const uint8_t* b, size_t ldb, size_t kq, int rows, int ncols,
                            const TileEdge& edge);
}
}  // namespace wq
