// What QConv and QGemm share (mirrors runtime_ops/integer_core.py and packing.py): operand validation, decoding the
// packed b-bit indices through the codebook once, input mantissas, the accumulator bound and the output edge.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "integer_gemm.h"

namespace wq {

// Attributes common to QConv and QGemm.
struct LayerAttrs {
  int64_t w_bits = 0;
  std::vector<int64_t> w_shape;
  std::vector<int64_t> w_shift;
  int64_t x_shift = 0;
  int64_t x_max = 32767;
  // 2^x_shift is a normal float32, so a float input is scaled with one exact multiply (else ldexp per element)
  bool x_scale_normal() const { return x_shift >= -126 && x_shift <= 127; }
};

// Reads w_bits, w_shape, w_shift, x_shift, x_max; a missing required attribute is an error.
LayerAttrs read_layer_attrs(const OrtKernelInfo* info, const std::string& where);

// Input positions shared by QConv and QGemm.
enum LayerInput : size_t { kX = 0, kW = 1, kCodebook = 2, kXTable = 3, kBias = 4, kThresholds = 5, kRowScale = 6 };

// row_scale r means r · 2^-kRowScaleBits (op-contract §2.1); r ≤ 2^22 and |acc| < 2^30 keep acc · r below 2^52,
// exact in int64 and in double.
constexpr int kRowScaleBits = 22;

// The constant operands of a layer, decoded and validated once.
struct PreparedLayer {
  int64_t rows = 0;        // output channels M (QConv) or N (QGemm)
  int64_t fan_in = 0;      // K per output channel
  int64_t gc = 1;          // codebook rows: 1 or rows
  std::vector<int16_t> weights;   // [rows][fan_in] codebook mantissas C[g(o), idx[o, k]]
  std::vector<int64_t> row_abs;   // Σ_k |C| per row
  std::vector<int32_t> bias;      // [rows], zeros if absent
  std::vector<int32_t> row_scale; // [rows] scales of the one shared codebook, empty if absent (op-contract §2.1)
  // output edge, per codebook row g
  std::vector<int64_t> shift;     // w_shift[g] + x_shift
  std::vector<float> scale;       // 2^-shift when exact as one float multiply (scale_fast), else unused
  std::vector<char> scale_fast;
  std::vector<std::unique_ptr<ThresholdTable>> thresholds;   // empty → float output
  // input side
  bool x_levels = false;          // uint8 level input (else float32)
  int64_t x_table_size = 0;
  std::vector<int16_t> x_table256;   // level → mantissa, zero past the table; then its byte planes (kLevelTableInt16)
  int64_t x_bound = 0;            // max |X|: x_max (float) or max |x_table| (levels)

  int64_t row_of(int64_t o) const { return gc == 1 ? 0 : o; }
  bool fused() const { return !thresholds.empty(); }
  bool row_scaled() const { return !row_scale.empty(); }
};

struct LayerOperands {
  InputView w, codebook, x_table, bias, thresholds, row_scale;
};

// Validate the operands against the attributes (op-contract §6) and decode them. `x_levels` is the input kind the
// kernel was created for; `levels_out` the output kind (uint8 levels need thresholds, float32 forbids them).
std::shared_ptr<PreparedLayer> prepare_layer(const std::string& where, const LayerAttrs& attrs, int64_t rows,
                                             int64_t fan_in, bool x_levels, bool levels_out,
                                             const LayerOperands& ops);

// Operands from the kernel info when all of them are constant initializers (else nullptr: prepare per run).
bool constant_operands(const OrtKernelInfo* info, const std::string& where, LayerOperands* out);
LayerOperands run_operands(OrtKernelContext* ctx, const std::string& where);

// The largest input level read (lookup, pair_levels, depthwise_lanes) against the level table (op-contract §6):
// an error past the table (its zero-filled 256-entry copy was read, nothing out of bounds).
void check_levels(const std::string& where, const PreparedLayer& L, uint8_t max_level);

// `count` elements of X from flat index `offset` → int16 mantissas (float: linear fixed point; uint8: x_table lookup,
// every level checked against the table size).
void mantissa_span(const IsaKernels& isa, const std::string& where, const PreparedLayer& L, const LayerAttrs& attrs,
                   const InputView& x, int64_t offset, int64_t count, int16_t* out);

// Two channels' mantissas as int16 pairs (QConv's pair image): out[i] = (X[offset0 + i], X[offset1 + i]), the
// first in the low half; offset1 < 0 gives 0 in the high half. Levels are checked as in mantissa_span.
void pair_span(const IsaKernels& isa, const std::string& where, const PreparedLayer& L, const LayerAttrs& attrs,
               const InputView& x, int64_t offset0, int64_t offset1, int64_t count, int32_t* out);

// Four channels' u8 mantissas as the bytes of int32 (QConv's quad image, its u8 path). Level input (every x_table
// entry within 0..255): byte c of out[i] = x_table[X[offset[c] + i]], offset[c] < 0 gives 0, levels checked as in
// mantissa_span. Float input (x_max ≤ 127, x_shift a normal float32 exponent): byte c = the s8 mantissa + 128,
// offset[c] < 0 gives 128 (IsaKernels::quad_floats; the caller corrects the bias).
void quad_span(const IsaKernels& isa, const std::string& where, const PreparedLayer& L, const LayerAttrs& attrs,
               const InputView& x, const int64_t offset[4], int64_t count, int32_t* out);

// X → int16 mantissas (float: linear fixed point; uint8: x_table lookup, every level checked), in parallel.
void input_mantissas(OrtKernelContext* ctx, const IsaKernels& isa, const std::string& where, const PreparedLayer& L,
                     const LayerAttrs& attrs, const InputView& x, int16_t* out, int64_t rows, int64_t cols,
                     int64_t out_stride);

// One segment of output channel o: acc (without bias) and bias → float32 or uint8 levels (op-contract §3).
void edge_segment(const IsaKernels& isa, const PreparedLayer& L, int64_t o, const int32_t* acc, int32_t bias,
                  void* out, int64_t count);

}  // namespace wq
