// QConv: 2-D convolution with packed codebook weights and int32 accumulation (mirrors runtime_ops/qconv.py).
//
// General path, an implicit-im2col GEMM per group: the input mantissas are laid out once as a zero-padded "pair
// image" (int32 = the int16 mantissas of two adjacent input channels, the operand pairs of vpdpwssd / vpmaddwd);
// column panels of the instruction set's width are copied out of it as runs of pairs (1x1 stride-1 layers read it
// in place) and multiplied with the decoded weight rows, whose fan-in is reordered to (channel pair, ky, kx) and
// decoded and packed once per session when the weights are initializers. Columns run over (batch, output pixel)
// together, so small late layers still fill whole panels at batch 32. With AVX-512 the output edge (bias, power of
// two scale or threshold search) is applied to the accumulators in registers. A one-channel layer (int16) pairs
// taps instead of channels (ConvWeights::tap_pairs: int32 = the channel at columns x and x + dw).
// A large batch runs in chunks of images whose padded image is about 1 MiB (run_gemm), so the panels read it from
// cache; WQCOMPILE_IMAGE_CHUNK_BYTES=n moves that size, read when the kernel is created (the tests use 1: one image
// per chunk).
// u8 path (AVX-512, decided when the weights are packed; u8_refusal): when the level table is within 0..255 and
// every weight mantissa within -128..127, the image is a "quad image" instead (int32 = the u8 mantissas of four
// adjacent input channels), the weights are s8 quads with the fan-in reordered to (channel quad, ky, kx), and the
// tile is the same 8 × 48 register tile with vpdpbusd (64 u8 · s8 MACs per instruction instead of vpdpwssd's 32).
// The products and sums are the same integers (exact; see IsaKernels::gemm_tile_u8), so the output is identical.
// A float input takes it too when its mantissas are s8 (x_max ≤ 127, the compiler's narrow float input): the quad
// image then holds mantissa + 128 (a u8; padding is 128 as well, the image of 0), so every accumulator comes out
// 128 · Σ_k C[o, k] too large, a constant per output channel that pack() folds into the bias (ConvWeights::bias).
// vpdpbusd never saturates and acc + bias is the true value, so the integers are again exactly the int16 path's.
// (A row-scaled layer scales acc before adding the bias, so it keeps the int16 path.)
// WQCOMPILE_NO_U8=1 turns it off; WQCOMPILE_REQUIRE_U8=1 makes a GEMM-path layer that does not take it an error
// (naming why), which the tests use to prove the path was taken. Both are read when the kernel is created.
// Depthwise path (group == C == M): with AVX-512 VBMI, level input and a fused output with one thresholds row, 16
// channels per vector (IsaKernels::depthwise_lanes, one task per image and block of 16 channels); otherwise a
// direct per-plane kernel over a zero-padded plane.
//
// QConvMaxPool (runtime-internal, never stored: wqcompile.runtime fuses a QConv with levels out and the MaxPool
// that reads it): the same convolution with the output edge replaced by acc + bias as int32 ("raw"), a max pool
// of those accumulators (isa.max_pool_i32), then the quantizer on the pooled values only. The quantizer
// level = #{j : T_j ≤ acc} is non-decreasing in acc, so max-then-quantize equals quantize-then-max bit for bit,
// with a quarter (2x2 pools) of the threshold searches. Images run in chunks whose accumulators stay cache-sized.
// Under 8 images, a pool whose windows do not overlap runs one task per band of pooled rows, conv rows and pool in
// the same thread (ColumnBands, compute_pooled).
//
// QConvAddQRelu / QConvAddDecodeQRelu (runtime-internal, never stored: wqcompile.runtime fuses a float-output QConv
// whose only reader is an AddQRelu / AddDecodeQRelu, the residual joins): inputs 0..6 are the QConv's, then B
// (float32, or uint8 levels decoded through `table`), the QRelu thresholds and the table. Each GEMM tile's float
// edge (A = float32(acc + bias) · 2^-s, the very values the QConv would write: the same tile edge or edge_segment,
// row scales included) lands in a tile-sized buffer and is finished from L1 by the instruction set's add_qrelu, per
// image run of the tile's columns: the same float32 additions as ONNX Add (same shapes: element i of A meets element
// i of B) and QRelu's quantizer (NaN → 0), so only the levels are written. A B that would broadcast, or a depthwise
// layer, runs the convolution into a float buffer and then add_qrelu_tensor (the AddQRelu kernel's pass); so does
// a B of at most 2 MiB (batch 1: the separate passes stay in cache and were measured 3-7% faster on ResNet-50;
// WQCOMPILE_JOIN_MIN_BYTES=n moves that bound, read when the kernel is created: the tests use 0).

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <utility>

#include "custom_op.h"
#include "fused.h"
#include "integer_core.h"
#include "kernels.h"

namespace wq {
namespace {

struct ConvWeights {
  std::shared_ptr<PreparedLayer> layer;
  bool u8 = false;                 // the u8 × s8 path (quad image, gemm_tile_u8); else int16 pairs
  int64_t lanes = 2;               // input channels per int32 of the image and of a weight group: 2 or 4 (u8)
  int64_t kg = 0;                  // int32 groups of k per weight row: ceil(cg / lanes) · kh · kw (tap pairs below)
  // One input channel on the int16 path (a grayscale first conv): pairs of *taps* instead of channels, so no half of
  // every vpdpwssd multiplies a zero channel. The image's int32 at column x holds the channel's columns x and
  // x + dw, weight group (ky, p) the taps kx = 2p and 2p + 1 (0 past kw): kg = kh · ceil(kw / 2) instead of kh · kw.
  bool tap_pairs = false;
  bool pool_tiles = false;         // QConvMaxPool with the pool tiles (run_pool_tiles; decided by pack())
  AlignedBuffer<int16_t> a;        // int16 path: [M][2·kg] weight mantissas, zero for channels past cg
  AlignedBuffer<int8_t> a8;        // u8 path: [M][4·kg] weight mantissas (s8), zero for channels past cg
  std::vector<int32_t> bias;       // the bias the GEMM paths add: the layer's, minus 128 · Σ_k C[o, k] for a u8 float input
  int pad_byte = 0;                // every byte of the image's padding: 0, or 128 for a u8 float input (its image of 0)
  std::vector<int32_t> filters;    // depthwise: [M][kh·kw]
  // the tile edge's per-row operands, indexed by output channel (TileEdge points into them, 8 rows at a time):
  // the threshold table (fused layers) and float scale of each row's codebook row
  std::vector<const ThresholdTable*> row_tables;
  std::vector<float> row_scales;
};

struct Geometry {
  int64_t n, c, h, w, oh, ow;
  int64_t pt, pl, pb, pr;
};

// The MaxPool fused by QConvMaxPool (attributes pool_kernel_shape, pool_strides, pool_pads; dilation 1,
// ceil_mode 0, explicit pads smaller than the kernel, so no window is ever empty).
struct PoolAttrs {
  bool on = false;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1;
  int64_t pads[4] = {0, 0, 0, 0};
};

// The fused residual join of QConvAddQRelu / QConvAddDecodeQRelu: its inputs after the QConv's.
enum ResidualInput : size_t { kResidualB = 7, kResidualThresholds = 8, kResidualTable = 9 };
enum class Residual { kNone, kFloat, kLevels };

// One run's residual operands (B has the output's shape, levels already checked against the table)
struct ResidualJoin {
  const float* b = nullptr;         // float B, or
  const uint8_t* lv = nullptr;      // levels decoded through table
  const DecodeTable* table = nullptr;
  const FloatThresholds* t = nullptr;
};

// Bytes per output element: levels (a fused quantizer, or a residual join's QRelu) 1; float outputs and the raw
// int32 accumulators QConvMaxPool pools 4
size_t output_bytes(const PreparedLayer& L, bool raw, bool residual) { return residual || (L.fused() && !raw) ? 1 : 4; }

// Column bands of a GEMM-path convolution (QConvMaxPool at a small batch): one task per band computes every output
// channel of the band's columns [j0, j1) (image-major output pixels), then calls done(band) in the same thread, so
// the pool reads accumulators its own core just wrote.
struct ColumnBands {
  std::vector<std::pair<int64_t, int64_t>> cols;
  std::vector<std::pair<int64_t, int64_t>> rows;   // output channels [o0, o1) of each band (empty: all)
  std::function<void(size_t band)> done;
};

class QConvKernel : public Kernel {
 public:
  QConvKernel(const OrtKernelInfo* info, const Signature& sig, bool pool, Residual residual = Residual::kNone);
  void Compute(OrtKernelContext* ctx) override;

 private:
  // the weights in the layout of the path they take (pack_layer), and for QConvMaxPool whether it takes the pool
  // tiles (an error when WQCOMPILE_REQUIRE_POOL_TILES is set and it cannot)
  std::shared_ptr<const ConvWeights> pack(const LayerOperands& ops) const;
  std::shared_ptr<ConvWeights> pack_layer(const LayerOperands& ops) const;
  std::string u8_refusal(const PreparedLayer& L) const;
  Geometry geometry(const InputView& x) const;
  // images n0 .. n0 + cn - 1 of the input x, and the geometry of that many images
  std::pair<InputView, Geometry> image_chunk(const InputView& x, const Geometry& g, int64_t n0, int64_t cn) const;
  // raw: y is int32 acc + bias (QConvMaxPool), not the output edge; res: y is the levels of QRelu(edge + B)
  void run_gemm(OrtKernelContext* ctx, const ConvWeights& cw, const Geometry& g, const InputView& x, void* y,
                bool raw = false, const ResidualJoin* res = nullptr) const;
  // images per run_gemm_images call (run_gemm cuts a larger batch into chunks of this many)
  int64_t gemm_chunk_images(const ConvWeights& cw, const Geometry& g) const;
  void run_gemm_images(OrtKernelContext* ctx, const ConvWeights& cw, const Geometry& g, const InputView& x, void* y,
                       bool raw, const ResidualJoin* res, int64_t batch, const ColumnBands* bands = nullptr) const;
  // Padded rows [r0, r1) of one plane (image, group, channel pair or quad) of the pair (quad) image, from the
  // input x, into base: that plane's hp · wp int32. With tap pairs (ConvWeights::tap_pairs) the rows up to
  // r1 + ceil(dw / wp) are built too, which rows [r0, r1)'s pairs read (pair_image_taps).
  void build_image_rows(const ConvWeights& cw, const Geometry& g, const InputView& x, int64_t plane, int64_t r0,
                        int64_t r1, int32_t* base) const;
  // the tap pairs of padded rows [r0, r1) of the plane at base
  void pair_image_taps(const Geometry& g, int64_t r0, int64_t r1, int32_t* base) const;
  // The packing of one column panel from the pair (quad) image img (planes of hp · wp int32, one image per group
  // and channel pair or quad from img on): `runs` of columns sx int32 apart into dst ([kg][nr], ncols..nr zeroed)
  PanelPack panel_pack(const ConvWeights& cw, const Geometry& g, const int32_t* img, const PanelRun* runs, int nruns,
                       int64_t sx, int32_t* dst, int64_t nr, int64_t ncols) const;
  void run_depthwise(OrtKernelContext* ctx, const ConvWeights& cw, const Geometry& g, const InputView& x,
                     void* y, bool raw = false) const;
  bool lanes_fit(const PreparedLayer& L) const;
  void run_depthwise_lanes(OrtKernelContext* ctx, const ConvWeights& cw, const Geometry& g, const InputView& x,
                           uint8_t* y) const;
  void compute_pooled(OrtKernelContext* ctx, const ConvWeights& cw, const Geometry& g, const InputView& x) const;
  // why QConvMaxPool cannot take the pool tiles (run_pool_tiles), "" when it can
  std::string pool_tiles_refusal(const ConvWeights& cw) const;
  void run_pool_tiles(OrtKernelContext* ctx, const ConvWeights& cw, const Geometry& g, const InputView& x, uint8_t* y,
                      int64_t ph, int64_t pw) const;
  void compute_residual(OrtKernelContext* ctx, const ConvWeights& cw, const Geometry& g, const InputView& x) const;

  std::string where_;
  LayerAttrs attrs_;
  int64_t m_ = 0, cg_ = 0, kh_ = 0, kw_ = 0, group_ = 1;
  int64_t sh_ = 1, sw_ = 1, dh_ = 1, dw_ = 1;
  std::vector<int64_t> pads_{0, 0, 0, 0};
  std::string auto_pad_ = "NOTSET";
  bool x_levels_ = false, levels_out_ = false;
  PoolAttrs pool_;   // QConvMaxPool
  Residual residual_ = Residual::kNone;   // QConvAddQRelu / QConvAddDecodeQRelu
  std::shared_ptr<const FloatThresholds> residual_thresholds_;   // when constant
  std::shared_ptr<const DecodeTable> residual_table_;            // when constant
  int64_t join_min_bytes_ = int64_t(1) << 21;   // a smaller B: convolution, then the AddQRelu pass
  int64_t image_chunk_bytes_ = int64_t(1) << 20;  // padded image per run_gemm_images call (WQCOMPILE_IMAGE_CHUNK_BYTES)
  bool u8_allowed_ = true;    // WQCOMPILE_NO_U8 unset
  bool u8_required_ = false;  // WQCOMPILE_REQUIRE_U8 set
  bool pool_tiles_allowed_ = true;    // WQCOMPILE_NO_POOL_TILES unset
  bool pool_tiles_required_ = false;  // WQCOMPILE_REQUIRE_POOL_TILES set
  const IsaKernels* isa_ = nullptr;
  std::shared_ptr<const ConvWeights> constant_;   // set at creation when every operand is an initializer
  int64_t threads_ = 0;   // attribute intra_op_threads (0: unknown)
  // A batch of at least threads_ images (the session's count known) as one contiguous image range per thread:
  // fn(n0, count) for each, inline in its task; false (nothing run) otherwise. onnxruntime's calling thread claims
  // task 0 first, so with as many equal tasks as threads each thread mostly gets the same images in every layer and
  // reads the activations its own core wrote (see compute_pooled's bands for why that matters at 2 threads).
  // Measured, MobileNetV2 (8,8) at batch 32 and 2 threads, in the phase of this machine where cross-core reads
  // are dear: 92 -> 78 ms (FP32 ~90); in the other phase 74.7 -> 76.5 ms. Used by the GEMM path (run_gemm),
  // the depthwise lanes and QConvMaxPool's chunks.
  template <typename Fn>
  bool by_thread_images(OrtKernelContext* ctx, int64_t n, Fn&& fn) const {
    if (ctx == nullptr || threads_ < 2 || n < threads_) return false;
    parallel_for(ctx, static_cast<size_t>(threads_), [&](size_t t) {
      const int64_t n0 = n * static_cast<int64_t>(t) / threads_, n1 = n * (static_cast<int64_t>(t) + 1) / threads_;
      if (n1 > n0) fn(n0, n1 - n0);
    });
    return true;
  }
};

QConvKernel::QConvKernel(const OrtKernelInfo* info, const Signature& sig, bool pool, Residual residual)
    : residual_(residual) {
  where_ = where_of(pool ? "QConvMaxPool"
                         : residual == Residual::kFloat  ? "QConvAddQRelu"
                         : residual == Residual::kLevels ? "QConvAddDecodeQRelu"
                                                         : "QConv",
                    info);
  isa_ = &select_isa();
  u8_allowed_ = !env_flag("WQCOMPILE_NO_U8");
  u8_required_ = env_flag("WQCOMPILE_REQUIRE_U8");
  pool_tiles_allowed_ = !env_flag("WQCOMPILE_NO_POOL_TILES");
  pool_tiles_required_ = env_flag("WQCOMPILE_REQUIRE_POOL_TILES");
  if (const char* v = std::getenv("WQCOMPILE_IMAGE_CHUNK_BYTES"); v != nullptr && v[0] != '\0')
    image_chunk_bytes_ = std::max<int64_t>(1, std::strtoll(v, nullptr, 10));
  x_levels_ = sig.inputs[kX] == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  // the fused residual join's convolution has the float edge (its uint8 output is QRelu's)
  levels_out_ = sig.outputs[0] == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 && residual_ == Residual::kNone;
  if (residual_ != Residual::kNone) {
    if (const char* v = std::getenv("WQCOMPILE_JOIN_MIN_BYTES"); v != nullptr && v[0] != '\0')
      join_min_bytes_ = std::strtoll(v, nullptr, 10);
    bool constant = false;
    InputView t = get_constant_input(info, kResidualThresholds, &constant, where_, "thresholds");
    if (constant) residual_thresholds_ = prepare_qrelu_thresholds(t, where_);
    if (residual_ == Residual::kLevels) {
      InputView d = get_constant_input(info, kResidualTable, &constant, where_, "table");
      if (constant) residual_table_ = prepare_decode_table(d, where_);
    }
  }
  attrs_ = read_layer_attrs(info, where_);
  if (attrs_.w_shape.size() != 4)
    fail(where_, "w_shape must have 4 entries [M, C/group, kH, kW], got " + shape_str(attrs_.w_shape));
  m_ = attrs_.w_shape[0], cg_ = attrs_.w_shape[1], kh_ = attrs_.w_shape[2], kw_ = attrs_.w_shape[3];
  get_int_attr(info, "group", &group_);
  std::vector<int64_t> strides{1, 1}, dilations{1, 1};
  get_ints_attr(info, "strides", &strides);
  get_ints_attr(info, "dilations", &dilations);
  get_ints_attr(info, "pads", &pads_);
  get_string_attr(info, "auto_pad", &auto_pad_);
  if (group_ < 1 || m_ < 1 || cg_ < 1 || kh_ < 1 || kw_ < 1 || m_ % group_ != 0)
    fail(where_, "w_shape " + shape_str(attrs_.w_shape) + " needs positive sizes and M a multiple of group " +
                     std::to_string(group_));
  checked_numel(attrs_.w_shape, where_, "w_shape");
  if (strides.size() != 2 || dilations.size() != 2 || pads_.size() != 4 ||
      *std::min_element(strides.begin(), strides.end()) < 1 ||
      *std::min_element(dilations.begin(), dilations.end()) < 1 || *std::min_element(pads_.begin(), pads_.end()) < 0)
    fail(where_, "bad strides " + shape_str(strides) + " / dilations " + shape_str(dilations) + " / pads " +
                     shape_str(pads_));
  const int64_t big = int64_t(1) << 24;
  if (std::max({strides[0], strides[1], dilations[0], dilations[1], pads_[0], pads_[1], pads_[2], pads_[3], kh_, kw_}) > big)
    fail(where_, "strides, dilations, pads or kernel size are too large");
  sh_ = strides[0], sw_ = strides[1], dh_ = dilations[0], dw_ = dilations[1];
  if (auto_pad_.empty()) auto_pad_ = "NOTSET";
  if (auto_pad_ != "NOTSET" && auto_pad_ != "VALID" && auto_pad_ != "SAME_UPPER" && auto_pad_ != "SAME_LOWER")
    fail(where_, "unknown auto_pad '" + auto_pad_ + "'");
  if (pool) {
    if (!levels_out_) fail(where_, "the fused max pool needs uint8 level output (thresholds)");
    std::vector<int64_t> k, ps{1, 1}, pp{0, 0, 0, 0};
    if (!get_ints_attr(info, "pool_kernel_shape", &k) || k.size() != 2 || k[0] < 1 || k[1] < 1 || k[0] > big || k[1] > big)
      fail(where_, "pool_kernel_shape must be 2 positive sizes");
    get_ints_attr(info, "pool_strides", &ps);
    get_ints_attr(info, "pool_pads", &pp);
    if (ps.size() != 2 || pp.size() != 4 || ps[0] < 1 || ps[1] < 1 || ps[0] > big || ps[1] > big)
      fail(where_, "bad pool_strides " + shape_str(ps) + " / pool_pads " + shape_str(pp));
    for (int d = 0; d < 4; ++d)
      if (pp[d] < 0 || pp[d] >= k[d % 2]) fail(where_, "pool_pads " + shape_str(pp) + " must be ≥ 0 and smaller than the kernel");
    pool_.on = true;
    pool_.kh = k[0], pool_.kw = k[1], pool_.sh = ps[0], pool_.sw = ps[1];
    for (int d = 0; d < 4; ++d) pool_.pads[d] = pp[d];
  }
  // the session's intra-op thread count, set by wqcompile.runtime (speed only; 0 or absent: unknown): a batch of
  // at least that many images runs as one image range per thread (by_thread_images), and 1 keeps QConvMaxPool's
  // per-plane pool at a small batch, whose bands would only add halo rows and partial panels
  if (get_int_attr(info, "intra_op_threads", &threads_) && (threads_ < 0 || threads_ > (int64_t(1) << 16)))
    fail(where_, "intra_op_threads must be within 0..65536, got " + std::to_string(threads_));
  LayerOperands ops;
  if (constant_operands(info, where_, &ops)) constant_ = pack(ops);
}

std::shared_ptr<const ConvWeights> QConvKernel::pack(const LayerOperands& ops) const {
  std::shared_ptr<ConvWeights> cw = pack_layer(ops);
  if (pool_.on) {
    const std::string refusal = pool_tiles_refusal(*cw);
    if (pool_tiles_required_ && !refusal.empty())
      fail(where_, "WQCOMPILE_REQUIRE_POOL_TILES is set, but " + refusal);
    cw->pool_tiles = refusal.empty();
  }
  return cw;
}

std::shared_ptr<ConvWeights> QConvKernel::pack_layer(const LayerOperands& ops) const {
  auto cw = std::make_shared<ConvWeights>();
  const int64_t fan_in = cg_ * kh_ * kw_;
  cw->layer = prepare_layer(where_, attrs_, m_, fan_in, x_levels_, levels_out_, ops);
  if (cg_ == 1 && m_ == group_) {   // depthwise: one filter per channel
    cw->filters.assign(cw->layer->weights.begin(), cw->layer->weights.end());
    return cw;
  }
  const std::string refusal = u8_refusal(*cw->layer);
  if (u8_required_ && !refusal.empty())
    fail(where_, "WQCOMPILE_REQUIRE_U8 is set, but this layer takes the int16 path: " + refusal);
  cw->u8 = refusal.empty();
  cw->tap_pairs = !cw->u8 && cg_ == 1 && kw_ > 1;
  // fan-in reordered to groups of `lanes` input channels per tap: group p = (q·kh + ky)·kw + kx holds channels
  // lanes·q .. lanes·q + lanes - 1 (zero past cg), the layout of the image's int32
  const int64_t lanes = cw->u8 ? 4 : 2, nq = (cg_ + lanes - 1) / lanes, taps = kh_ * kw_;
  cw->lanes = lanes;
  cw->kg = cw->tap_pairs ? kh_ * ((kw_ + 1) / 2) : nq * taps;
  const int64_t row = lanes * cw->kg;   // mantissas per weight row
  if (cw->u8) cw->a8.resize(static_cast<size_t>(m_ * row));
  else cw->a.resize(static_cast<size_t>(m_ * row));
  const bool offset = cw->u8 && !x_levels_;   // float input on the u8 path: the image holds mantissa + 128
  cw->bias = cw->layer->bias;
  cw->pad_byte = offset ? 128 : 0;
  const PreparedLayer& L = *cw->layer;
  for (int64_t o = 0; o < m_; ++o) {
    const size_t gr = static_cast<size_t>(L.row_of(o));
    cw->row_tables.push_back(L.fused() ? L.thresholds[gr].get() : nullptr);
    cw->row_scales.push_back(L.scale[gr]);
  }
  if (cw->tap_pairs) {   // row o: group (ky, p) = (w[ky][2p], w[ky][2p + 1] or 0)
    const int64_t pairs = (kw_ + 1) / 2;
    for (int64_t o = 0; o < m_; ++o) {
      const int16_t* src = L.weights.data() + o * fan_in;   // [1][kh][kw]
      int16_t* dst = cw->a.data() + o * row;
      for (int64_t ky = 0; ky < kh_; ++ky)
        for (int64_t kx = 0; kx < 2 * pairs; ++kx) dst[2 * ky * pairs + kx] = kx < kw_ ? src[ky * kw_ + kx] : 0;
    }
    return cw;
  }
  for (int64_t o = 0; o < m_; ++o) {
    const int16_t* src = cw->layer->weights.data() + o * fan_in;   // [cg][kh][kw]
    int64_t sum = 0;
    for (int64_t ci = 0; ci < cg_; ++ci)
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t k = o * row + lanes * ((ci / lanes) * taps + t) + ci % lanes;
        if (cw->u8) cw->a8.data()[k] = static_cast<int8_t>(src[ci * taps + t]);   // within -128..127 (u8_refusal)
        else cw->a.data()[k] = src[ci * taps + t];
        sum += src[ci * taps + t];
      }
    // exact modulo 2^32, like the sums of vpdpbusd: acc + bias is the true acc + bias, within the §2 bound
    if (offset)
      cw->bias[static_cast<size_t>(o)] = static_cast<int32_t>(static_cast<uint32_t>(cw->bias[static_cast<size_t>(o)]) -
                                                              static_cast<uint32_t>(128 * sum));
  }
  return cw;
}

// Why a GEMM-path layer cannot take the u8 × s8 path (empty: it takes it). Every level mantissa must be a u8 (the
// unsigned operand of vpdpbusd) and every weight mantissa an s8 (the signed one); the level table is checked whole
// (zero past its end), the weights as decoded, i.e. only the codebook entries the layer uses.
std::string QConvKernel::u8_refusal(const PreparedLayer& L) const {
  if (isa_->gemm_tile_u8 == nullptr || isa_->quad_levels == nullptr)
    return std::string("the ") + isa_->name + " instruction set has no u8 path";
  if (!u8_allowed_) return "WQCOMPILE_NO_U8 is set";
  if (!x_levels_) {
    if (isa_->quad_floats == nullptr) return std::string("the ") + isa_->name + " instruction set has no float quad image";
    if (attrs_.x_max > 127) return "the float32 input's x_max " + std::to_string(attrs_.x_max) + " is above 127";
    if (!attrs_.x_scale_normal())
      return "the float32 input's x_shift " + std::to_string(attrs_.x_shift) + " is outside float32's normal exponents";
    if (L.row_scaled()) return "a row-scaled layer cannot fold the float input's offset into its bias";
    // keeps |128 · Σ C| and so every partial sum and the corrected bias below 2^30 (no int32 wrap anywhere)
    if (cg_ * kh_ * kw_ > (int64_t(1) << 16)) return "the fan-in is above 65536 (the float input's offset could wrap)";
  }
  for (int j = 0; x_levels_ && j < 256; ++j) {
    const int16_t v = L.x_table256[static_cast<size_t>(j)];
    if (v < 0 || v > 255)
      return "x_table[" + std::to_string(j) + "] = " + std::to_string(v) + " is outside 0..255";
  }
  for (int16_t v : L.weights)
    if (v < -128 || v > 127) return "weight mantissa " + std::to_string(v) + " is outside -128..127";
  return "";
}

Geometry QConvKernel::geometry(const InputView& x) const {
  if (x.shape.size() != 4) fail(where_, "input must be 4-D [N, C, H, W], got shape " + shape_str(x.shape));
  Geometry g{};
  g.n = x.shape[0], g.c = x.shape[1], g.h = x.shape[2], g.w = x.shape[3];
  if (g.c != cg_ * group_)
    fail(where_, "input has " + std::to_string(g.c) + " channels but w_shape " + shape_str(attrs_.w_shape) +
                     " with group " + std::to_string(group_) + " needs " + std::to_string(cg_ * group_));
  const int64_t eh = (kh_ - 1) * dh_ + 1, ew = (kw_ - 1) * dw_ + 1;
  g.pt = pads_[0], g.pl = pads_[1], g.pb = pads_[2], g.pr = pads_[3];
  if (auto_pad_ == "VALID") {
    g.pt = g.pl = g.pb = g.pr = 0;
  } else if (auto_pad_ == "SAME_UPPER" || auto_pad_ == "SAME_LOWER") {
    auto same = [&](int64_t size, int64_t s, int64_t e, int64_t* begin, int64_t* end) {
      const int64_t out = (size + s - 1) / s;
      const int64_t total = std::max<int64_t>(0, (out - 1) * s + e - size);
      const int64_t small = total / 2, large = total - total / 2;
      *begin = auto_pad_ == "SAME_UPPER" ? small : large;
      *end = auto_pad_ == "SAME_UPPER" ? large : small;
    };
    same(g.h, sh_, eh, &g.pt, &g.pb);
    same(g.w, sw_, ew, &g.pl, &g.pr);
  }
  const int64_t ph = g.h + g.pt + g.pb - eh, pw = g.w + g.pl + g.pr - ew;
  g.oh = ph >= 0 ? ph / sh_ + 1 : 0;
  g.ow = pw >= 0 ? pw / sw_ + 1 : 0;
  if (g.oh < 1 || g.ow < 1)
    fail(where_, "kernel " + std::to_string(kh_) + "x" + std::to_string(kw_) + " does not fit the padded " +
                     std::to_string(g.h) + "x" + std::to_string(g.w) + " input");
  checked_numel({g.n, m_, g.oh, g.ow}, where_, "output");
  checked_numel({g.n, cg_ * kh_ * kw_, g.oh, g.ow}, where_, "im2col");
  return g;
}

std::pair<InputView, Geometry> QConvKernel::image_chunk(const InputView& x, const Geometry& g, int64_t n0,
                                                        int64_t cn) const {
  const int64_t image = g.c * g.h * g.w, bytes = x_levels_ ? 1 : 4;
  InputView xs = x;
  xs.shape[0] = cn;
  xs.numel = cn * image;
  xs.data = static_cast<const char*>(x.data) + n0 * image * bytes;
  Geometry gc = g;
  gc.n = cn;
  return {xs, gc};
}

void QConvKernel::Compute(OrtKernelContext* ctx) {
  const InputView x = get_input(ctx, kX, where_, "X");
  if (!x.present) fail(where_, "missing input X");
  const ONNXTensorElementDataType want = x_levels_ ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  if (x.type != want) fail(where_, std::string("input must be ") + type_name(want) + ", got " + type_name(x.type));
  std::shared_ptr<const ConvWeights> cw = constant_ ? constant_ : pack(run_operands(ctx, where_));
  const Geometry g = geometry(x);
  if (pool_.on) {
    compute_pooled(ctx, *cw, g, x);
    return;
  }
  if (residual_ != Residual::kNone) {
    compute_residual(ctx, *cw, g, x);
    return;
  }
  void* y = allocate_output(ctx, 0, {g.n, m_, g.oh, g.ow});
  if (g.n == 0) return;
  // the input's mantissas are made plane by plane inside each path, straight into the layout it reads
  if (!cw->filters.empty() && lanes_fit(*cw->layer)) run_depthwise_lanes(ctx, *cw, g, x, static_cast<uint8_t*>(y));
  else if (!cw->filters.empty()) run_depthwise(ctx, *cw, g, x, y);
  else run_gemm(ctx, *cw, g, x, y);
}

// The channels-in-lanes depthwise (IsaKernels::depthwise_lanes) takes level input and a fused level output with
// one thresholds row (one shared codebook, row-scaled or not): measured faster than the per-plane kernel on every
// MobileNetV2 depthwise shape (7x7 .. 112x112, strides 1 and 2) at batch 1 and 32. The rest runs plane by plane.
bool QConvKernel::lanes_fit(const PreparedLayer& L) const {
  return isa_->depthwise_lanes != nullptr && L.x_levels && L.fused() && L.gc == 1 && kh_ <= 16 && kw_ <= 16;
}

// Tasks of one image's block of 16 channels (the last one may have fewer)
void QConvKernel::run_depthwise_lanes(OrtKernelContext* ctx, const ConvWeights& cw, const Geometry& g,
                                      const InputView& x, uint8_t* y) const {
  const PreparedLayer& L = *cw.layer;
  const int64_t blocks = (g.c + 15) / 16, plane_in = g.h * g.w, plane_out = g.oh * g.ow;
  DepthwiseLanes proto{};
  proto.h = g.h, proto.w = g.w, proto.pt = g.pt, proto.pl = g.pl;
  proto.kh = kh_, proto.kw = kw_, proto.sh = sh_, proto.sw = sw_, proto.dh = dh_, proto.dw = dw_;
  proto.oh = g.oh, proto.ow = g.ow;
  proto.table256 = L.x_table256.data();
  proto.table = L.thresholds[0].get();
  const size_t scratch = depthwise_lanes_layout(proto).bytes;
  auto task = [&](size_t t) {
    const int64_t n = static_cast<int64_t>(t) / blocks, c0 = 16 * (static_cast<int64_t>(t) % blocks);
    DepthwiseLanes p = proto;
    p.nc = std::min<int64_t>(16, g.c - c0);
    p.x = x.as<uint8_t>() + (n * g.c + c0) * plane_in;
    p.filter = cw.filters.data() + c0 * kh_ * kw_;
    p.bias = L.bias.data() + c0;
    p.row_scale = L.row_scaled() ? L.row_scale.data() + c0 : nullptr;
    p.y = y + (n * m_ + c0) * plane_out;
    p.scratch = thread_scratch<char>(2, scratch);
    check_levels(where_, L, isa_->depthwise_lanes(p));
  };
  if (by_thread_images(ctx, g.n, [&](int64_t n0, int64_t cn) {
        for (int64_t t = n0 * blocks; t < (n0 + cn) * blocks; ++t) task(static_cast<size_t>(t));
      }))
    return;
  parallel_for(ctx, static_cast<size_t>(g.n * blocks), task);
}

void QConvKernel::run_depthwise(OrtKernelContext* ctx, const ConvWeights& cw, const Geometry& g, const InputView& x,
                                void* y, bool raw) const {
  const PreparedLayer& L = *cw.layer;
  const int64_t planes = g.n * g.c, plane_out = g.oh * g.ow;
  const int64_t hp = g.h + g.pt + g.pb, wp = g.w + g.pl + g.pr;
  checked_numel({hp, wp}, where_, "padded plane");
  const size_t out_bytes = output_bytes(L, raw, false);
  // about 64k outputs per task, but at least 16 tasks when there are enough planes (small late layers)
  const int64_t per_task = std::max<int64_t>(1, std::min((int64_t(1) << 16) / plane_out, (planes + 15) / 16));
  const int64_t tasks = (planes + per_task - 1) / per_task;
  parallel_for(ctx, static_cast<size_t>(tasks), [&](size_t t) {
    int32_t* const acc = thread_scratch<int32_t>(2, static_cast<size_t>(plane_out));
    int32_t* const scratch = thread_scratch<int32_t>(3, static_cast<size_t>(g.oh * wp + 128));
    int16_t* const plane16 = thread_scratch<int16_t>(4, static_cast<size_t>(g.h * g.w));
    // the zero-padded input plane, with 256 int16 of slack for whole-vector reads past its end (zeroed once
    // per task: only the interior is rewritten per plane)
    int16_t* const padded = thread_scratch<int16_t>(5, static_cast<size_t>(hp * wp + 256));
    std::memset(padded, 0, sizeof(int16_t) * static_cast<size_t>(hp * wp + 256));
    const int64_t p0 = static_cast<int64_t>(t) * per_task, p1 = std::min(planes, p0 + per_task);
    for (int64_t plane = p0; plane < p1; ++plane) {
      const int64_t ch = plane % g.c;
      mantissa_span(*isa_, where_, L, attrs_, x, plane * g.h * g.w, g.h * g.w, plane16);
      const int16_t* src = plane16;
      for (int64_t iy = 0; iy < g.h; ++iy)
        std::memcpy(padded + (iy + g.pt) * wp + g.pl, src + iy * g.w, sizeof(int16_t) * g.w);
      DepthwisePlane p{};
      p.x = padded;
      p.h = hp, p.w = wp;
      p.filter = cw.filters.data() + ch * kh_ * kw_;
      p.kh = kh_, p.kw = kw_, p.sh = sh_, p.sw = sw_, p.dh = dh_, p.dw = dw_, p.pad_top = 0, p.pad_left = 0;
      p.acc = acc;
      p.oh = g.oh, p.ow = g.ow;
      p.scratch = scratch;
      isa_->depthwise(p);
      if (raw) {
        int32_t* dst = static_cast<int32_t*>(y) + plane * plane_out;
        const int32_t b = L.bias[static_cast<size_t>(ch)];
        for (int64_t i = 0; i < plane_out; ++i) dst[i] = acc[i] + b;
        continue;
      }
      edge_segment(*isa_, L, ch, acc, L.bias[static_cast<size_t>(ch)],
                   static_cast<char*>(y) + plane * plane_out * out_bytes, plane_out);
    }
  });
}

// The padded image: [n][g][q][Hp][Wp] int32, each holding the mantissas of `lanes` adjacent channels of the group
// (g·cg + lanes·q ..; 0 for channels past cg): the *pair image* (int16 pairs) or, on the u8 path, the *quad image*
// (u8 quads), with a zero border of the convolution's pads (a zero int32 is zero in every lane). Its rows are what
// the im2col panels copy, so packing is plain copies of int32 runs, the same for both.
// The GEMM path in chunks of images whose padded image (below) takes about image_chunk_bytes_ (1 MiB, about a
// core's L2): built, then read back by the panels while it is still in cache. The whole batch's image at once is
// tens of MB at batch 32 (MobileNetV2's 112x112 layers ~25 MB, ResNet-50's stage 0 ~13 MB), written to memory and
// read back from it. Measured at batch 32, one thread, all kernels: ResNet-50 (8,8) 342 -> 309 ms, MobileNetV2
// (8,8) 159 -> 145 ms (2 MiB chunks: 312 / 149 ms; 4 and 8 MiB: 149 / 153 ms on MobileNetV2). A batch whose
// whole image fits is one chunk, so batch 1 is unchanged.
int64_t QConvKernel::gemm_chunk_images(const ConvWeights& cw, const Geometry& g) const {
  const int64_t nq = (cg_ + cw.lanes - 1) / cw.lanes;
  // the same bound run_gemm_images checks for the whole image, so no product here can overflow
  checked_numel({g.n, group_, nq, g.h + g.pt + g.pb, g.w + g.pl + g.pr}, where_, "padded input");
  const int64_t per_image = group_ * nq * (g.h + g.pt + g.pb) * (g.w + g.pl + g.pr) * 4;
  return std::max<int64_t>(1, image_chunk_bytes_ / std::max<int64_t>(1, per_image));
}

void QConvKernel::run_gemm(OrtKernelContext* ctx, const ConvWeights& cw, const Geometry& g, const InputView& x,
                           void* y, bool raw, const ResidualJoin* res) const {
  const int64_t y_image = m_ * g.oh * g.ow;
  const size_t y_bytes = output_bytes(*cw.layer, raw, res != nullptr);
  // images [n0, n0 + cn) of the call: run(input view, geometry, output, residual operands) on them
  auto images = [&](int64_t n0, int64_t cn, auto&& run) {
    const auto [xs, gc] = image_chunk(x, g, n0, cn);
    ResidualJoin rc;
    if (res != nullptr) {
      rc = *res;
      if (rc.b != nullptr) rc.b += n0 * y_image;
      if (rc.lv != nullptr) rc.lv += n0 * y_image;
    }
    run(xs, gc, static_cast<char*>(y) + n0 * y_image * y_bytes, res != nullptr ? &rc : nullptr);
  };
  // one image range per thread, each run in its task
  if (g.n > 1 && by_thread_images(ctx, g.n, [&](int64_t n0, int64_t cn) {
        images(n0, cn, [&](const InputView& xs, const Geometry& gc, void* yc, const ResidualJoin* rc) {
          run_gemm(nullptr, cw, gc, xs, yc, raw, rc);
        });
      }))
    return;
  // One image with the session's threads known: one task per thread, in one parallel loop instead of two or three
  // (image planes, then panels, or panel packs and row chunks), each of which hands work and data between the
  // cores:
  // - layers with at least kBandMinPanels panels per thread: one band of output rows per thread, the same split in
  //   every layer, so each thread builds the input rows its band reads, packs them and writes its own rows, and
  //   mostly reads what its own core wrote (as the image ranges above, at one image);
  // - smaller layers with at least a row tile per thread: every column and a share of the output channels (whole
  //   row tiles) per thread, each building the whole image and packing every panel itself (the panel and
  //   row-chunk tasks balance those better, but cost two more loops).
  // 2 threads, batch 1, alternating processes (median ms), in this machine's phase where the hand-over is dear and
  // in the other: ResNet-50 (8,8) 6.55 -> 6.47 (bands) -> 5.9 (and shares), 4.14 -> 4.10 -> ~4.4 either way;
  // bands for every layer instead gave 6.18 and 4.24. MobileNetV2 (8,8) 2.65 -> 2.46 in the dear phase.
  constexpr int64_t kBandMinPanels = 8;
  const int64_t mr = isa_->mr;
  const bool bands_fit = g.oh >= threads_ && g.oh * g.ow >= threads_ * kBandMinPanels * isa_->nr;
  if (g.n == 1 && ctx != nullptr && threads_ >= 2 && group_ == 1 && (bands_fit || m_ >= threads_ * mr)) {
    ColumnBands split;
    auto share = [&](int64_t t) { return t == threads_ ? m_ : m_ * t / threads_ / mr * mr; };
    for (int64_t t = 0; t < threads_; ++t) {
      if (bands_fit) {
        split.cols.emplace_back(g.oh * t / threads_ * g.ow, g.oh * (t + 1) / threads_ * g.ow);
      } else {
        split.cols.emplace_back(0, g.oh * g.ow);
        split.rows.emplace_back(share(t), share(t + 1));
      }
    }
    split.done = [](size_t) {};
    run_gemm_images(ctx, cw, g, x, y, raw, res, g.n, &split);
    return;
  }
  const int64_t chunk = gemm_chunk_images(cw, g);
  if (chunk >= g.n) {
    run_gemm_images(ctx, cw, g, x, y, raw, res, g.n);
    return;
  }
  for (int64_t n0 = 0; n0 < g.n; n0 += chunk)
    images(n0, std::min(chunk, g.n - n0), [&](const InputView& xs, const Geometry& gc, void* yc, const ResidualJoin* rc) {
      run_gemm_images(ctx, cw, gc, xs, yc, raw, rc, g.n);
    });
}

void QConvKernel::build_image_rows(const ConvWeights& cw, const Geometry& g, const InputView& x, int64_t plane,
                                   int64_t r0, int64_t r1, int32_t* base) const {
  const PreparedLayer& L = *cw.layer;
  const IsaKernels& isa = *isa_;
  const int64_t lanes = cw.lanes, nq = (cg_ + lanes - 1) / lanes, wp = g.w + g.pl + g.pr, hw = g.h * g.w;
  const int64_t q = plane % nq, grp = (plane / nq) % group_, n = plane / (nq * group_);
  const int64_t hp = g.h + g.pt + g.pb, paired_to = r1;
  if (cw.tap_pairs) r1 = std::min(hp, r1 + (std::min(dw_, hp * wp) + wp - 1) / wp);
  // the offsets of channels c0 .. c0 + lanes - 1 in X (-1 past the group's count: 0)
  const int64_t c0 = grp * cg_ + lanes * q;
  int64_t off[4] = {-1, -1, -1, -1};
  for (int64_t l = 0; l < lanes; ++l) off[l] = lanes * q + l < cg_ ? (n * g.c + c0 + l) * hw : -1;
  // `count` image entries from `shift` elements into each channel's plane
  auto span = [&](int64_t shift, int64_t count, int32_t* dst) {
    int64_t at[4];
    for (int l = 0; l < 4; ++l) at[l] = off[l] >= 0 ? off[l] + shift : -1;
    if (cw.u8) quad_span(isa, where_, L, attrs_, x, at, count, dst);
    else pair_span(isa, where_, L, attrs_, x, at[0], at[1], count, dst);
  };
  const int pad = cw.pad_byte;
  // rows of padding above and below the input, and the input rows iy0 .. iy1 - 1 between them
  const int64_t iy0 = std::clamp<int64_t>(r0 - g.pt, 0, g.h), iy1 = std::clamp<int64_t>(r1 - g.pt, 0, g.h);
  const int64_t top = std::min(r1, g.pt) - std::min(r0, g.pt), bottom_from = std::max(r0, g.pt + g.h);
  if (top > 0) std::memset(base + r0 * wp, pad, sizeof(int32_t) * top * wp);
  if (r1 > bottom_from) std::memset(base + bottom_from * wp, pad, sizeof(int32_t) * (r1 - bottom_from) * wp);
  if (g.pl == 0 && g.pr == 0) {   // rows without side padding are contiguous: all of them at once
    if (iy1 > iy0) span(iy0 * g.w, (iy1 - iy0) * g.w, base + (g.pt + iy0) * wp);
  } else {
    for (int64_t iy = iy0; iy < iy1; ++iy) {
      int32_t* row = base + (g.pt + iy) * wp;
      std::memset(row, pad, sizeof(int32_t) * g.pl);
      std::memset(row + g.pl + g.w, pad, sizeof(int32_t) * g.pr);
      span(iy * g.w, g.w, row + g.pl);
    }
  }
  if (cw.tap_pairs) pair_image_taps(g, r0, paired_to, base);
}

void QConvKernel::pair_image_taps(const Geometry& g, int64_t r0, int64_t r1, int32_t* base) const {
  // the plane holds (X, 0) pairs (one channel); each int32 takes the column dw on as its high half. The low
  // halves never change, so the order does not matter. Past the plane the high half is 0: a column past its
  // row's end (or the plane's) only ever meets the zero weight of an odd kw's last pair. (The pairs of a row's
  // last columns read the next row, and only ever meet zero weights: built anyway, so no stale or uninitialised
  // int32 is ever read.)
  const int64_t wp = g.w + g.pl + g.pr, np = (g.h + g.pt + g.pb) * wp, d = std::min(dw_, np);
  const int64_t i1 = std::min(r1 * wp, np - d);
  for (int64_t i = r0 * wp; i < i1; ++i)
    base[i] = static_cast<int32_t>((static_cast<uint32_t>(base[i]) & 0xFFFFu) |
                                   (static_cast<uint32_t>(base[i + d]) << 16));
  for (int64_t i = std::max(r0 * wp, np - d); i < r1 * wp; ++i)
    base[i] = static_cast<int32_t>(static_cast<uint32_t>(base[i]) & 0xFFFFu);
}

PanelPack QConvKernel::panel_pack(const ConvWeights& cw, const Geometry& g, const int32_t* img, const PanelRun* runs,
                                  int nruns, int64_t sx, int32_t* dst, int64_t nr, int64_t ncols) const {
  const int64_t wp = g.w + g.pl + g.pr;
  PanelPack pk{};
  pk.x2 = img;
  pk.runs = runs;
  pk.nruns = nruns;
  pk.nq = (cg_ + cw.lanes - 1) / cw.lanes, pk.kh = kh_, pk.kw = cw.tap_pairs ? (kw_ + 1) / 2 : kw_;   // tap pairs: every other kx
  pk.q_stride = (g.h + g.pt + g.pb) * wp, pk.ky_stride = dh_ * wp, pk.kx_stride = cw.tap_pairs ? 2 * dw_ : dw_;
  pk.sx = sx;
  pk.dst = dst;
  pk.nr = nr, pk.ncols = ncols;
  return pk;
}

void QConvKernel::run_gemm_images(OrtKernelContext* ctx, const ConvWeights& cw, const Geometry& g, const InputView& x,
                                  void* y, bool raw, const ResidualJoin* res, int64_t batch,
                                  const ColumnBands* bands) const {
  const PreparedLayer& L = *cw.layer;
  const IsaKernels& isa = *isa_;
  const int64_t lanes = cw.lanes, mg = m_ / group_, nq = (cg_ + lanes - 1) / lanes, kg = cw.kg;
  const int64_t hp = g.h + g.pt + g.pb, wp = g.w + g.pl + g.pr;
  const int64_t planes = g.n * group_ * nq;
  checked_numel({planes, hp, wp}, where_, "padded input");
  const int64_t np = hp * wp;
  // + 64 int32: whole-vector reads past the last column of a direct view (below) stay inside the buffer
  const size_t image_size = static_cast<size_t>(planes * hp * wp + 64);
  int32_t* const x2 = bands != nullptr ? nullptr : thread_scratch<int32_t>(0, image_size);
  if (bands == nullptr) {   // the whole image (bands: each band task builds the rows it reads, below)
    parallel_for(ctx, static_cast<size_t>(planes), [&](size_t t) {
      build_image_rows(cw, g, x, static_cast<int64_t>(t), 0, hp, x2 + static_cast<int64_t>(t) * np);
    });
  }
  // rows o0.. of the weights against a B operand of kg int32 rows, ldb int32 apart: c (ldc = nr) or the edge
  auto run_tile = [&](int64_t o0, const int32_t* b, size_t ldb, int rows, int ncols, int32_t* c, const TileEdge* edge) {
    const size_t k = static_cast<size_t>(kg);
    if (cw.u8) {   // bytes: 4 per int32
      const int8_t* a = cw.a8.data() + o0 * 4 * kg;
      const uint8_t* b8 = reinterpret_cast<const uint8_t*>(b);
      if (edge) isa.gemm_tile_u8_edge(a, 4 * k, b8, 4 * ldb, k, rows, ncols, *edge);
      else isa.gemm_tile_u8(a, 4 * k, b8, 4 * ldb, k, c, static_cast<size_t>(isa.nr), rows, ncols);
      return;
    }
    const int16_t* a = cw.a.data() + o0 * 2 * kg;   // int16: 2 per int32
    const int16_t* b16 = reinterpret_cast<const int16_t*>(b);
    if (edge) isa.gemm_tile_edge(a, 2 * k, b16, 2 * ldb, k, rows, ncols, *edge);
    else isa.gemm_tile(a, 2 * k, b16, 2 * ldb, k, c, static_cast<size_t>(isa.nr), rows, ncols);
  };
  const int64_t P = g.oh * g.ow, J = g.n * P;
  // 1x1, stride 1, no padding: the image's rows already are the GEMM's B rows
  const bool pointwise = kh_ == 1 && kw_ == 1 && sh_ == 1 && sw_ == 1 && hp == g.oh && wp == g.ow;
  const int64_t nr = isa.nr, mr = isa.mr;
  const int64_t panels = (J + nr - 1) / nr;
  const int64_t panel_elems = kg * nr;   // int32
  // the residual join (res) reads B and writes the levels as a short run per channel and panel: when B is larger
  // than the caches (batch 32), each row tile runs over a block's panels in turn (below), so its 8 channels' B and
  // levels are read / written sequentially (streams the hardware prefetchers follow; the panel-major order touches
  // every channel plane per panel, ~2x slower there); a B that stays in cache keeps the panel-major order
  const bool streamed = res != nullptr && batch * P * m_ * (res->b != nullptr ? 4 : 1) > (int64_t(1) << 21);
  // panels per block: about 1 MiB of packed columns, shared by every row tile of the block (streamed: 128 KiB,
  // which stays in L2 while every row tile runs over it in turn; measured best on ResNet-50's joins)
  const int64_t per_block = std::max<int64_t>(1, (int64_t(1) << (streamed ? 17 : 20)) / (panel_elems * 4));
  const int64_t row_chunk = streamed ? mr : 4 * mr;
  const int64_t row_chunks = (mg + row_chunk - 1) / row_chunk;
  const size_t out_bytes = output_bytes(L, raw, res != nullptr);
  // the fused edge needs every float scale to be a plain power-of-two multiply (else the ldexp path); row scales
  // are applied in it (TileEdge::row_scale)
  bool fast_edge = true;
  for (char f : L.scale_fast) fast_edge = fast_edge && (L.fused() || f);
  for (int64_t grp = 0; grp < group_; ++grp) {
    // B operand of one column panel: packed into dst (runs of int32 copied out of the image), or, for a 1x1
    // convolution's panel inside one image, the image itself (rows P int32 apart). Returns the row stride (int32).
    // img: the image (x2, or a band task's own)
    auto panel_b = [&](const int32_t* img, int64_t j0, int64_t ncols, int32_t* dst, const int32_t** bp) -> size_t {
      const int64_t n0 = j0 / P;
      if (pointwise && n0 == (j0 + ncols - 1) / P) {
        *bp = img + ((n0 * group_ + grp) * nq) * P + (j0 - n0 * P);
        return static_cast<size_t>(P);
      }
      PanelRun runs[64];
      int nruns = 0;
      for (int64_t j = j0; j < j0 + ncols;) {
        const int64_t n = j / P, p = j % P, oy = p / g.ow, ox = p % g.ow;
        const int64_t len = std::min(j0 + ncols - j, g.ow - ox);
        const int64_t src = (((n * group_ + grp) * nq) * hp + oy * sh_) * wp + ox * sw_;
        runs[nruns++] = PanelRun{src, static_cast<int32_t>(j - j0), static_cast<int32_t>(len)};
        j += len;
      }
      isa.pack_panel(panel_pack(cw, g, img, runs, nruns, sw_, dst, nr, ncols));
      *bp = dst;
      return static_cast<size_t>(nr);
    };
    // The residual join (res): rows o0.. of the tile's A (row r at a_tile + r·nr, columns j0..) plus B, quantized
    // into the levels, one run per image (element (n, o, p) of A and B: the same flat index, same shapes)
    auto finish_residual = [&](int64_t o0, int rows, int64_t j0, int64_t ncols, const float* a_tile) {
      const float* table = res->table != nullptr ? res->table->values : nullptr;
      const int table_size = res->table != nullptr ? static_cast<int>(res->table->size) : 0;
      const int64_t n0 = j0 / P;
      if (isa.add_qrelu_rows != nullptr && n0 == (j0 + ncols - 1) / P) {   // one image: rows P apart, one call
        const int64_t at = (n0 * m_ + o0) * P + (j0 - n0 * P);
        isa.add_qrelu_rows(a_tile, static_cast<size_t>(nr), res->b != nullptr ? res->b + at : nullptr,
                           res->lv != nullptr ? res->lv + at : nullptr, static_cast<size_t>(P), table, table_size,
                           static_cast<uint8_t*>(y) + at, static_cast<size_t>(P), rows, static_cast<size_t>(ncols),
                           res->t);
        return;
      }
      for (int r = 0; r < rows; ++r) {
        const int64_t o = o0 + r;
        for (int64_t j = j0; j < j0 + ncols;) {
          const int64_t n = j / P, p = j % P, len = std::min(j0 + ncols - j, P - p);
          const int64_t at = (n * m_ + o) * P + p;
          isa.add_qrelu(a_tile + r * nr + (j - j0), res->b != nullptr ? res->b + at : nullptr,
                        res->lv != nullptr ? res->lv + at : nullptr, table, table_size, static_cast<uint8_t*>(y) + at,
                        static_cast<size_t>(len), res->t);
          j += len;
        }
      }
    };
    // rows [r_begin, r_end) of the group against one panel (columns j0 .. j0 + ncols - 1), edge included
    auto rows_x_panel = [&](int64_t j0, int64_t ncols, const int32_t* bp, size_t ldb, int64_t r_begin, int64_t r_end) {
      const int64_t n0 = j0 / P, n1 = (j0 + ncols - 1) / P;
      alignas(64) int32_t c[8 * 64];
      alignas(64) float a_tile[8 * 64];   // res: the tile's float edge, rows nr apart (any images: split when finished)
      const bool has_edge = cw.u8 ? isa.gemm_tile_u8_edge != nullptr : isa.gemm_tile_edge != nullptr;
      const bool fuse = has_edge && (n0 == n1 || res != nullptr) && (fast_edge || raw);
      for (int64_t r0 = r_begin; r0 < r_end; r0 += mr) {
        const int rows = static_cast<int>(std::min(mr, r_end - r0));
        const int64_t o0 = grp * mg + r0;
        if (fuse) {   // the whole tile lands in one image (or a_tile): edge in registers, straight into the rows
          // rows of one image are P outputs apart (a_tile: nr floats); the per-row operands are the layer's own
          // arrays from row o0 on (set up once per session: this runs per tile, thousands of times per call)
          void* out[8];
          char* const out0 = res != nullptr ? reinterpret_cast<char*>(a_tile)
                                            : static_cast<char*>(y) + ((n0 * m_ + o0) * P + (j0 - n0 * P)) * out_bytes;
          const int64_t out_step = res != nullptr ? nr * 4 : P * static_cast<int64_t>(out_bytes);
          for (int r = 0; r < rows; ++r) out[r] = out0 + r * out_step;
          const size_t at = static_cast<size_t>(o0);
          const TileEdge edge{cw.bias.data() + at, L.fused() ? cw.row_tables.data() + at : nullptr,
                              cw.row_scales.data() + at, out, raw, L.row_scaled() ? L.row_scale.data() + at : nullptr};
          run_tile(o0, bp, ldb, rows, static_cast<int>(ncols), nullptr, &edge);
          if (res != nullptr) finish_residual(o0, rows, j0, ncols, a_tile);
          continue;
        }
        run_tile(o0, bp, ldb, rows, static_cast<int>(ncols), c, nullptr);
        for (int r = 0; r < rows; ++r) {
          const int64_t o = o0 + r;
          const int32_t* acc = c + r * nr;
          if (res != nullptr) {   // the float edge of the whole row (it does not depend on the image)
            edge_segment(isa, L, o, acc, cw.bias[static_cast<size_t>(o)], a_tile + r * nr, ncols);
            continue;
          }
          // columns j0.. map to (image, pixel) runs of the output
          int64_t j = j0;
          while (j < j0 + ncols) {
            const int64_t n = j / P, p = j % P, len = std::min(j0 + ncols - j, P - p);
            char* dst = static_cast<char*>(y) + ((n * m_ + o) * P + p) * out_bytes;
            if (raw) {
              int32_t* d = reinterpret_cast<int32_t*>(dst);
              const int32_t* a = acc + (j - j0);
              const int32_t b = cw.bias[static_cast<size_t>(o)];
              for (int64_t i = 0; i < len; ++i) d[i] = a[i] + b;
            } else {
              edge_segment(isa, L, o, acc + (j - j0), cw.bias[static_cast<size_t>(o)], dst, len);
            }
            j += len;
          }
        }
        if (res != nullptr) finish_residual(o0, rows, j0, ncols, a_tile);
      }
    };
    if (bands != nullptr) {
      // one task per band (group_ == 1): the padded rows its conv rows read, of its image, into this thread's own
      // image buffer (adjacent bands both build the rows they share), its panels, every row tile, its done()
      parallel_for(ctx, bands->cols.size(), [&](size_t t) {
        const auto [b0, b1] = bands->cols[t];
        const int64_t n = b0 / P, oy0 = (b0 - n * P) / g.ow, oy1 = (b1 - 1 - n * P) / g.ow + 1;
        const int64_t r0 = oy0 * sh_, r1 = (oy1 - 1) * sh_ + (kh_ - 1) * dh_ + 1;
        int32_t* const img = thread_scratch<int32_t>(0, image_size);
        for (int64_t q = 0; q < nq; ++q) {
          const int64_t plane = n * nq + q;
          build_image_rows(cw, g, x, plane, r0, r1, img + plane * np);
        }
        const auto [o0, o1] = bands->rows.empty() ? std::pair<int64_t, int64_t>(0, mg) : bands->rows[t];
        int32_t* const dst = thread_scratch<int32_t>(3, static_cast<size_t>(panel_elems));
        for (int64_t j0 = b0; j0 < b1; j0 += nr) {
          const int64_t ncols = std::min(nr, b1 - j0);
          const int32_t* bp = nullptr;
          const size_t ldb = panel_b(img, j0, ncols, dst, &bp);
          rows_x_panel(j0, ncols, bp, ldb, o0, o1);
        }
        bands->done(t);
      });
      continue;
    }
    if (panels >= 8 && !streamed) {
      // enough panels to share out: one pass, each task packs its panel and runs every row tile over it
      parallel_for(ctx, static_cast<size_t>(panels), [&](size_t t) {
        const int64_t j0 = static_cast<int64_t>(t) * nr, ncols = std::min(nr, J - j0);
        const int32_t* bp = nullptr;
        const size_t ldb = panel_b(x2, j0, ncols, thread_scratch<int32_t>(3, static_cast<size_t>(panel_elems)), &bp);
        rows_x_panel(j0, ncols, bp, ldb, 0, mg);
      });
      continue;
    }
    // few panels (small late layers at batch 1), or streamed: pack them, then share out row chunks × panels
    int32_t* const packed = thread_scratch<int32_t>(1, static_cast<size_t>(std::min(per_block, panels) * panel_elems));
    for (int64_t b0 = 0; b0 < panels; b0 += per_block) {
      const int64_t nb = std::min(per_block, panels - b0);
      std::vector<const int32_t*> bps(static_cast<size_t>(nb));   // nb < 8 unless streamed
      std::vector<size_t> ldbs(static_cast<size_t>(nb));
      parallel_for(ctx, static_cast<size_t>(nb), [&](size_t t) {
        const int64_t j0 = (b0 + static_cast<int64_t>(t)) * nr;
        ldbs[t] = panel_b(x2, j0, std::min(nr, J - j0), packed + static_cast<int64_t>(t) * panel_elems, &bps[t]);
      });
      parallel_for(ctx, static_cast<size_t>(nb * row_chunks), [&](size_t t) {
        const int64_t i = static_cast<int64_t>(t) % nb, chunk = static_cast<int64_t>(t) / nb;
        const int64_t j0 = (b0 + i) * nr;
        rows_x_panel(j0, std::min(nr, J - j0), bps[i], ldbs[i], chunk * row_chunk, std::min(mg, (chunk + 1) * row_chunk));
      });
    }
  }
}

// the longest K (in k-groups: int16 pairs or u8 quads) for which QConvMaxPool takes the pool tiles
constexpr int64_t kPoolTileMaxK = 32;

std::string QConvKernel::pool_tiles_refusal(const ConvWeights& cw) const {
  if (!pool_tiles_allowed_) return "WQCOMPILE_NO_POOL_TILES is set";
  if (cw.u8 ? isa_->gemm_tile_u8_pool_edge == nullptr : isa_->gemm_tile_pool_edge == nullptr)
    return std::string("the ") + isa_->name + " instruction set has no pool tile";
  if (!cw.filters.empty() || group_ != 1) return "the convolution is depthwise or grouped";
  if (pool_.kh != 2 || pool_.kw != 2 || pool_.sh != 2 || pool_.sw != 2 ||
      std::any_of(std::begin(pool_.pads), std::end(pool_.pads), [](int64_t p) { return p != 0; }))
    return "the pool is not 2x2 with stride 2 and no pads";
  // With a long K the multiply-adds dominate, and there the plain tile wins: 8 weight broadcasts per 24 of them
  // (the pool tile: 8 per 16) and 48 columns of any pixels (the pool tile: whole kPoolLanes positions, so MNIST's
  // conv2, 7x7 pooled, fills 49 of 64). Measured, MNIST (8,8) one thread: conv1 (K = 9, 6 tap pairs) 17.3 -> 14.3
  // µs, conv2 (K = 288, 144 pairs) 57 -> 69 µs.
  if (cw.kg > kPoolTileMaxK)
    return "its K is long (" + std::to_string(cw.kg) + " k-groups > " + std::to_string(kPoolTileMaxK) + ")";
  return "";
}

// QConvMaxPool with a 2x2, stride-2 pool: the pooled levels straight from the pool tiles
// (IsaKernels::gemm_tile_pool_edge), without the int32 accumulators of the whole convolution output in memory,
// their max_pool_i32 pass and its quantizer pass. A task is an image, or at a batch below the thread count a band of
// its pooled rows (the session's count, or 2 when unknown): it builds the padded image rows its conv rows read (its
// own copy), then per kPoolLanes pooled positions packs a pool panel and runs every row tile over it.
void QConvKernel::run_pool_tiles(OrtKernelContext* ctx, const ConvWeights& cw, const Geometry& g, const InputView& x,
                                 uint8_t* y, int64_t ph, int64_t pw) const {
  const IsaKernels& isa = *isa_;
  const int64_t nq = (cg_ + cw.lanes - 1) / cw.lanes, kg = cw.kg, mr = isa.mr;
  const int64_t hp = g.h + g.pt + g.pb, wp = g.w + g.pl + g.pr, np = hp * wp, pooled = ph * pw;
  checked_numel({nq, hp, wp}, where_, "padded input");
  const int64_t threads = threads_ > 0 ? threads_ : 2;
  const int64_t bands = g.n >= threads ? 1 : std::min(ph, (threads + g.n - 1) / g.n);
  // one image's planes + 64 int32: the packer reads up to 31 int32 past a run (PanelPack)
  const size_t image_size = static_cast<size_t>(nq * np + 64);
  constexpr int64_t kHalf = 2 * kPoolLanes;   // columns of a half-panel: the pixels dx = 0, 1 of one row dy
  const size_t panel_size = static_cast<size_t>(2 * kg * kHalf);
  parallel_for(ctx, static_cast<size_t>(g.n * bands), [&](size_t t) {
    const int64_t n = static_cast<int64_t>(t) / bands, b = static_cast<int64_t>(t) % bands;
    const int64_t r0 = ph * b / bands, r1 = ph * (b + 1) / bands;   // pooled rows
    if (r1 <= r0) return;
    // the padded rows conv rows 2 r0 .. 2 r1 - 1 read
    const int64_t i0 = 2 * r0 * sh_, i1 = (2 * r1 - 1) * sh_ + (kh_ - 1) * dh_ + 1;
    int32_t* const img = thread_scratch<int32_t>(0, image_size);
    for (int64_t q = 0; q < nq; ++q) build_image_rows(cw, g, x, n * nq + q, i0, i1, img + q * np);
    int32_t* const panel = thread_scratch<int32_t>(3, panel_size);
    for (int64_t p0 = r0 * pw; p0 < r1 * pw; p0 += kPoolLanes) {
      const int64_t count = std::min<int64_t>(kPoolLanes, r1 * pw - p0);
      // a partial panel: its unused lanes read zeros (their results are never stored)
      if (count < kPoolLanes) std::memset(panel, 0, sizeof(int32_t) * panel_size);
      for (int64_t dy = 0; dy < 2; ++dy) {   // half dy: column kPoolLanes · dx + l = conv pixel (2py + dy, 2px + dx)
        PanelRun runs[4 * kPoolLanes];
        int nruns = 0;
        for (int64_t dx = 0; dx < 2; ++dx)
          for (int64_t p = p0; p < p0 + count;) {   // a run per pooled row: conv columns 2 apart
            const int64_t py = p / pw, px = p % pw, len = std::min(p0 + count - p, pw - px);
            runs[nruns++] = PanelRun{(2 * py + dy) * sh_ * wp + (2 * px + dx) * sw_,
                                     static_cast<int32_t>(kPoolLanes * dx + (p - p0)), static_cast<int32_t>(len)};
            p += len;
          }
        isa.pack_panel(panel_pack(cw, g, img, runs, nruns, 2 * sw_, panel + dy * kg * kHalf, kHalf, kHalf));
      }
      for (int64_t o0 = 0; o0 < m_; o0 += mr) {
        const int rows = static_cast<int>(std::min(mr, m_ - o0));
        void* out[8];
        for (int r = 0; r < rows; ++r) out[r] = y + (n * m_ + o0 + r) * pooled + p0;
        const size_t at = static_cast<size_t>(o0);
        const TileEdge edge{cw.bias.data() + at, cw.row_tables.data() + at, cw.row_scales.data() + at, out};
        if (cw.u8)
          isa.gemm_tile_u8_pool_edge(cw.a8.data() + o0 * 4 * kg, static_cast<size_t>(4 * kg),
                                     reinterpret_cast<const uint8_t*>(panel), 4 * kHalf, static_cast<size_t>(kg), rows,
                                     static_cast<int>(count), edge);
        else
          isa.gemm_tile_pool_edge(cw.a.data() + o0 * 2 * kg, static_cast<size_t>(2 * kg),
                                  reinterpret_cast<const int16_t*>(panel), 2 * kHalf, static_cast<size_t>(kg), rows,
                                  static_cast<int>(count), edge);
      }
    }
  });
}

// QConvMaxPool: chunks of images, each convolved into int32 acc + bias (thread scratch slot 6 of this thread), then
// every (image, channel) plane pooled (slots 4, 5 of the worker) and quantized.
void QConvKernel::compute_pooled(OrtKernelContext* ctx, const ConvWeights& cw, const Geometry& g,
                                 const InputView& x) const {
  const PreparedLayer& L = *cw.layer;
  // the raw accumulators below carry the bias, which a row scale must not scale (wqcompile.runtime never fuses these)
  if (L.row_scaled()) fail(where_, "QConvMaxPool does not take a row_scale");
  int64_t out[2];
  const int64_t in[2] = {g.oh, g.ow}, k[2] = {pool_.kh, pool_.kw}, s[2] = {pool_.sh, pool_.sw};
  for (int d = 0; d < 2; ++d) {
    const int64_t span = in[d] + pool_.pads[d] + pool_.pads[d + 2] - k[d];
    if (span < 0) fail(where_, "the pool kernel does not fit the padded convolution output");
    out[d] = span / s[d] + 1;
  }
  const int64_t ph = out[0], pw = out[1], plane = g.oh * g.ow, pooled = ph * pw;
  checked_numel({g.n, m_, ph, pw}, where_, "output");
  auto* y = static_cast<uint8_t*>(allocate_output(ctx, 0, {g.n, m_, ph, pw}));
  if (g.n == 0) return;
  if (cw.pool_tiles) {
    run_pool_tiles(ctx, cw, g, x, y, ph, pw);
    return;
  }
  // about 512 KiB of accumulators per chunk (at least one image)
  const int64_t per_image = m_ * plane;
  int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 17) / std::max<int64_t>(1, per_image));
  // A batch of kBatchTasks images or more runs one task per chunk (convolution, pool and quantizer in one thread, the
  // chunk at most n / kBatchTasks images): no barrier between the three steps of every chunk. On MNIST's conv1
  // (K = 9) at batch 32 those barriers cost 2 threads ~15 % (7 chunks, 3 parallel loops each).
  constexpr int64_t kBatchTasks = 8;
  const bool by_chunk = g.n >= kBatchTasks;
  if (by_chunk) chunk = std::min(chunk, g.n / kBatchTasks);
  // pooled rows [r0, r1) of one (image, channel) plane of raw accumulators, as int32 into pooled_acc (rowmax:
  // the pool's row scratch, thread_scratch slot 5 of the calling thread)
  // the conv rows [c0, c1) that pooled rows [r0, r1) read (every window meets a conv row: the pads are below the
  // kernel)
  auto conv_rows = [&](int64_t r0, int64_t r1) {
    return std::make_pair(std::max<int64_t>(0, r0 * pool_.sh - pool_.pads[0]),
                          std::min(g.oh, (r1 - 1) * pool_.sh - pool_.pads[0] + pool_.kh));
  };
  auto pool_rows = [&](const int32_t* plane_acc, int64_t r0, int64_t r1, int32_t* pooled_acc, int32_t* rowmax) {
    const auto [c0, c1] = conv_rows(r0, r1);
    PoolPlaneI32 p{};
    p.x = plane_acc + c0 * g.ow;
    p.h = c1 - c0, p.w = g.ow, p.oh = r1 - r0, p.ow = pw;
    p.kh = pool_.kh, p.kw = pool_.kw, p.sh = pool_.sh, p.sw = pool_.sw;
    p.pt = c0 - (r0 * pool_.sh - pool_.pads[0]), p.pl = pool_.pads[1];   // window of row r0 from its first conv row
    p.y = pooled_acc;
    p.rowmax = rowmax;
    isa_->max_pool_i32(p);
  };
  const size_t rowmax_size = static_cast<size_t>(g.ow + 2 * pool_.kw + 96);
  // one quantizer for every channel (QConvMaxPool always has levels out; no row scales, checked above)
  const bool one_table = L.thresholds.size() == 1;
  // pooled accumulators of `planes` consecutive (image, channel) planes from plane i0, `len` values each, into their
  // levels at out, planes out_stride bytes apart: one quantizer call over all of them when every channel has the
  // same quantizer (a call per plane and band cost ~2 µs of MNIST's 49 at one thread; through a scratch copy when
  // the outputs are not contiguous), else a call per plane (bias is already in the accumulators)
  auto quantize_planes = [&](const int32_t* acc, int64_t i0, int64_t planes, int64_t len, uint8_t* out,
                             int64_t out_stride) {
    if (!one_table) {
      for (int64_t i = 0; i < planes; ++i)
        edge_segment(*isa_, L, (i0 + i) % m_, acc + i * len, 0, out + i * out_stride, len);
      return;
    }
    const size_t count = static_cast<size_t>(planes * len);
    if (out_stride == len) {
      isa_->edge_levels(acc, out, count, 0, L.thresholds[0].get());
      return;
    }
    uint8_t* const lv = thread_scratch<uint8_t>(7, count);
    isa_->edge_levels(acc, lv, count, 0, L.thresholds[0].get());
    for (int64_t i = 0; i < planes; ++i)
      std::memcpy(out + i * out_stride, lv + i * len, static_cast<size_t>(len));
  };
  // images n0 .. n0 + cn - 1; pctx: the pool for the steps inside the chunk (nullptr: this thread)
  auto pooled_chunk = [&](int64_t n0, int64_t cn, OrtKernelContext* pctx) {
    const auto [xs, gc] = image_chunk(x, g, n0, cn);
    int32_t* raw = thread_scratch<int32_t>(6, static_cast<size_t>(cn * per_image));
    if (pctx != nullptr && threads_ != 1 && cw.filters.empty() && group_ == 1 && pool_.kh <= pool_.sh &&
        gemm_chunk_images(cw, gc) >= cn) {
      // A small batch with more than one thread: one task per band of pooled rows of an image builds the image
      // rows its conv rows read, convolves them (every channel), then pools and quantizes them, all in one thread,
      // so nothing a task reads was written by another core. As three loops split differently (image planes,
      // column panels, channel planes) half of every step's input came from the other core, with a barrier
      // between steps: in the phases of this 2-vCPU machine where that traffic is dear, MNIST (8,8) at batch 1
      // ran slower at 2 threads than at 1 (75 µs against 49; the packs and pools 2-3x their 1-thread time).
      // Measured (`wqcompile bench`, MNIST (8,8), batch 1, 2 threads, WQ / FP32): 1.04-1.07 -> 1.02-1.03 in the
      // good phase, 1.49-1.52 -> 1.15-1.19 in the bad one. At one thread (intra_op_threads = 1) the bands would
      // only add halo rows and partial panels, so the per-plane path runs. Windows that do not overlap
      // (kh ≤ sh): the bands' conv rows are disjoint (their image rows overlap: each band builds its own copy).
      // Bands of about kBandPanels panels' columns, at least 2 per image (batch 1 still splits over 2 threads;
      // MNIST's conv1 gets 2 equal bands of 8 1/6 panels each).
      constexpr int64_t kBandPanels = 8;
      const int64_t band_cols = kBandPanels * isa_->nr, row_cols = pool_.sh * g.ow;
      const int64_t bands_per_image =
          std::min(ph, std::max<int64_t>(2, ph * row_cols / std::max<int64_t>(1, band_cols)));
      std::vector<std::array<int64_t, 3>> rows;   // image, pooled rows [r0, r1) of each band
      ColumnBands bands;
      for (int64_t n = 0; n < cn; ++n)
        for (int64_t b = 0; b < bands_per_image; ++b) {
          const int64_t r0 = ph * b / bands_per_image, r1 = ph * (b + 1) / bands_per_image;
          const auto [c0, c1] = conv_rows(r0, r1);
          rows.push_back({n, r0, r1});
          bands.cols.emplace_back(n * plane + c0 * g.ow, n * plane + c1 * g.ow);
        }
      bands.done = [&](size_t t) {
        const auto [n, r0, r1] = rows[t];
        // every channel's pooled rows of the band, then their levels
        const int64_t len = (r1 - r0) * pw;
        int32_t* const acc = thread_scratch<int32_t>(4, static_cast<size_t>(m_ * len));
        int32_t* const rowmax = thread_scratch<int32_t>(5, rowmax_size);
        for (int64_t o = 0; o < m_; ++o) pool_rows(raw + (n * m_ + o) * plane, r0, r1, acc + o * len, rowmax);
        quantize_planes(acc, n * m_, m_, len, y + (n0 + n) * m_ * pooled + r0 * pw, pooled);
      };
      run_gemm_images(pctx, cw, gc, xs, raw, true, nullptr, cn, &bands);
      return;
    }
    if (!cw.filters.empty()) run_depthwise(pctx, cw, gc, xs, raw, true);
    else run_gemm(pctx, cw, gc, xs, raw, true);
    const int64_t planes = cn * m_;
    const int64_t per_task = std::max<int64_t>(1, std::min((int64_t(1) << 15) / plane, (planes + 15) / 16));
    parallel_for(pctx, static_cast<size_t>((planes + per_task - 1) / per_task), [&](size_t t) {
      const int64_t p0 = static_cast<int64_t>(t) * per_task, p1 = std::min(planes, p0 + per_task);
      int32_t* const acc = thread_scratch<int32_t>(4, static_cast<size_t>((p1 - p0) * pooled));
      int32_t* const rowmax = thread_scratch<int32_t>(5, rowmax_size);
      for (int64_t i = p0; i < p1; ++i) pool_rows(raw + i * plane, 0, ph, acc + (i - p0) * pooled, rowmax);
      quantize_planes(acc, p0, p1 - p0, pooled, y + (n0 * m_ + p0) * pooled, pooled);
    });
  };
  const int64_t chunks = (g.n + chunk - 1) / chunk;
  // images [n0, n0 + cn) in chunks, in this thread
  auto chunks_of = [&](int64_t n0, int64_t cn) {
    for (int64_t a = n0; a < n0 + cn; a += chunk) pooled_chunk(a, std::min(chunk, n0 + cn - a), nullptr);
  };
  if (!by_chunk)
    for (int64_t t = 0; t < chunks; ++t) pooled_chunk(t * chunk, std::min(chunk, g.n - t * chunk), ctx);
  else if (!by_thread_images(ctx, g.n, chunks_of))
    parallel_for(ctx, static_cast<size_t>(chunks), [&](size_t t) {
      const int64_t a = static_cast<int64_t>(t) * chunk;
      chunks_of(a, std::min(chunk, g.n - a));
    });
}

// QConvAddQRelu / QConvAddDecodeQRelu: QRelu(QConv(..) + B) with the QConv's float edge (see the top of the file).
void QConvKernel::compute_residual(OrtKernelContext* ctx, const ConvWeights& cw, const Geometry& g,
                                   const InputView& x) const {
  const bool levels = residual_ == Residual::kLevels;
  const InputView b = get_input(ctx, kResidualB, where_, "B");
  const auto want_b = levels ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  if (!b.present || b.type != want_b)
    fail(where_, std::string("B must be ") + type_name(want_b) + ", got " + (b.present ? type_name(b.type) : "nothing"));
  std::shared_ptr<const FloatThresholds> t =
      residual_thresholds_ ? residual_thresholds_
                           : prepare_qrelu_thresholds(get_input(ctx, kResidualThresholds, where_, "thresholds"), where_);
  std::shared_ptr<const DecodeTable> table;
  if (levels)
    table = residual_table_ ? residual_table_ : prepare_decode_table(get_input(ctx, kResidualTable, where_, "table"), where_);
  const std::vector<int64_t> a_shape{g.n, m_, g.oh, g.ow};
  const int64_t b_bytes = b.numel * (levels ? 1 : 4);
  if (!cw.filters.empty() || b.shape != a_shape || b_bytes <= join_min_bytes_) {
    // depthwise, B broadcasts or is small: A as the QConv writes it, then the AddQRelu kernel's pass
    float* a = thread_scratch<float>(6, static_cast<size_t>(g.n * m_ * g.oh * g.ow));
    if (g.n > 0) {
      if (!cw.filters.empty()) run_depthwise(ctx, cw, g, x, a);
      else run_gemm(ctx, cw, g, x, a);
    }
    add_qrelu_tensor(ctx, *isa_, where_, a, a_shape, b, table.get(), *t);
    return;
  }
  auto* y = static_cast<uint8_t*>(allocate_output(ctx, 0, a_shape));
  if (g.n == 0) return;
  ResidualJoin res;
  res.t = t.get();
  if (levels) {
    res.lv = b.as<uint8_t>();
    res.table = table.get();
    check_decode_levels(*isa_, where_, res.lv, b.numel, *table);   // every level, before any is decoded
  } else {
    res.b = b.as<float>();
  }
  run_gemm(ctx, cw, g, x, y, false, &res);
}

}  // namespace

Kernel* create_qconv(const OrtKernelInfo* info, const Signature& sig) { return new QConvKernel(info, sig, false); }
Kernel* create_qconv_maxpool(const OrtKernelInfo* info, const Signature& sig) {
  return new QConvKernel(info, sig, true);
}
Kernel* create_qconv_add_qrelu(const OrtKernelInfo* info, const Signature& sig) {
  return new QConvKernel(info, sig, false, Residual::kFloat);
}
Kernel* create_qconv_add_decode_qrelu(const OrtKernelInfo* info, const Signature& sig) {
  return new QConvKernel(info, sig, false, Residual::kLevels);
}

}  // namespace wq
