// The kernel factories, one per op file (qconv.cc, qgemm.cc, qrelu.cc, qdecode.cc, level_maxpool.cc); register.cc's
// table uses them.
#pragma once

#include "custom_op.h"

namespace wq {

Kernel* create_qconv(const OrtKernelInfo* info, const Signature& sig);
Kernel* create_qgemm(const OrtKernelInfo* info, const Signature& sig);
Kernel* create_qrelu(const OrtKernelInfo* info, const Signature& sig);
Kernel* create_qdecode(const OrtKernelInfo* info, const Signature& sig);
// runtime-internal (never in a stored model): wqcompile.runtime substitutes it for MaxPool on level tensors
Kernel* create_level_maxpool(const OrtKernelInfo* info, const Signature& sig);
// runtime-internal: a QConv with levels out fused with the MaxPool reading them (pools accumulators, then quantizes)
Kernel* create_qconv_maxpool(const OrtKernelInfo* info, const Signature& sig);
// runtime-internal: QRelu(Add(A, B)) and QRelu(Add(A, QDecode(B, table))) in one pass (add_qrelu.cc)
Kernel* create_add_qrelu(const OrtKernelInfo* info, const Signature& sig);
Kernel* create_add_decode_qrelu(const OrtKernelInfo* info, const Signature& sig);
// runtime-internal: a float-output QConv whose only reader is such a join, the join done on the tile edge (qconv.cc)
Kernel* create_qconv_add_qrelu(const OrtKernelInfo* info, const Signature& sig);
Kernel* create_qconv_add_decode_qrelu(const OrtKernelInfo* info, const Signature& sig);

}  // namespace wq
