// Operand validation and decoding shared by QConv and QGemm (mirrors integer_core.py / packing.py).
#include "integer_core.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace wq {
namespace {

// Indices of a little-endian b-bit stream: index i occupies bits [i·b, i·b + b) (op-contract §1).
void unpack_indices(const uint8_t* packed, int64_t bytes, int bits, int64_t count, std::vector<uint8_t>* out) {
  out->resize(static_cast<size_t>(count));
  const unsigned mask = (1u << bits) - 1u;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t bit = i * bits;
    const int64_t byte = bit >> 3;
    unsigned v = packed[byte];
    if (byte + 1 < bytes) v |= static_cast<unsigned>(packed[byte + 1]) << 8;
    (*out)[static_cast<size_t>(i)] = static_cast<uint8_t>((v >> (bit & 7)) & mask);
  }
}

bool has_data(const InputView& v) { return v.present && v.numel > 0; }

}  // namespace

// a level past the table was looked up in the zero-filled 256-entry copy, so nothing out of bounds was read before
// this error
void check_levels(const std::string& where, const PreparedLayer& L, uint8_t max_level) {
  if (max_level >= L.x_table_size)
    fail(where, "input level " + std::to_string(max_level) + " is out of range for a " +
                    std::to_string(L.x_table_size) + "-entry level table");
}

LayerAttrs read_layer_attrs(const OrtKernelInfo* info, const std::string& where) {
  LayerAttrs a;
  if (!get_int_attr(info, "w_bits", &a.w_bits)) fail(where, "missing int attribute w_bits");
  if (!get_ints_attr(info, "w_shape", &a.w_shape)) fail(where, "missing ints attribute w_shape");
  if (!get_ints_attr(info, "w_shift", &a.w_shift)) fail(where, "missing ints attribute w_shift");
  get_int_attr(info, "x_shift", &a.x_shift);
  get_int_attr(info, "x_max", &a.x_max);
  if (a.w_bits < 1 || a.w_bits > 8) fail(where, "w_bits must be in 1..8, got " + std::to_string(a.w_bits));
  if (a.x_shift < -100000 || a.x_shift > 100000) fail(where, "x_shift " + std::to_string(a.x_shift) + " is out of range");
  for (int64_t s : a.w_shift)
    if (s < -100000 || s > 100000) fail(where, "w_shift " + std::to_string(s) + " is out of range");
  return a;
}

bool constant_operands(const OrtKernelInfo* info, const std::string& where, LayerOperands* out) {
  const size_t count = kernel_input_count(info);
  bool constant = false;
  out->w = get_constant_input(info, kW, &constant, where, "W");
  if (!constant) return false;
  out->codebook = get_constant_input(info, kCodebook, &constant, where, "codebook");
  if (!constant) return false;
  struct Optional {
    size_t index;
    InputView* dst;
    const char* what;
  } optional[] = {{kXTable, &out->x_table, "x_table"}, {kBias, &out->bias, "bias"},
                  {kThresholds, &out->thresholds, "thresholds"}, {kRowScale, &out->row_scale, "row_scale"}};
  for (const auto& o : optional) {
    if (o.index >= count || input_is_absent(info, o.index)) continue;
    *o.dst = get_constant_input(info, o.index, &constant, where, o.what);
    if (!constant) return false;
  }
  return true;
}

LayerOperands run_operands(OrtKernelContext* ctx, const std::string& where) {
  LayerOperands ops;
  ops.w = get_input(ctx, kW, where, "W");
  ops.codebook = get_input(ctx, kCodebook, where, "codebook");
  ops.x_table = get_input(ctx, kXTable, where, "x_table");
  ops.bias = get_input(ctx, kBias, where, "bias");
  ops.thresholds = get_input(ctx, kThresholds, where, "thresholds");
  ops.row_scale = get_input(ctx, kRowScale, where, "row_scale");
  return ops;
}

std::shared_ptr<PreparedLayer> prepare_layer(const std::string& where, const LayerAttrs& attrs, int64_t rows,
                                             int64_t fan_in, bool x_levels, bool levels_out,
                                             const LayerOperands& ops) {
  auto L = std::make_shared<PreparedLayer>();
  L->rows = rows;
  L->fan_in = fan_in;
  L->x_levels = x_levels;
  const int bits = static_cast<int>(attrs.w_bits);
  const int64_t entries = int64_t(1) << bits;

  // codebook int16 [Gc, 2^b], Gc ∈ {1, rows}; w_shift has Gc entries
  const InputView& cb = ops.codebook;
  if (!cb.present || cb.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16 || cb.shape.size() != 2 || cb.shape[1] != entries)
    fail(where, "codebook must be int16 [Gc, " + std::to_string(entries) + "], got " +
                    (cb.present ? std::string(type_name(cb.type)) + " " + shape_str(cb.shape) : "nothing"));
  L->gc = cb.shape[0];
  if (L->gc != 1 && L->gc != rows)
    fail(where, "codebook has " + std::to_string(L->gc) + " rows; expected 1 or " + std::to_string(rows));
  if (static_cast<int64_t>(attrs.w_shift.size()) != L->gc)
    fail(where, "w_shift has " + std::to_string(attrs.w_shift.size()) + " entries; expected " + std::to_string(L->gc));

  // packed indices: 1-D uint8 of exactly ceil(rows·fan_in·b / 8) bytes
  const InputView& w = ops.w;
  const int64_t count = rows * fan_in;   // both ≤ kMaxElements-checked by the caller
  const int64_t need = (count * bits + 7) / 8;
  if (!w.present || w.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 || w.shape.size() != 1)
    fail(where, "packed weights must be a 1-D uint8 tensor, got " +
                    (w.present ? std::string(type_name(w.type)) + " " + shape_str(w.shape) : "nothing"));
  if (w.numel != need)
    fail(where, "packed weights hold " + std::to_string(w.numel) + " bytes, expected " + std::to_string(need) + " for " +
                    std::to_string(count) + " " + std::to_string(bits) + "-bit indices");

  // bias int32 [rows] (an empty tensor counts as absent)
  L->bias.assign(static_cast<size_t>(rows), 0);
  if (has_data(ops.bias)) {
    const InputView& b = ops.bias;
    if (b.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 || b.shape.size() != 1 || b.shape[0] != rows)
      fail(where, "bias must be int32 [" + std::to_string(rows) + "], got " + type_name(b.type) + " " + shape_str(b.shape));
    std::copy(b.as<int32_t>(), b.as<int32_t>() + rows, L->bias.begin());
  }

  // row_scale int32 [rows] in 0..2^22, only with one shared codebook (an empty tensor counts as absent)
  if (has_data(ops.row_scale)) {
    const InputView& r = ops.row_scale;
    if (r.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 || r.shape.size() != 1 || r.shape[0] != rows)
      fail(where, "row_scale must be int32 [" + std::to_string(rows) + "], got " + type_name(r.type) + " " +
                      shape_str(r.shape));
    if (L->gc != 1)
      fail(where, "row_scale scales one shared codebook, but the codebook has " + std::to_string(L->gc) + " rows");
    L->row_scale.assign(r.as<int32_t>(), r.as<int32_t>() + rows);
    for (int32_t v : L->row_scale)
      if (v < 0 || v > (int32_t(1) << kRowScaleBits))
        fail(where, "row_scale values must be in 0..2^" + std::to_string(kRowScaleBits) + ", got " + std::to_string(v));
  }

  // input kind: x_table present exactly when X is uint8
  L->x_table256.assign(kLevelTableInt16, 0);
  if (x_levels) {
    const InputView& t = ops.x_table;
    if (!has_data(t)) fail(where, "uint8 level input needs an x_table input");
    if (t.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16 || t.shape.size() != 1)
      fail(where, "x_table must be a 1-D int16 tensor, got " + std::string(type_name(t.type)) + " " + shape_str(t.shape));
    L->x_table_size = t.numel;
    int64_t bound = 0;
    for (int64_t i = 0; i < t.numel; ++i) {
      const int64_t v = t.as<int16_t>()[i];
      bound = std::max(bound, v < 0 ? -v : v);
      if (i < 256) L->x_table256[static_cast<size_t>(i)] = static_cast<int16_t>(v);
    }
    L->x_bound = bound;
    fill_level_table_planes(L->x_table256.data());
  } else {
    if (has_data(ops.x_table)) fail(where, "a float32 input must not come with an x_table");
    if (attrs.x_max < 1 || attrs.x_max > 32767)
      fail(where, "x_max must be in 1..32767, got " + std::to_string(attrs.x_max));
    L->x_bound = attrs.x_max;
  }

  // decode: C[g(o), idx[o, k]]
  std::vector<uint8_t> idx;
  unpack_indices(w.as<uint8_t>(), w.numel, bits, count, &idx);
  const int16_t* codebook = cb.as<int16_t>();
  L->weights.resize(static_cast<size_t>(count));
  L->row_abs.assign(static_cast<size_t>(rows), 0);
  for (int64_t o = 0; o < rows; ++o) {
    const int16_t* row = codebook + L->row_of(o) * entries;
    int64_t sum = 0;
    for (int64_t k = 0; k < fan_in; ++k) {
      const int16_t c = row[idx[static_cast<size_t>(o * fan_in + k)]];
      L->weights[static_cast<size_t>(o * fan_in + k)] = c;
      sum += c < 0 ? -int64_t(c) : int64_t(c);
    }
    L->row_abs[static_cast<size_t>(o)] = sum;
  }

  // the compile-time accumulator bound (op-contract §2): |bias| + max|X| · Σ|C| ≤ 2^30 - 1 for every row
  for (int64_t o = 0; o < rows; ++o) {
    const int64_t b = L->bias[static_cast<size_t>(o)];
    const int64_t row_abs = L->row_abs[static_cast<size_t>(o)];
    // row_abs ≤ 2^15 · 2^31 and x_bound ≤ 2^15: the product fits int64
    if ((b < 0 ? -b : b) + L->x_bound * row_abs > kAccLimit - 1)
      fail(where, "weights, inputs and bias can overflow the int32 accumulator bound 2^30");
  }

  // output edge per codebook row
  L->shift.resize(static_cast<size_t>(L->gc));
  L->scale.resize(static_cast<size_t>(L->gc));
  L->scale_fast.resize(static_cast<size_t>(L->gc));
  for (int64_t g = 0; g < L->gc; ++g) {
    const int64_t s = attrs.w_shift[static_cast<size_t>(g)] + attrs.x_shift;
    L->shift[static_cast<size_t>(g)] = s;
    // float32(acc) · 2^-s equals ldexp(float32(acc), -s) when 2^-s is a normal float and no |acc| < 2^30 can
    // overflow or become subnormal: -126 ≤ -s ≤ 97.
    const bool fast = s >= -97 && s <= 126;
    L->scale_fast[static_cast<size_t>(g)] = fast;
    L->scale[static_cast<size_t>(g)] = fast ? std::ldexp(1.0f, static_cast<int>(-s)) : 0.0f;
  }

  // fused output quantizer: int32 [Gc, L-1], 1 ≤ L-1 ≤ 255, non-decreasing rows
  const InputView& t = ops.thresholds;
  if (has_data(t)) {
    if (t.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 || t.shape.size() != 2 || t.shape[0] != L->gc || t.shape[1] < 1 ||
        t.shape[1] > 255)
      fail(where, "thresholds must be int32 [" + std::to_string(L->gc) + ", L-1] with L ≤ 256, got " +
                      type_name(t.type) + " " + shape_str(t.shape));
    const int n = static_cast<int>(t.shape[1]);
    for (int64_t g = 0; g < L->gc; ++g) {
      const int32_t* row = t.as<int32_t>() + g * n;
      for (int j = 1; j < n; ++j)
        if (row[j] < row[j - 1]) fail(where, "thresholds must be non-decreasing");
      auto table = std::make_unique<ThresholdTable>();
      build_threshold_table(row, n, table.get());
      const std::string refusal =
          threshold_index_refusal(table->count, table->packed_ok, table->packed_bits, table->octave_ok,
                                  table->runs.count, table->runs.lines);
      if (!refusal.empty()) fail(where, refusal);
      L->thresholds.push_back(std::move(table));
    }
  }
  if (levels_out && !L->fused()) fail(where, "a uint8 level output needs a thresholds input");
  if (!levels_out && L->fused()) fail(where, "thresholds make a uint8 level output, but the output is declared float32");
  return L;
}

void mantissa_span(const IsaKernels& isa, const std::string& where, const PreparedLayer& L, const LayerAttrs& attrs,
                   const InputView& x, int64_t offset, int64_t count, int16_t* out) {
  if (count <= 0) return;
  if (L.x_levels) {
    if (x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8) fail(where, std::string("input must be uint8 levels, got ") + type_name(x.type));
    const uint8_t* src = x.as<uint8_t>() + offset;
    check_levels(where, L, isa.lookup(src, out, static_cast<size_t>(count), L.x_table256.data()));
    return;
  }
  if (x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) fail(where, std::string("input must be float32, got ") + type_name(x.type));
  const float* src = x.as<float>() + offset;
  const float xmax = static_cast<float>(attrs.x_max);
  if (attrs.x_scale_normal()) {   // one exact multiply
    isa.quantize(src, out, static_cast<size_t>(count), std::ldexp(1.0f, static_cast<int>(attrs.x_shift)), xmax);
    return;
  }
  const int e = static_cast<int>(attrs.x_shift);
  for (int64_t i = 0; i < count; ++i) {
    float v = std::ldexp(src[i], e);
    v = std::isnan(v) ? 0.0f : std::min(std::max(v, -xmax), xmax);
    out[i] = static_cast<int16_t>(std::nearbyint(v));
  }
}

void pair_span(const IsaKernels& isa, const std::string& where, const PreparedLayer& L, const LayerAttrs& attrs,
               const InputView& x, int64_t offset0, int64_t offset1, int64_t count, int32_t* out) {
  if (count <= 0) return;
  if (L.x_levels) {
    if (x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8) fail(where, std::string("input must be uint8 levels, got ") + type_name(x.type));
    const uint8_t* src = x.as<uint8_t>();
    check_levels(where, L, isa.pair_levels(src + offset0, offset1 >= 0 ? src + offset1 : nullptr, out,
                                           static_cast<size_t>(count), L.x_table256.data()));
    return;
  }
  if (x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) fail(where, std::string("input must be float32, got ") + type_name(x.type));
  if (attrs.x_scale_normal()) {   // as in mantissa_span: one exact multiply
    const float* src = x.as<float>();
    isa.pair_floats(src + offset0, offset1 >= 0 ? src + offset1 : nullptr, out, static_cast<size_t>(count),
                    std::ldexp(1.0f, static_cast<int>(attrs.x_shift)), static_cast<float>(attrs.x_max));
    return;
  }
  std::vector<int16_t> m(static_cast<size_t>(2 * count), 0);   // the rare ldexp path, through mantissa_span
  mantissa_span(isa, where, L, attrs, x, offset0, count, m.data());
  if (offset1 >= 0) mantissa_span(isa, where, L, attrs, x, offset1, count, m.data() + count);
  for (int64_t i = 0; i < count; ++i) {
    const uint32_t lo = static_cast<uint16_t>(m[static_cast<size_t>(i)]);
    const uint32_t hi = static_cast<uint16_t>(m[static_cast<size_t>(count + i)]);
    out[i] = static_cast<int32_t>(lo | hi << 16);
  }
}

void quad_span(const IsaKernels& isa, const std::string& where, const PreparedLayer& L, const LayerAttrs& attrs,
               const InputView& x, const int64_t offset[4], int64_t count, int32_t* out) {
  if (count <= 0) return;
  if (!L.x_levels) {
    if (x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || isa.quad_floats == nullptr || attrs.x_max > 127 ||
        !attrs.x_scale_normal())
      fail(where, "the u8 path needs float32 input with x_max ≤ 127 and an instruction set with quad_floats");
    const float* src = x.as<float>();
    auto at = [&](int c) { return offset[c] >= 0 ? src + offset[c] : nullptr; };
    isa.quad_floats(at(0), at(1), at(2), at(3), out, static_cast<size_t>(count),
                    std::ldexp(1.0f, static_cast<int>(attrs.x_shift)), static_cast<float>(attrs.x_max));
    return;
  }
  if (x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 || isa.quad_levels == nullptr)
    fail(where, "the u8 path needs uint8 level input and an instruction set with quad_levels");
  const uint8_t* src = x.as<uint8_t>();
  auto at = [&](int c) { return offset[c] >= 0 ? src + offset[c] : nullptr; };
  check_levels(where, L, isa.quad_levels(at(0), at(1), at(2), at(3), out, static_cast<size_t>(count),
                                         L.x_table256.data()));
}

void input_mantissas(OrtKernelContext* ctx, const IsaKernels& isa, const std::string& where, const PreparedLayer& L,
                     const LayerAttrs& attrs, const InputView& x, int16_t* out, int64_t rows, int64_t cols,
                     int64_t out_stride) {
  if (rows == 0 || cols == 0) return;
  // chunks of whole rows, about 64k elements each
  const int64_t rows_per_task = std::max<int64_t>(1, (int64_t(1) << 16) / cols);
  const int64_t tasks = (rows + rows_per_task - 1) / rows_per_task;
  parallel_for(ctx, static_cast<size_t>(tasks), [&](size_t t) {
    const int64_t r0 = static_cast<int64_t>(t) * rows_per_task, r1 = std::min(rows, r0 + rows_per_task);
    if (out_stride == cols) {
      mantissa_span(isa, where, L, attrs, x, r0 * cols, (r1 - r0) * cols, out + r0 * cols);
      return;
    }
    for (int64_t r = r0; r < r1; ++r) mantissa_span(isa, where, L, attrs, x, r * cols, cols, out + r * out_stride);
  });
}

// op-contract §3 with a row scale r: levels of floor(acc · r / 2^22) + bias (isa.scale_rows); float32(acc · r ·
// 2^-22 + bias) · 2^-s.

static void edge_segment_scaled(const IsaKernels& isa, const PreparedLayer& L, int64_t o, const int32_t* acc,
                                int32_t bias, void* out, int64_t count) {
  const int64_t r = L.row_scale[static_cast<size_t>(o)];
  if (L.fused()) {
    int32_t scaled[256];
    for (int64_t i0 = 0; i0 < count; i0 += 256) {
      const int64_t n = std::min<int64_t>(256, count - i0);
      // |acc · r| < 2^52 and r ≤ 2^22: the floored quotient is at most |acc| < 2^30
      isa.scale_rows(acc + i0, scaled, static_cast<size_t>(n), static_cast<int32_t>(r));
      isa.edge_levels(scaled, static_cast<uint8_t*>(out) + i0, static_cast<size_t>(n), bias, L.thresholds[0].get());
    }
    return;
  }
  float* y = static_cast<float*>(out);
  if (L.scale_fast[0] && isa.edge_float_scaled != nullptr) {
    isa.edge_float_scaled(acc, y, static_cast<size_t>(count), bias, static_cast<int32_t>(r), L.scale[0]);
    return;
  }
  const int64_t s = L.shift[0];
  const int e = static_cast<int>(s > 100000 ? -100000 : (s < -100000 ? 100000 : -s));
  const double unit = std::ldexp(1.0, -kRowScaleBits);
  for (int64_t i = 0; i < count; ++i) {
    // acc · r is exact in double and scaling it by 2^-22 is exact: the sum with the bias rounds once, then float32
    const double v = static_cast<double>(int64_t(acc[i]) * r) * unit + static_cast<double>(bias);
    y[i] = std::ldexp(static_cast<float>(v), e);
  }
}

void edge_segment(const IsaKernels& isa, const PreparedLayer& L, int64_t o, const int32_t* acc, int32_t bias, void* out,
                  int64_t count) {
  if (count <= 0) return;
  if (L.row_scaled()) {
    edge_segment_scaled(isa, L, o, acc, bias, out, count);
    return;
  }
  const int64_t g = L.row_of(o);
  if (L.fused()) {
    isa.edge_levels(acc, static_cast<uint8_t*>(out), static_cast<size_t>(count), bias,
                    L.thresholds[static_cast<size_t>(g)].get());
    return;
  }
  float* y = static_cast<float*>(out);
  if (L.scale_fast[static_cast<size_t>(g)]) {
    isa.edge_float(acc, y, static_cast<size_t>(count), bias, L.scale[static_cast<size_t>(g)]);
    return;
  }
  const int64_t s = L.shift[static_cast<size_t>(g)];
  const int e = static_cast<int>(s > 100000 ? -100000 : (s < -100000 ? 100000 : -s));
  for (int64_t i = 0; i < count; ++i) y[i] = std::ldexp(static_cast<float>(acc[i] + bias), e);
}

}  // namespace wq
