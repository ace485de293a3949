// AddQRelu / AddDecodeQRelu: runtime-internal (never stored in a model; wqcompile.runtime fuses them at session
// creation). QRelu(Add(A, B)) and QRelu(Add(A, QDecode(B, table))) in one pass: the float sum of ONNX Add (one
// IEEE float32 addition per element, numpy broadcasting) is formed in small cache-resident blocks and quantized
// by the instruction set's qrelu, so the float sum (and the decoded B) never travel through memory. Bit-exact
// with the three separate ops: the same float32 additions (a + b = b + a in IEEE arithmetic), the same table
// lookup, the same quantizer.
#include <algorithm>
#include <cmath>
#include <vector>

#include "fused.h"
#include "kernels.h"

namespace {
constexpr int64_t kChunk = int64_t(1) << 16;   // per task
constexpr int64_t kBlock = 1024;               // per cache-resident block of sums
}  // namespace

namespace wq {

std::shared_ptr<const FloatThresholds> prepare_qrelu_thresholds(const InputView& t, const std::string& where) {
  if (!t.present || t.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || t.shape.size() != 1 || t.numel < 1 || t.numel > 255)
    fail(where, "thresholds must be float32 [L-1] with L ≤ 256, got " +
                    (t.present ? std::string(type_name(t.type)) + " " + shape_str(t.shape) : std::string("nothing")));
  const float* v = t.as<float>();
  for (int64_t j = 0; j < t.numel; ++j)
    if (std::isnan(v[j]) || (j > 0 && v[j] < v[j - 1])) fail(where, "thresholds must be non-decreasing and not NaN");
  auto out = std::make_shared<FloatThresholds>();
  build_float_thresholds(v, static_cast<int>(t.numel), out.get());
  const std::string refusal = threshold_index_refusal(out->count, out->packed_ok, out->packed_bits, out->octave_ok,
                                                         out->runs.count, out->runs.lines);
  if (!refusal.empty()) fail(where, refusal);
  return out;
}

std::shared_ptr<const DecodeTable> prepare_decode_table(const InputView& t, const std::string& where) {
  if (!t.present || t.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || t.shape.size() != 1 || t.numel < 1 || t.numel > 256)
    fail(where, "table must be float32 [L] with 1 ≤ L ≤ 256, got " +
                    (t.present ? std::string(type_name(t.type)) + " " + shape_str(t.shape) : std::string("nothing")));
  auto out = std::make_shared<DecodeTable>();
  out->size = t.numel;
  std::copy(t.as<float>(), t.as<float>() + t.numel, out->values);
  fill_float_table_planes(out->values, &out->planes[0][0]);
  return out;
}

void check_decode_levels(const IsaKernels& isa, const std::string& where, const uint8_t* lv, int64_t n,
                         const DecodeTable& table) {
  if (table.size >= 256 || n <= 0) return;
  const uint8_t m = isa.max_u8(lv, static_cast<size_t>(n));
  if (m >= table.size)
    fail(where, "level " + std::to_string(m) + " is out of range for a " + std::to_string(table.size) + "-entry table");
}

void add_qrelu_tensor(OrtKernelContext* ctx, const IsaKernels& isa, const std::string& where, const float* pa,
                      const std::vector<int64_t>& a_shape, const InputView& b, const DecodeTable* table,
                      const FloatThresholds& t) {
  const bool levels = table != nullptr;
  // numpy broadcasting of A and B
  const size_t rank = std::max(a_shape.size(), b.shape.size());
  std::vector<int64_t> shape(rank), sa(rank, 0), sb(rank, 0);
  int64_t stride_a = 1, stride_b = 1;
  for (size_t k = rank; k-- > 0;) {
    const int64_t da = k + a_shape.size() >= rank ? a_shape[k + a_shape.size() - rank] : 1;
    const int64_t db = k + b.shape.size() >= rank ? b.shape[k + b.shape.size() - rank] : 1;
    if (da != db && da != 1 && db != 1)
      fail(where, "shapes " + shape_str(a_shape) + " and " + shape_str(b.shape) + " do not broadcast");
    shape[k] = da == 1 ? db : da;
    sa[k] = da == 1 ? 0 : stride_a;
    sb[k] = db == 1 ? 0 : stride_b;
    stride_a *= da;
    stride_b *= db;
  }
  const int64_t numel = checked_numel(shape, where, "output");
  auto* y = static_cast<uint8_t*>(allocate_output(ctx, 0, shape));
  if (numel == 0) return;
  const bool same = a_shape == b.shape;   // the residual joins: one flat pass
  const int64_t tasks = (numel + kChunk - 1) / kChunk;
  parallel_for(ctx, static_cast<size_t>(tasks), [&](size_t task) {
    alignas(64) float va[kBlock];
    alignas(64) float vb[kBlock];
    alignas(64) uint8_t lv[kBlock];
    std::vector<int64_t> idx(rank);
    const int64_t c0 = static_cast<int64_t>(task) * kChunk, c1 = std::min(numel, c0 + kChunk);
    for (int64_t i0 = c0; i0 < c1; i0 += kBlock) {
      const int64_t n = std::min(kBlock, c1 - i0);
      const float* xa = pa + i0;
      const float* xb = nullptr;
      const uint8_t* xl = nullptr;
      if (same) {
        if (levels) xl = b.as<uint8_t>() + i0;
        else xb = b.as<float>() + i0;
      } else {   // broadcasting: gather the block's operands through the strides
        int64_t rem = i0;
        for (size_t k = rank; k-- > 0;) {
          idx[k] = rem % shape[k];
          rem /= shape[k];
        }
        for (int64_t i = 0; i < n; ++i) {
          int64_t oa = 0, ob = 0;
          for (size_t k = 0; k < rank; ++k) oa += idx[k] * sa[k], ob += idx[k] * sb[k];
          va[i] = pa[oa];
          if (levels) lv[i] = b.as<uint8_t>()[ob];
          else vb[i] = b.as<float>()[ob];
          for (size_t k = rank; k-- > 0;) {
            if (++idx[k] < shape[k]) break;
            idx[k] = 0;
          }
        }
        xa = va;
        if (levels) xl = lv;
        else xb = vb;
      }
      if (xl != nullptr) check_decode_levels(isa, where, xl, n, *table);
      isa.add_qrelu(xa, xb, xl, xl != nullptr ? table->values : nullptr, xl != nullptr ? static_cast<int>(table->size) : 0,
                    y + i0, static_cast<size_t>(n), &t);
    }
  });
}

namespace {

class AddQReluKernel : public Kernel {
 public:
  AddQReluKernel(const OrtKernelInfo* info, bool levels)
      : where_(where_of(levels ? "AddDecodeQRelu" : "AddQRelu", info)), isa_(&select_isa()), levels_(levels) {
    bool constant = false;
    InputView t = get_constant_input(info, 2, &constant, where_, "thresholds");
    if (constant) thresholds_ = prepare_qrelu_thresholds(t, where_);
    if (levels_) {
      InputView d = get_constant_input(info, 3, &constant, where_, "table");
      if (constant) table_ = prepare_decode_table(d, where_);
    }
  }

  void Compute(OrtKernelContext* ctx) override {
    const InputView a = get_input(ctx, 0, where_, "A");
    const InputView b = get_input(ctx, 1, where_, "B");
    if (!a.present || a.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      fail(where_, std::string("A must be float32, got ") + (a.present ? type_name(a.type) : "nothing"));
    const auto want_b = levels_ ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    if (!b.present || b.type != want_b)
      fail(where_, std::string("B must be ") + type_name(want_b) + ", got " + (b.present ? type_name(b.type) : "nothing"));
    std::shared_ptr<const FloatThresholds> t =
        thresholds_ ? thresholds_ : prepare_qrelu_thresholds(get_input(ctx, 2, where_, "thresholds"), where_);
    std::shared_ptr<const DecodeTable> table;
    if (levels_) table = table_ ? table_ : prepare_decode_table(get_input(ctx, 3, where_, "table"), where_);
    add_qrelu_tensor(ctx, *isa_, where_, a.as<float>(), a.shape, b, table.get(), *t);
  }

 private:
  std::string where_;
  const IsaKernels* isa_;
  bool levels_;
  std::shared_ptr<const FloatThresholds> thresholds_;
  std::shared_ptr<const DecodeTable> table_;
};

}  // namespace

Kernel* create_add_qrelu(const OrtKernelInfo* info, const Signature&) { return new AddQReluKernel(info, false); }
Kernel* create_add_decode_qrelu(const OrtKernelInfo* info, const Signature&) { return new AddQReluKernel(info, true); }

}  // namespace wq
