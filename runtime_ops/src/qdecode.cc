// QDecode: uint8 level → float32 value table[X]; a level ≥ L is an error (mirrors runtime_ops/qdecode.py).
#include <algorithm>
#include <vector>

#include "kernels.h"
#include "integer_gemm.h"

namespace wq {
namespace {

constexpr int64_t kChunk = int64_t(1) << 16;

struct Table {
  int64_t size = 0;
  alignas(64) float values[256] = {};
};

class QDecodeKernel : public Kernel {
 public:
  QDecodeKernel(const OrtKernelInfo* info, const Signature&) : where_(where_of("QDecode", info)), isa_(&select_isa()) {
    bool constant = false;
    InputView t = get_constant_input(info, 1, &constant, where_, "table");
    if (constant) constant_ = prepare(t);
  }

  void Compute(OrtKernelContext* ctx) override {
    const InputView x = get_input(ctx, 0, where_, "X");
    if (!x.present || x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8)
      fail(where_, std::string("input must be uint8 levels, got ") + (x.present ? type_name(x.type) : "nothing"));
    std::shared_ptr<const Table> t = constant_ ? constant_ : prepare(get_input(ctx, 1, where_, "table"));
    auto* y = static_cast<float*>(allocate_output(ctx, 0, x.shape));
    const uint8_t* src = x.as<uint8_t>();
    const int64_t tasks = (x.numel + kChunk - 1) / kChunk;
    parallel_for(ctx, static_cast<size_t>(tasks), [&](size_t i) {
      const int64_t b = static_cast<int64_t>(i) * kChunk, n = std::min(kChunk, x.numel - b);
      if (t->size < 256) {
        const uint8_t m = isa_->max_u8(src + b, static_cast<size_t>(n));
        if (m >= t->size)
          fail(where_, "level " + std::to_string(m) + " is out of range for a " + std::to_string(t->size) +
                           "-entry table");
      }
      isa_->qdecode(src + b, y + b, static_cast<size_t>(n), t->values);
    });
  }

 private:
  std::shared_ptr<const Table> prepare(const InputView& t) const {
    if (!t.present || t.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || t.shape.size() != 1 || t.numel < 1 ||
        t.numel > 256)
      fail(where_, "table must be float32 [L] with 1 ≤ L ≤ 256, got " +
                       (t.present ? std::string(type_name(t.type)) + " " + shape_str(t.shape) : std::string("nothing")));
    auto out = std::make_shared<Table>();
    out->size = t.numel;
    std::copy(t.as<float>(), t.as<float>() + t.numel, out->values);
    return out;
  }

  std::string where_;
  const IsaKernels* isa_;
  std::shared_ptr<const Table> constant_;
};

}  // namespace

Kernel* create_qdecode(const OrtKernelInfo* info, const Signature& sig) { return new QDecodeKernel(info, sig); }

}  // namespace wq
