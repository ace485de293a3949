// LevelMaxPool: ONNX MaxPool (2-D, NCHW) on uint8 level tensors. A runtime-internal op: wqcompile.runtime swaps it
// in for a standard MaxPool whose input is a level tensor (onnxruntime's own uint8 MaxPool is a generic loop, ~20x
// slower than its float path). Max commutes with the monotone quantizer, so the result is exactly ONNX MaxPool's.
// Semantics: kernel_shape, strides, pads, dilations, ceil_mode, auto_pad as in ONNX MaxPool-12; padded positions
// never win (a window entirely in the padding gives 0, as onnxruntime does for uint8). The planes run through the
// instruction set's max_pool (PoolPlane).
#include <algorithm>
#include <cstring>
#include <vector>

#include "integer_gemm.h"
#include "kernels.h"

namespace wq {
namespace {

class LevelMaxPoolKernel : public Kernel {
 public:
  LevelMaxPoolKernel(const OrtKernelInfo* info, const Signature&) : where_(where_of("LevelMaxPool", info)) {
    if (!get_ints_attr(info, "kernel_shape", &kernel_) || kernel_.size() != 2 || kernel_[0] < 1 || kernel_[1] < 1)
      fail(where_, "kernel_shape must be 2 positive sizes");
    isa_ = &select_isa();
    strides_ = {1, 1}, dilations_ = {1, 1}, pads_ = {0, 0, 0, 0};
    get_ints_attr(info, "strides", &strides_);
    get_ints_attr(info, "dilations", &dilations_);
    get_ints_attr(info, "pads", &pads_);
    get_int_attr(info, "ceil_mode", &ceil_mode_);
    get_string_attr(info, "auto_pad", &auto_pad_);
    if (auto_pad_.empty()) auto_pad_ = "NOTSET";
    const int64_t big = int64_t(1) << 24;
    if (strides_.size() != 2 || dilations_.size() != 2 || pads_.size() != 4)
      fail(where_, "strides, dilations and pads must have 2, 2 and 4 entries");
    for (int64_t v : strides_) if (v < 1 || v > big) fail(where_, "bad strides " + shape_str(strides_));
    for (int64_t v : dilations_) if (v < 1 || v > big) fail(where_, "bad dilations " + shape_str(dilations_));
    for (int64_t v : pads_) if (v < 0 || v > big) fail(where_, "bad pads " + shape_str(pads_));
    if (kernel_[0] > big || kernel_[1] > big) fail(where_, "kernel_shape too large");
    if (auto_pad_ != "NOTSET" && auto_pad_ != "VALID" && auto_pad_ != "SAME_UPPER" && auto_pad_ != "SAME_LOWER")
      fail(where_, "unknown auto_pad '" + auto_pad_ + "'");
  }

  void Compute(OrtKernelContext* ctx) override {
    const InputView x = get_input(ctx, 0, where_, "X");
    if (!x.present || x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 || x.shape.size() != 4)
      fail(where_, "input must be a 4-D uint8 tensor, got " +
                       (x.present ? std::string(type_name(x.type)) + " " + shape_str(x.shape) : std::string("nothing")));
    const int64_t n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
    int64_t pads[4] = {pads_[0], pads_[1], pads_[2], pads_[3]};
    int64_t out[2];
    const int64_t in[2] = {h, w};
    for (int d = 0; d < 2; ++d) {
      const int64_t ext = (kernel_[d] - 1) * dilations_[d] + 1;
      if (auto_pad_ == "SAME_UPPER" || auto_pad_ == "SAME_LOWER") {
        out[d] = (in[d] + strides_[d] - 1) / strides_[d];
        const int64_t total = std::max<int64_t>(0, (out[d] - 1) * strides_[d] + ext - in[d]);
        pads[d] = auto_pad_ == "SAME_UPPER" ? total / 2 : total - total / 2;
        pads[d + 2] = total - pads[d];
        continue;
      }
      if (auto_pad_ == "VALID") pads[d] = pads[d + 2] = 0;
      const int64_t span = in[d] + pads[d] + pads[d + 2] - ext;
      if (span < 0) fail(where_, "kernel does not fit the padded input " + shape_str(x.shape));
      out[d] = ceil_mode_ ? (span + strides_[d] - 1) / strides_[d] + 1 : span / strides_[d] + 1;
      if (ceil_mode_ && (out[d] - 1) * strides_[d] >= in[d] + pads[d]) --out[d];   // last window starts inside
    }
    const std::vector<int64_t> shape{n, c, out[0], out[1]};
    checked_numel(shape, where_, "output");
    auto* y = static_cast<uint8_t*>(allocate_output(ctx, 0, shape));
    const uint8_t* src = x.as<uint8_t>();
    const int64_t planes = n * c, oh = out[0], ow = out[1];
    if (planes * oh * ow == 0) return;
    const int64_t per_task = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, h * w));
    parallel_for(ctx, static_cast<size_t>((planes + per_task - 1) / per_task), [&](size_t t) {
      PoolPlane p{};
      p.h = h, p.w = w, p.oh = oh, p.ow = ow;
      p.kh = kernel_[0], p.kw = kernel_[1], p.sh = strides_[0], p.sw = strides_[1];
      p.dh = dilations_[0], p.dw = dilations_[1], p.pt = pads[0], p.pl = pads[1];
      p.rowmax = thread_scratch<uint8_t>(0, static_cast<size_t>(w));
      const int64_t p0 = static_cast<int64_t>(t) * per_task, p1 = std::min(planes, p0 + per_task);
      for (int64_t plane = p0; plane < p1; ++plane) {
        p.x = src + plane * h * w;
        p.y = y + plane * oh * ow;
        isa_->max_pool(p);
      }
    });
  }

 private:
  std::string where_;
  const IsaKernels* isa_ = nullptr;
  std::vector<int64_t> kernel_, strides_, dilations_, pads_;
  int64_t ceil_mode_ = 0;
  std::string auto_pad_ = "NOTSET";
};

}  // namespace

Kernel* create_level_maxpool(const OrtKernelInfo* info, const Signature& sig) {
  return new LevelMaxPoolKernel(info, sig);
}

}  // namespace wq
