// Status plumbing of the custom-op glue: wq::Error and every other exception stop here.
#include "custom_op.h"

#include <new>

namespace wq {

OrtStatusPtr Kernel::ComputeV2(OrtKernelContext* ctx) noexcept {
  try {
    Compute(ctx);
    return nullptr;
  } catch (const Error& e) {
    return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, e.what());
  } catch (const Ort::Exception& e) {
    return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::bad_alloc&) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, "ai.wqcompile kernel: out of memory");
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, e.what());
  } catch (...) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, "ai.wqcompile kernel: unknown error");
  }
}

OrtStatusPtr CustomOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const noexcept {
  *kernel = nullptr;
  try {
    *kernel = factory_(info, sig_);
    return nullptr;
  } catch (const Error& e) {
    return api.CreateStatus(ORT_INVALID_ARGUMENT, e.what());
  } catch (const Ort::Exception& e) {
    return api.CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::bad_alloc&) {
    return api.CreateStatus(ORT_FAIL, "ai.wqcompile kernel creation: out of memory");
  } catch (const std::exception& e) {
    return api.CreateStatus(ORT_FAIL, e.what());
  } catch (...) {
    return api.CreateStatus(ORT_FAIL, "ai.wqcompile kernel creation: unknown error");
  }
}

std::string where_of(const char* op, const OrtKernelInfo* info) {
  return std::string(op) + " '" + node_name(info) + "'";
}

}  // namespace wq
