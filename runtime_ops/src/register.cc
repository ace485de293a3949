// The one registration table of the ai.wqcompile kernels and the library's only exported symbol,
// RegisterCustomOps (see wq_ops.lds).
//
// Every op is registered once per type signature it accepts (onnxruntime merges same-named overloads into one
// schema and picks the kernel by the node's types): QConv and QGemm take float32 or uint8 level inputs and
// produce float32 or uint8 levels (fused output quantizer), so each has four overloads.
//
// onnxruntime infers a custom op's output type from its *input* types only (the first overload whose declared
// input types match wins). A fused node is recognised by its int32 `thresholds` input, so the float-output
// overloads (registered first) declare that input as int64, a type no valid model gives it: a node without
// thresholds matches the float overload, a node with int32 thresholds only the uint8 one.
#include <mutex>
#include <vector>

#include "kernels.h"

namespace wq {
namespace {

constexpr auto F32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
constexpr auto U8 = ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
constexpr auto I16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16;
constexpr auto I32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
constexpr auto NO_THRESHOLDS = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;   // see above

std::vector<CustomOp*>* build_table() {
  auto* ops = new std::vector<CustomOp*>();
  for (auto y : {F32, U8}) {
    const auto thresholds = y == F32 ? NO_THRESHOLDS : I32;
    for (auto x : {F32, U8}) {
      // X, W, codebook, [x_table], [bias], [thresholds], [row_scale]
      ops->push_back(new CustomOp({"QConv", {x, U8, I16, I16, I32, thresholds, I32}, 3, {y}}, create_qconv));
      ops->push_back(new CustomOp({"QGemm", {x, U8, I16, I16, I32, thresholds, I32}, 3, {y}}, create_qgemm));
      // runtime-internal (wqcompile.runtime): QConv with levels out + MaxPool
      if (y == U8) ops->push_back(new CustomOp({"QConvMaxPool", {x, U8, I16, I16, I32, I32}, 3, {U8}}, create_qconv_maxpool));
      // runtime-internal: a float-output QConv (no thresholds) + AddQRelu / AddDecodeQRelu; the QConv's inputs,
      // then B, the QRelu thresholds and (decode) the table
      if (y == U8) {
        ops->push_back(new CustomOp({"QConvAddQRelu", {x, U8, I16, I16, I32, NO_THRESHOLDS, I32, F32, F32}, 3, {U8}},
                                    create_qconv_add_qrelu));
        ops->push_back(new CustomOp(
            {"QConvAddDecodeQRelu", {x, U8, I16, I16, I32, NO_THRESHOLDS, I32, U8, F32, F32}, 3, {U8}},
            create_qconv_add_decode_qrelu));
      }
    }
  }
  ops->push_back(new CustomOp({"QRelu", {F32, F32}, 2, {U8}}, create_qrelu));
  ops->push_back(new CustomOp({"QDecode", {U8, F32}, 2, {F32}}, create_qdecode));
  ops->push_back(new CustomOp({"LevelMaxPool", {U8}, 1, {U8}}, create_level_maxpool));   // runtime-internal
  ops->push_back(new CustomOp({"AddQRelu", {F32, F32, F32}, 3, {U8}}, create_add_qrelu));   // runtime-internal
  ops->push_back(new CustomOp({"AddDecodeQRelu", {F32, U8, F32, F32}, 4, {U8}}, create_add_decode_qrelu));
  return ops;
}

// The op objects and domains must outlive every session that uses them; they are deliberately never freed
// (a session may be destroyed after this library's static destructors would have run).
const std::vector<CustomOp*>& table() {
  static const std::vector<CustomOp*>* ops = build_table();
  return *ops;
}

}  // namespace
}  // namespace wq

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  if (api_base == nullptr) return nullptr;
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // an onnxruntime older than the headers we were built against: report it through the oldest API
    const OrtApi* old = api_base->GetApi(1);
    return old ? old->CreateStatus(ORT_FAIL, "libwq_ops needs onnxruntime >= 1.21 (ORT API 21)") : nullptr;
  }
  Ort::InitApi(api);
  try {
    static std::mutex mu;
    std::lock_guard<std::mutex> lock(mu);
    OrtCustomOpDomain* domain = nullptr;
    if (OrtStatus* s = api->CreateCustomOpDomain(wq::kDomain, &domain)) return s;
    for (wq::CustomOp* op : wq::table()) {
      if (OrtStatus* s = api->CustomOpDomain_Add(domain, op)) return s;
    }
    return api->AddCustomOpDomain(options, domain);   // the domain is kept alive for the process (see table())
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  } catch (...) {
    return api->CreateStatus(ORT_FAIL, "RegisterCustomOps: unknown error");
  }
}
