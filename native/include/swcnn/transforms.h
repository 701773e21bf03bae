// Winograd F(2x2, 3x3) transforms: plain C++ kernels on raw pointers.
//
// No framework headers here: the nanobind module (numpy), and later the XLA
// custom-call bindings (JAX FFI, TensorFlow), are thin front doors over these
// functions. Shapes are validated by the callers' front doors *and* by
// `validate_*` below, which every front door calls before launching a kernel.
//
// Layouts (see DESIGN.md section 1):
//   x : [N, H, W, C]            NHWC input, float32
//   v : [16, N * TH * TW, C]    transformed tiles, position t = 4 * i + j
//   m : [16, N * TH * TW, K]    per-position products (v[t] @ u[t])
//   y : [N, OH, OW, K]          NHWC output, cropped to OH x OW
// Tile p = (n * TH + ty) * TW + tx reads input rows 2*ty - pad_top + [0, 4)
// and columns 2*tx - pad_left + [0, 4); out-of-range pixels are zero.
#pragma once

#include <cstdint>
#include <string>

namespace swcnn {

struct InputTransformShape {
  int64_t batch = 0, height = 0, width = 0, channels = 0;
  int64_t pad_top = 0, pad_left = 0;
  int64_t tiles_h = 0, tiles_w = 0;
  int64_t num_tiles() const { return batch * tiles_h * tiles_w; }
};

struct OutputTransformShape {
  int64_t batch = 0, tiles_h = 0, tiles_w = 0, channels = 0;
  int64_t out_h = 0, out_w = 0;
  int64_t num_tiles() const { return batch * tiles_h * tiles_w; }
};

// Return an empty string when the shape is supported, else a message naming
// the problem (front doors turn it into their own exception or error type).
std::string validate(const InputTransformShape& s);
std::string validate(const OutputTransformShape& s);

// v = B^T d B for every 4x4 tile d of the zero-padded input, optionally
// followed by relu (the Winograd-ReLU layer's activation).
void input_transform_cpu(const float* x, const InputTransformShape& s,
                         bool relu, float* v);

// y = A^T m A for every tile, written to the 2x2 output block of the tile and
// cropped to out_h x out_w.
void output_transform_cpu(const float* m, const OutputTransformShape& s,
                          float* y);

}  // namespace swcnn
