// The glue between a kernel class and onnxruntime's OrtCustomOp: one fully typed overload per signature, kernel
// creation and compute behind try/catch so that only OrtStatus values cross the C ABI.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common.h"

namespace wq {

// A kernel: created once per node and session, Compute() may be called concurrently from several threads.
class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual void Compute(OrtKernelContext* ctx) = 0;

  OrtStatusPtr ComputeV2(OrtKernelContext* ctx) noexcept;
};

// One overload of an op: its name, the element type of every input (the first `required` are required, the rest
// optional) and of every output.
struct Signature {
  const char* name;
  std::vector<ONNXTensorElementDataType> inputs;
  size_t required;
  std::vector<ONNXTensorElementDataType> outputs;
};

using KernelFactory = std::function<Kernel*(const OrtKernelInfo*, const Signature&)>;

class CustomOp : public Ort::CustomOpBase<CustomOp, Kernel, /*WithStatus=*/true> {
 public:
  CustomOp(Signature sig, KernelFactory factory) : sig_(std::move(sig)), factory_(std::move(factory)) {}

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const noexcept;
  const char* GetName() const { return sig_.name; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return sig_.inputs.size(); }
  ONNXTensorElementDataType GetInputType(size_t i) const { return sig_.inputs[i]; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i < sig_.required ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return sig_.outputs.size(); }
  ONNXTensorElementDataType GetOutputType(size_t i) const { return sig_.outputs[i]; }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t) const { return INPUT_OUTPUT_REQUIRED; }

 private:
  Signature sig_;
  KernelFactory factory_;
};

// "QConv 'conv1'" for error messages.
std::string where_of(const char* op, const OrtKernelInfo* info);

}  // namespace wq
