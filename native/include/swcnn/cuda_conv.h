// The fused Winograd F(2x2, 3x3) forward convolution on NVIDIA tensor cores.
//
// Same layouts and semantics as swcnn/conv.h (x NHWC, u [16, C, K], y NHWC
// cropped), for float32, bfloat16 or float16 x, u and y. One kernel launch
// does the input transform and Winograd ReLU, the 16 per-position products
// (tensor-core MMA, float32 accumulation) and the output transform: the
// transformed tiles never reach device memory. Nothing is validated here
// (front doors call swcnn::validate first); each function enqueues its kernel
// on `stream` and returns the launch status (0 or a cudaError_t).
#pragma once

#include <cstdint>

#include "swcnn/conv.h"
#include "swcnn/cuda_transforms.h"

namespace swcnn {

// How float32 products run. kTf32 rounds both operands to TF32 (10-bit
// mantissa), as cuDNN and cuBLAS do by default on Ampere and newer; kTf32x3
// splits each operand into a TF32 head and tail and sums three products,
// which is accurate to about float32 rounding at three times the MMA work.
enum class Float32Products : int { kTf32 = 0, kTf32x3 = 1 };

int conv_forward_cuda(const float* x, const float* u, const ConvShape& s, bool relu,
                      Float32Products products, float* y, CudaStream stream);
// bfloat16 / float16 data as raw 16-bit words; products in that type,
// accumulated in float32, and the output transform in float32.
int conv_forward_cuda_bf16(const uint16_t* x, const uint16_t* u, const ConvShape& s, bool relu,
                           uint16_t* y, CudaStream stream);
int conv_forward_cuda_f16(const uint16_t* x, const uint16_t* u, const ConvShape& s, bool relu,
                          uint16_t* y, CudaStream stream);

}  // namespace swcnn
