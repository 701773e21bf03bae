// Winograd F(2x2, 3x3) transforms: plain C++ kernels on raw pointers.
//
// No framework headers here: the nanobind module (numpy) and the XLA
// custom-call bindings (JAX FFI; TensorFlow's legacy custom calls) are thin
// front doors over these functions. Every front door calls `validate` and
// refuses the call before a kernel runs when it returns a message.
//
// Layouts (docs/design.md, section 1):
//   x : [N, H, W, C]            NHWC input, float32
//   v : [16, N * TH * TW, C]    transformed tiles, position t = 4 * i + j
//   m : [16, N * TH * TW, K]    per-position products (v[t] @ u[t])
//   y : [N, OH, OW, K]          NHWC output, cropped to OH x OW
// Tile p = (n * TH + ty) * TW + tx reads input rows 2*ty - pad_top + [0, 4)
// and columns 2*tx - pad_left + [0, 4); out-of-range pixels are zero.
#pragma once

#include <cstdint>
#include <string>

// The shape structs are shared with the CUDA kernels.
#if defined(__CUDACC__)
#define SWCNN_HOST_DEVICE __host__ __device__
#else
#define SWCNN_HOST_DEVICE
#endif

namespace swcnn {

struct InputTransformShape {
  int64_t batch = 0, height = 0, width = 0, channels = 0;
  int64_t pad_top = 0, pad_left = 0;
  int64_t tiles_h = 0, tiles_w = 0;
  SWCNN_HOST_DEVICE int64_t num_tiles() const { return batch * tiles_h * tiles_w; }
};

struct OutputTransformShape {
  int64_t batch = 0, tiles_h = 0, tiles_w = 0, channels = 0;
  int64_t out_h = 0, out_w = 0;
  SWCNN_HOST_DEVICE int64_t num_tiles() const { return batch * tiles_h * tiles_w; }
};

// Return an empty string when the shape is supported, else a message naming
// the problem (front doors turn it into their own exception or error type).
std::string validate(const InputTransformShape& s);
std::string validate(const OutputTransformShape& s);

// Forward input transform: v = B^T d B for every 4x4 tile d of the
// zero-padded input, followed by relu when `relu` is set.
void input_transform_cpu(const float* x, const InputTransformShape& s,
                         bool relu, float* v);

// Backward of the input transform: dx = sum over tiles of B dv B^T, where dv
// is first masked by (v > 0) when `relu` is set (`v` is the forward output;
// it may be null when relu is false). Overlapping tiles accumulate.
void input_transform_backward_cpu(const float* dv, const float* v,
                                  const InputTransformShape& s, bool relu,
                                  float* dx);

// Forward output transform: y = A^T m A for every tile, written to the tile's
// 2x2 output block and cropped to out_h x out_w.
void output_transform_cpu(const float* m, const OutputTransformShape& s,
                          float* y);

// Backward of the output transform: dm = A dy A^T per tile (cropped entries
// of dy count as zero).
void output_transform_backward_cpu(const float* dy,
                                   const OutputTransformShape& s, float* dm);

}  // namespace swcnn
