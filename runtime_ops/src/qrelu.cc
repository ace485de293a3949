// QRelu: float32 → uint8 level = #{j : x ≥ T_j} (NaN → 0), mirrors runtime_ops/qrelu.py.
#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "integer_gemm.h"

namespace wq {
namespace {

constexpr int64_t kChunk = int64_t(1) << 16;

class QReluKernel : public Kernel {
 public:
  QReluKernel(const OrtKernelInfo* info, const Signature&) : where_(where_of("QRelu", info)), isa_(&select_isa()) {
    bool constant = false;
    InputView t = get_constant_input(info, 1, &constant, where_, "thresholds");
    if (constant) constant_ = prepare(t);
  }

  void Compute(OrtKernelContext* ctx) override {
    const InputView x = get_input(ctx, 0, where_, "X");
    if (!x.present || x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      fail(where_, std::string("input must be float32, got ") + (x.present ? type_name(x.type) : "nothing"));
    std::shared_ptr<const FloatThresholds> t = constant_ ? constant_ : prepare(get_input(ctx, 1, where_, "thresholds"));
    auto* y = static_cast<uint8_t*>(allocate_output(ctx, 0, x.shape));
    const float* src = x.as<float>();
    const int64_t tasks = (x.numel + kChunk - 1) / kChunk;
    parallel_for(ctx, static_cast<size_t>(tasks), [&](size_t i) {
      const int64_t b = static_cast<int64_t>(i) * kChunk, n = std::min(kChunk, x.numel - b);
      isa_->qrelu(src + b, y + b, static_cast<size_t>(n), t.get());
    });
  }

 private:
  std::shared_ptr<const FloatThresholds> prepare(const InputView& t) const {
    if (!t.present || t.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || t.shape.size() != 1 || t.numel < 1 ||
        t.numel > 255)
      fail(where_, "thresholds must be float32 [L-1] with L ≤ 256, got " +
                       (t.present ? std::string(type_name(t.type)) + " " + shape_str(t.shape) : std::string("nothing")));
    const float* v = t.as<float>();
    for (int64_t j = 0; j < t.numel; ++j) {
      if (std::isnan(v[j]) || (j > 0 && v[j] < v[j - 1]))
        fail(where_, "thresholds must be non-decreasing and not NaN");
    }
    auto out = std::make_shared<FloatThresholds>();
    build_float_thresholds(v, static_cast<int>(t.numel), out.get());
    const std::string refusal = threshold_index_refusal(out->count, out->packed_ok, out->packed_bits, out->octave_ok,
                                                         out->runs.count, out->runs.lines);
    if (!refusal.empty()) fail(where_, refusal);
    return out;
  }

  std::string where_;
  const IsaKernels* isa_;
  std::shared_ptr<const FloatThresholds> constant_;
};

}  // namespace

Kernel* create_qrelu(const OrtKernelInfo* info, const Signature& sig) { return new QReluKernel(info, sig); }

}  // namespace wq
