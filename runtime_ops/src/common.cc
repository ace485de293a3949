// Attribute and tensor access through the onnxruntime C API, with every failure turned into wq::Error.
#include "common.h"

#include <cstdlib>
#include <sstream>

namespace wq {
namespace {

const OrtApi& api() { return Ort::GetApi(); }

// Consume an OrtStatus: nullptr → true; otherwise release it and return false (message in *msg if given).
bool ok(OrtStatus* status, std::string* msg = nullptr) {
  if (status == nullptr) return true;
  if (msg != nullptr) *msg = api().GetErrorMessage(status);
  api().ReleaseStatus(status);
  return false;
}

void check(OrtStatus* status, const std::string& where, const char* what) {
  std::string msg;
  if (!ok(status, &msg)) fail(where, std::string(what) + ": " + msg);
}

}  // namespace

void fail(const std::string& where, const std::string& msg) { throw Error(where + ": " + msg); }

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << ']';
  return s.str();
}

int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& where, const char* what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail(where, std::string(what) + " has a negative dimension " + shape_str(shape));
    if (d != 0 && n > kMaxElements / d) fail(where, std::string(what) + " is too large " + shape_str(shape));
    n *= d;
  }
  return n;
}

const char* type_name(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return "int16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16: return "uint16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING: return "string";
    default: return "another type";
  }
}

InputView view_of(const OrtValue* value, const std::string& where, const char* what) {
  InputView v;
  if (value == nullptr) return v;
  int is_tensor = 0;
  check(api().IsTensor(value, &is_tensor), where, what);
  if (!is_tensor) fail(where, std::string(what) + " must be a tensor");
  OrtTensorTypeAndShapeInfo* info = nullptr;
  check(api().GetTensorTypeAndShape(value, &info), where, what);
  std::unique_ptr<OrtTensorTypeAndShapeInfo, void (*)(OrtTensorTypeAndShapeInfo*)> guard(
      info, [](OrtTensorTypeAndShapeInfo* p) { Ort::GetApi().ReleaseTensorTypeAndShapeInfo(p); });
  check(api().GetTensorElementType(info, &v.type), where, what);
  size_t ndim = 0;
  check(api().GetDimensionsCount(info, &ndim), where, what);
  v.shape.resize(ndim);
  if (ndim) check(api().GetDimensions(info, v.shape.data(), ndim), where, what);
  v.numel = checked_numel(v.shape, where, what);
  if (v.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING) fail(where, std::string(what) + " must not be a string tensor");
  void* data = nullptr;
  check(api().GetTensorMutableData(const_cast<OrtValue*>(value), &data), where, what);
  if (data == nullptr && v.numel > 0) fail(where, std::string(what) + " has no data");
  v.data = data;
  v.present = true;
  return v;
}

InputView get_input(OrtKernelContext* ctx, size_t index, const std::string& where, const char* what) {
  size_t count = 0;
  check(api().KernelContext_GetInputCount(ctx, &count), where, what);
  if (index >= count) return InputView{};
  const OrtValue* value = nullptr;
  check(api().KernelContext_GetInput(ctx, index, &value), where, what);
  return view_of(value, where, what);
}

size_t kernel_input_count(const OrtKernelInfo* info) {
  size_t count = 0;
  if (!ok(api().KernelInfo_GetInputCount(info, &count))) return 0;
  return count;
}

bool input_is_absent(const OrtKernelInfo* info, size_t index) {
  if (index >= kernel_input_count(info)) return true;
  size_t size = 0;
  if (!ok(api().KernelInfo_GetInputName(info, index, nullptr, &size))) return true;
  return size <= 1;   // the name "" (size counts the terminating NUL)
}

InputView get_constant_input(const OrtKernelInfo* info, size_t index, bool* is_constant, const std::string& where,
                             const char* what) {
  *is_constant = false;
  if (input_is_absent(info, index)) return InputView{};
  int constant = 0;
  const OrtValue* value = nullptr;
  if (!ok(api().KernelInfoGetConstantInput_tensor(info, index, &constant, &value)) || !constant || value == nullptr) {
    return InputView{};
  }
  *is_constant = true;
  return view_of(value, where, what);
}

void* allocate_output(OrtKernelContext* ctx, size_t index, const std::vector<int64_t>& shape) {
  OrtValue* value = nullptr;
  check(api().KernelContext_GetOutput(ctx, index, shape.data(), shape.size(), &value), "output", "allocation");
  if (value == nullptr) throw Error("output " + std::to_string(index) + " could not be allocated");
  void* data = nullptr;
  check(api().GetTensorMutableData(value, &data), "output", "data");
  return data;
}

std::string node_name(const OrtKernelInfo* info) {
  size_t size = 0;
  if (!ok(api().KernelInfo_GetNodeName(info, nullptr, &size)) || size == 0) return "";
  std::string name(size, '\0');
  if (!ok(api().KernelInfo_GetNodeName(info, &name[0], &size))) return "";
  name.resize(size > 0 ? size - 1 : 0);
  return name;
}

bool get_int_attr(const OrtKernelInfo* info, const char* name, int64_t* out) {
  return ok(api().KernelInfoGetAttribute_int64(info, name, out));
}

bool get_ints_attr(const OrtKernelInfo* info, const char* name, std::vector<int64_t>* out) {
  size_t size = 0;
  if (!ok(api().KernelInfoGetAttributeArray_int64(info, name, nullptr, &size))) return false;
  out->assign(size, 0);
  if (size == 0) return true;
  return ok(api().KernelInfoGetAttributeArray_int64(info, name, out->data(), &size));
}

bool get_string_attr(const OrtKernelInfo* info, const char* name, std::string* out) {
  size_t size = 0;
  if (!ok(api().KernelInfoGetAttribute_string(info, name, nullptr, &size))) return false;
  std::string s(size, '\0');
  if (size && !ok(api().KernelInfoGetAttribute_string(info, name, &s[0], &size))) return false;
  s.resize(size > 0 ? size - 1 : 0);
  *out = s;
  return true;
}

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' && v[0] != '0';
}

}  // namespace wq
