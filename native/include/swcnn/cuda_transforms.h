// CUDA implementations of the Winograd F(2x2, 3x3) transforms.
//
// Same layouts and semantics as swcnn/transforms.h (the CPU kernels); each
// function validates nothing (front doors call swcnn::validate first),
// enqueues its kernel on `stream` and returns the launch status.
#pragma once

#include "swcnn/transforms.h"

struct CUstream_st;

namespace swcnn {

using CudaStream = CUstream_st*;

// Returns 0 (cudaSuccess) or the cudaError_t of the launch.
int input_transform_cuda(const float* x, const InputTransformShape& s, bool relu, float* v,
                         CudaStream stream);
int input_transform_backward_cuda(const float* dv, const float* v, const InputTransformShape& s,
                                  bool relu, float* dx, CudaStream stream);
int output_transform_cuda(const float* m, const OutputTransformShape& s, float* y,
                          CudaStream stream);
int output_transform_backward_cuda(const float* dy, const OutputTransformShape& s, float* dm,
                                   CudaStream stream);

// The message of a cudaError_t returned above.
const char* cuda_error_string(int error);

}  // namespace swcnn
