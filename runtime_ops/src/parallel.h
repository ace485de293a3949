// parallel_for over onnxruntime's intra-op thread pool (included by common.h).
#pragma once

#include <atomic>
#include <exception>
#include <mutex>
#include <string>
#include <type_traits>

namespace wq {
namespace detail {

template <typename Fn>
struct ParallelJob {
  Fn* fn;
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::string message;

  static void run(void* self, size_t i) {
    auto* job = static_cast<ParallelJob*>(self);
    if (job->failed.load(std::memory_order_relaxed)) return;
    try {
      (*job->fn)(i);
    } catch (const std::bad_alloc&) {
      job->record("out of memory");
    } catch (const std::exception& e) {
      job->record(e.what());
    } catch (...) {
      job->record("unknown error in a parallel task");
    }
  }
  void record(const char* what) {
    std::lock_guard<std::mutex> lock(mu);
    if (!failed.load()) message = what;
    failed.store(true);
  }
};

}  // namespace detail

template <typename Fn>
void parallel_for(OrtKernelContext* ctx, size_t total, Fn&& fn) {
  if (total == 0) return;
  if (total == 1 || ctx == nullptr) {
    for (size_t i = 0; i < total; ++i) fn(i);
    return;
  }
  using F = std::remove_reference_t<Fn>;
  detail::ParallelJob<F> job;
  job.fn = &fn;
  OrtStatus* status = Ort::GetApi().KernelContext_ParallelFor(ctx, &detail::ParallelJob<F>::run, total, 0, &job);
  if (status != nullptr) {
    std::string msg = Ort::GetApi().GetErrorMessage(status);
    Ort::GetApi().ReleaseStatus(status);
    throw Error("parallel loop failed: " + msg);
  }
  if (job.failed.load()) throw Error(job.message);
}

}  // namespace wq
