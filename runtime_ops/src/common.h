// Shared helpers of the ai.wqcompile kernels: errors, attribute and tensor access, aligned buffers, parallel loops.
//
// Error model: inside the library a violated precondition throws wq::Error; every entry point that onnxruntime
// calls (kernel creation, compute) catches it and returns an OrtStatus (ORT_INVALID_ARGUMENT), so no C++ exception
// ever crosses the C ABI (docs/op-contract.md §6, style.md §4.4).
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

namespace wq {

constexpr const char* kDomain = "ai.wqcompile";
constexpr int64_t kAccLimit = int64_t(1) << 30;   // |acc| ≤ 2^30 - 1 (op-contract §2)
// A tensor or intermediate larger than this is refused (a fuzzed "huge dims" model must fail, not allocate).
constexpr int64_t kMaxElements = int64_t(1) << 31;

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// "QConv 'conv1': message"
[[noreturn]] void fail(const std::string& where, const std::string& msg);

std::string shape_str(const std::vector<int64_t>& shape);

// Element count of a shape; throws if a dim is negative or the product exceeds kMaxElements.
int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& where, const char* what);

// A read-only view of one kernel input (present == false for an omitted optional input).
struct InputView {
  bool present = false;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  const void* data = nullptr;
  template <typename T>
  const T* as() const { return static_cast<const T*>(data); }
};

InputView view_of(const OrtValue* value, const std::string& where, const char* what);
InputView get_input(OrtKernelContext* ctx, size_t index, const std::string& where, const char* what);
// The input at `index` if onnxruntime knows it is a constant initializer at kernel creation, else present=false.
InputView get_constant_input(const OrtKernelInfo* info, size_t index, bool* is_constant, const std::string& where,
                             const char* what);
size_t kernel_input_count(const OrtKernelInfo* info);
bool input_is_absent(const OrtKernelInfo* info, size_t index);   // omitted optional input ("" in the node)
void* allocate_output(OrtKernelContext* ctx, size_t index, const std::vector<int64_t>& shape);

// Attributes: `has_*` return false when the attribute is absent (a wrong type is an error).
std::string node_name(const OrtKernelInfo* info);
bool get_int_attr(const OrtKernelInfo* info, const char* name, int64_t* out);
bool get_ints_attr(const OrtKernelInfo* info, const char* name, std::vector<int64_t>* out);
bool get_string_attr(const OrtKernelInfo* info, const char* name, std::string* out);
// an environment switch, as WQCOMPILE_NO_VBMI: set, not empty and not starting with '0'
bool env_flag(const char* name);

const char* type_name(ONNXTensorElementDataType type);

// 64-byte aligned storage for packed panels (std::vector does not guarantee alignment); zero-initialised unless
// the caller writes every element it reads.
template <typename T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t n, bool zero = true) { resize(n, zero); }
  void resize(size_t n, bool zero = true) {
    ptr_.reset();
    size_ = n;
    if (n == 0) return;
    size_t bytes = ((n * sizeof(T) + 63) / 64) * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (p == nullptr) throw std::bad_alloc();
    if (zero) std::memset(p, 0, bytes);
    ptr_.reset(static_cast<T*>(p));
  }
  T* data() { return ptr_.get(); }
  const T* data() const { return ptr_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> ptr_;
  size_t size_ = 0;
};

// Per-thread, grow-only scratch memory (uninitialised, 64-byte aligned), so large per-call buffers do not go
// back to the OS (and come back as freshly zeroed pages) on every run. `slot` separates buffers that are alive at
// the same time on one thread; a slot's previous contents are invalidated by the next call with that slot.
template <typename T>
T* thread_scratch(int slot, size_t n) {
  constexpr int kSlots = 8;
  thread_local AlignedBuffer<char> buffers[kSlots];
  if (slot < 0 || slot >= kSlots) throw Error("bad scratch slot");
  AlignedBuffer<char>& b = buffers[slot];
  const size_t bytes = n * sizeof(T) + 64;
  if (b.size() < bytes) b.resize(bytes + bytes / 4, /*zero=*/false);
  return reinterpret_cast<T*>(b.data());
}

// Run fn(i) for i in [0, total) on onnxruntime's intra-op thread pool (KernelContext_ParallelFor, API ≥ 17).
// Exceptions thrown by fn are captured and rethrown on the calling thread (never across the pool's C boundary).
// Without a pool (intra_op_num_threads = 1) onnxruntime runs the loop inline.
template <typename Fn>
void parallel_for(OrtKernelContext* ctx, size_t total, Fn&& fn);

}  // namespace wq

#include "parallel.h"
