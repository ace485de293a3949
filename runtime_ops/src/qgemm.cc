// QGemm: Y[..., N] = X[..., K] · codebook[W]ᵀ + bias with int32 accumulation (mirrors runtime_ops/qgemm.py).
//
// The decoded weights are packed once per session into column panels [N/nr][K/2][nr][2] (the B operand of the
// tile kernel), the activations are the row operand: one input row is one tile row, so batch 1 wastes nothing.
// Where the instruction set has IsaKernels::gemv_nibbles and every 16 columns take at most 16 distinct weights
// (b ≤ 4 with a codebook shared by those columns), they are also packed as nibble panels, which batches of up to
// kNibbleRows rows use: at that batch the int16 panels are read once per row and their bytes decide the time.
// WQCOMPILE_NO_NIBBLES=1 turns them off (A/B, tests); WQCOMPILE_REQUIRE_NIBBLES=1 makes a layer that gets none an
// error (tests: a passing run then proves the nibble kernel computed a batch of ≤ kNibbleRows rows).
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "integer_core.h"
#include "kernels.h"

namespace wq {
namespace {

// IsaKernels::gemv_nibbles' operands: per panel of 16 columns a table of ≤ 16 weights and the indices
struct NibblePanels {
  int64_t panels = 0, blocks = 0;      // ceil(N / 16); ceil(kp / 2 / 4) blocks of four k-pairs
  AlignedBuffer<uint8_t> nibbles;      // [panels][blocks][32 words] (panels = 0: some panel has > 16 distinct weights)
  AlignedBuffer<int16_t> tables;       // [panels][32]
};

struct GemmWeights {
  std::shared_ptr<PreparedLayer> layer;
  int64_t kp = 0, panels = 0;
  AlignedBuffer<int16_t> b;   // [panels][kp/2][nr][2]
  NibblePanels nib;
};

// w: [n][k] int16 weights, kp = k rounded up to even. Returns why not (and leaves `out` empty) when a panel of 16
// columns has more than 16 distinct weights.
std::string pack_nibbles(const int16_t* w, int64_t n, int64_t k, int64_t kp, NibblePanels* out) {
  const int64_t panels = (n + 15) / 16, blocks = (kp / 2 + 3) / 4;
  AlignedBuffer<uint8_t> nibbles;
  AlignedBuffer<int16_t> tables;
  nibbles.resize(static_cast<size_t>(panels * blocks * 64));
  tables.resize(static_cast<size_t>(panels * 32));
  // slot[v + 32768]: v's index in the current panel's table (kNone: not in it); reset after each panel. A lookup
  // per weight instead of a search keeps this off the session's start (MobileNetV2's classifier: 1.3 M weights).
  constexpr uint8_t kNone = 0xFF;
  std::vector<uint8_t> slot(65536, kNone);
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t o_end = std::min(n, 16 * p + 16);
    int16_t* table = tables.data() + 32 * p;
    int count = 0;
    for (int64_t o = 16 * p; o < o_end; ++o) {
      for (int64_t i = 0; i < k; ++i) {
        uint8_t& s = slot[static_cast<size_t>(w[o * k + i] + 32768)];
        if (s != kNone) continue;
        if (count == 16)   // not a 4-bit panel: the layer keeps the int16 panels only
          return "columns " + std::to_string(16 * p) + ".." + std::to_string(o_end - 1) +
                 " take more than 16 distinct weights";
        table[count] = w[o * k + i];
        s = static_cast<uint8_t>(count++);
      }
    }
    for (int e = 16; e < 32; ++e) table[e] = table[e - 16];   // unused entries stay 0 (resize zero-fills)
    uint8_t* dst = nibbles.data() + p * blocks * 64;
    for (int64_t o = 16 * p; o < o_end; ++o) {
      for (int64_t i = 0; i < k; ++i) {
        const int64_t pair = i / 2, word = 2 * (o - 16 * p) + i % 2;
        const unsigned idx = slot[static_cast<size_t>(w[o * k + i] + 32768)];
        const int shift = 4 * static_cast<int>(pair % 4);   // nibble q of the little-endian word
        dst[(pair / 4) * 64 + 2 * word + shift / 8] |= static_cast<uint8_t>(idx << (shift % 8));
      }
    }
    for (int e = 0; e < count; ++e) slot[static_cast<size_t>(table[e] + 32768)] = kNone;
  }
  // the pad column of an odd K and the columns past N keep index 0: x is 0 there, or the result is dropped
  out->panels = panels;
  out->blocks = blocks;
  out->nibbles = std::move(nibbles);
  out->tables = std::move(tables);
  return "";
}

class QGemmKernel : public Kernel {
 public:
  QGemmKernel(const OrtKernelInfo* info, const Signature& sig);
  void Compute(OrtKernelContext* ctx) override;

 private:
  std::shared_ptr<const GemmWeights> pack(const LayerOperands& ops) const;

  std::string where_;
  LayerAttrs attrs_;
  int64_t n_ = 0, k_ = 0;
  bool x_levels_ = false, levels_out_ = false;
  const IsaKernels* isa_ = nullptr;
  bool nibbles_allowed_ = true;    // WQCOMPILE_NO_NIBBLES unset
  bool nibbles_required_ = false;  // WQCOMPILE_REQUIRE_NIBBLES set
  std::shared_ptr<const GemmWeights> constant_;
};

QGemmKernel::QGemmKernel(const OrtKernelInfo* info, const Signature& sig) {
  where_ = where_of("QGemm", info);
  isa_ = &select_isa();
  nibbles_allowed_ = !env_flag("WQCOMPILE_NO_NIBBLES");
  nibbles_required_ = env_flag("WQCOMPILE_REQUIRE_NIBBLES");
  x_levels_ = sig.inputs[kX] == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  levels_out_ = sig.outputs[0] == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  attrs_ = read_layer_attrs(info, where_);
  if (attrs_.w_shape.size() != 2 || attrs_.w_shape[0] < 1 || attrs_.w_shape[1] < 1)
    fail(where_, "w_shape must be [N, K], got " + shape_str(attrs_.w_shape));
  n_ = attrs_.w_shape[0], k_ = attrs_.w_shape[1];
  checked_numel(attrs_.w_shape, where_, "w_shape");
  LayerOperands ops;
  if (constant_operands(info, where_, &ops)) constant_ = pack(ops);
}

std::shared_ptr<const GemmWeights> QGemmKernel::pack(const LayerOperands& ops) const {
  auto gw = std::make_shared<GemmWeights>();
  gw->layer = prepare_layer(where_, attrs_, n_, k_, x_levels_, levels_out_, ops);
  const int64_t nr = isa_->nr;
  gw->kp = (k_ + 1) / 2 * 2;
  gw->panels = (n_ + nr - 1) / nr;
  const int64_t kpairs = gw->kp / 2;
  gw->b.resize(static_cast<size_t>(gw->panels * kpairs * nr * 2));
  const int16_t* w = gw->layer->weights.data();
  for (int64_t o = 0; o < n_; ++o) {
    int16_t* dst = gw->b.data() + (o / nr) * kpairs * nr * 2 + (o % nr) * 2;
    for (int64_t k = 0; k < k_; ++k) dst[(k / 2) * nr * 2 + (k % 2)] = w[o * k_ + k];
  }
  std::string refusal = isa_->gemv_nibbles == nullptr ? std::string("the ") + isa_->name + " instruction set has none"
                        : nibbles_allowed_                ? pack_nibbles(w, n_, k_, gw->kp, &gw->nib)
                                                          : "WQCOMPILE_NO_NIBBLES is set";
  if (nibbles_required_ && !refusal.empty())
    fail(where_, "WQCOMPILE_REQUIRE_NIBBLES is set, but this layer has no nibble panels: " + refusal);
  return gw;
}

void QGemmKernel::Compute(OrtKernelContext* ctx) {
  const InputView x = get_input(ctx, kX, where_, "X");
  if (!x.present) fail(where_, "missing input X");
  const ONNXTensorElementDataType want = x_levels_ ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  if (x.type != want) fail(where_, std::string("input must be ") + type_name(want) + ", got " + type_name(x.type));
  if (x.shape.empty() || x.shape.back() != k_)
    fail(where_, "input shape " + shape_str(x.shape) + " does not end in K = " + std::to_string(k_));
  std::shared_ptr<const GemmWeights> gw = constant_ ? constant_ : pack(run_operands(ctx, where_));
  const PreparedLayer& L = *gw->layer;
  const IsaKernels& isa = *isa_;
  std::vector<int64_t> out_shape(x.shape.begin(), x.shape.end() - 1);
  out_shape.push_back(n_);
  const int64_t out_numel = checked_numel(out_shape, where_, "output");
  void* y = allocate_output(ctx, 0, out_shape);
  const int64_t rows = x.numel / k_;
  if (out_numel == 0 || rows == 0) return;
  checked_numel({rows, gw->kp}, where_, "input mantissas");
  // the calling thread's scratch, shared with the pool's workers for this call only
  int16_t* const x16 = thread_scratch<int16_t>(0, static_cast<size_t>(rows * gw->kp));
  if (gw->kp != k_)   // the pad column of an odd K must be 0
    for (int64_t r = 0; r < rows; ++r) x16[r * gw->kp + k_] = 0;
  input_mantissas(ctx, isa, where_, L, attrs_, x, x16, rows, k_, gw->kp);

  const size_t out_bytes = L.fused() ? 1 : 4;
  // the edge of tile rows r0.. (nrows) × columns n0.. (ncols): acc rows at c + r · ldc
  auto finish = [&](int32_t* c, int64_t ldc, int64_t r0, int nrows, int64_t n0, int ncols) {
    for (int r = 0; r < nrows; ++r) {
      int32_t* acc = c + r * ldc;
      char* dst = static_cast<char*>(y) + ((r0 + r) * n_ + n0) * out_bytes;
      if (L.row_scaled()) {   // the bias is added after the row scale (op-contract §3)
        for (int j = 0; j < ncols; ++j)
          edge_segment(isa, L, n0 + j, acc + j, L.bias[static_cast<size_t>(n0 + j)], dst + j * out_bytes, 1);
        continue;
      }
      for (int j = 0; j < ncols; ++j) acc[j] += L.bias[static_cast<size_t>(n0 + j)];
      if (L.gc == 1) {
        edge_segment(isa, L, 0, acc, 0, dst, ncols);
      } else {
        for (int j = 0; j < ncols; ++j) edge_segment(isa, L, n0 + j, acc + j, 0, dst + j * out_bytes, 1);
      }
    }
  };

  const NibblePanels& nib = gw->nib;
  if (nib.panels > 0 && rows <= kNibbleRows) {
    parallel_for(ctx, static_cast<size_t>(nib.panels), [&](size_t p) {
      alignas(64) int32_t c[kNibbleRows * 16];
      isa.gemv_nibbles(x16, static_cast<size_t>(gw->kp), nib.nibbles.data() + p * nib.blocks * 64,
                       nib.tables.data() + 32 * p, static_cast<size_t>(gw->kp / 2), c, 16, static_cast<int>(rows));
      const int64_t n0 = 16 * static_cast<int64_t>(p);
      finish(c, 16, 0, static_cast<int>(rows), n0, static_cast<int>(std::min<int64_t>(16, n_ - n0)));
    });
    return;
  }

  const int64_t nr = isa.nr, mr = isa.mr, kpairs = gw->kp / 2;
  const int64_t row_tiles = (rows + mr - 1) / mr;
  parallel_for(ctx, static_cast<size_t>(row_tiles * gw->panels), [&](size_t t) {
    const int64_t panel = static_cast<int64_t>(t) % gw->panels, tile = static_cast<int64_t>(t) / gw->panels;
    const int64_t r0 = tile * mr, n0 = panel * nr;
    const int nrows = static_cast<int>(std::min(mr, rows - r0));
    const int ncols = static_cast<int>(std::min(nr, n_ - n0));
    alignas(64) int32_t c[8 * 64];   // mr × nr ≤ 8 × 48 on every instruction set
    isa.gemm_tile(x16 + r0 * gw->kp, static_cast<size_t>(gw->kp), gw->b.data() + panel * kpairs * nr * 2,
                  static_cast<size_t>(2 * nr), static_cast<size_t>(kpairs), c, static_cast<size_t>(nr), nrows,
                  ncols);
    finish(c, nr, r0, nrows, n0, ncols);
  });
}

}  // namespace

Kernel* create_qgemm(const OrtKernelInfo* info, const Signature& sig) { return new QGemmKernel(info, sig); }

}  // namespace wq
