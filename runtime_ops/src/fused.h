// What the runtime-internal fused ops share (add_qrelu.cc, qconv.cc): QRelu thresholds and QDecode tables read
// and checked as QRelu / QDecode do, and the AddQRelu computation over whole tensors (numpy broadcasting).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "integer_gemm.h"

namespace wq {

struct DecodeTable {
  int64_t size = 0;
  alignas(64) float values[256] = {};   // zero past size
  // right after values: byte b of each value (IsaKernels::add_qrelu's table layout, read by the AVX-512 VBMI path)
  alignas(64) uint8_t planes[4][256] = {};
};
static_assert(offsetof(DecodeTable, planes) == offsetof(DecodeTable, values) + sizeof(float) * 256,
              "the byte planes must follow the values");

std::shared_ptr<const FloatThresholds> prepare_qrelu_thresholds(const InputView& t, const std::string& where);
std::shared_ptr<const DecodeTable> prepare_decode_table(const InputView& t, const std::string& where);
// every level < table.size, else the QDecode error
void check_decode_levels(const IsaKernels& isa, const std::string& where, const uint8_t* lv, int64_t n,
                         const DecodeTable& table);
// output 0 = QRelu(A + B) (B float32, or table[B] when table is not null), shape = broadcast(A, B)
void add_qrelu_tensor(OrtKernelContext* ctx, const IsaKernels& isa, const std::string& where, const float* a,
                      const std::vector<int64_t>& a_shape, const InputView& b, const DecodeTable* table,
                      const FloatThresholds& t);

}  // namespace wq
