// The fused Winograd F(2x2, 3x3) convolution on the CPU: forward and backward
// in one pass each, with no transformed-tile tensor in main memory.
//
// Layouts (float32):
//   x  : [N, H, W, C]        NHWC input
//   u  : [16, C, K]          Winograd-domain kernel, position t = 4 * i + j
//                            (a (4, 4, C, K) kernel is this array as it is)
//   y  : [N, OH, OW, K]      NHWC output, cropped to OH x OW
// Tiles and padding are those of transforms.h: tile (n, ty, tx) reads input
// rows 2*ty - pad_top + [0, 4) and columns 2*tx - pad_left + [0, 4).
//
//   y = A^T [ sum_c u[., c, k] * act(B^T d B)[., c] ] A   per tile d,
// where act is relu (the Winograd-ReLU layer) or the identity.
//
// A thread takes a block of tiles, transforms it into a cache-resident
// buffer, runs the 16 per-position products on it with a register-blocked
// micro-kernel (AVX-512, AVX2 or baseline x86-64, picked at load time), and
// writes the output transform straight into y. The backward pass has the
// same structure for dx, and computes du position by position over all
// tiles in a fixed order, so its result does not depend on the thread count.
#pragma once

#include <cstdint>
#include <string>

#include "swcnn/transforms.h"

namespace swcnn {

struct ConvShape {
  int64_t batch = 0, height = 0, width = 0, in_channels = 0, out_channels = 0;
  int64_t pad_top = 0, pad_left = 0, tiles_h = 0, tiles_w = 0, out_h = 0, out_w = 0;

  SWCNN_HOST_DEVICE int64_t num_tiles() const { return batch * tiles_h * tiles_w; }
  InputTransformShape input() const {
    return {batch, height, width, in_channels, pad_top, pad_left, tiles_h, tiles_w};
  }
  OutputTransformShape output() const {
    return {batch, tiles_h, tiles_w, out_channels, out_h, out_w};
  }
};

// Empty when the shape is supported, else a message naming the problem.
std::string validate(const ConvShape& s);

// y = the convolution of x with u. Throws std::invalid_argument for a shape
// `validate` refuses, and std::bad_alloc when scratch memory runs out.
void conv_forward_cpu(const float* x, const float* u, const ConvShape& s, bool relu,
                      float* y);

// Gradients of the forward pass: dx [N, H, W, C] and du [16, C, K] from x, u
// and dy [N, OH, OW, K]. Either output may be null to skip it. Throws like
// conv_forward_cpu.
void conv_backward_cpu(const float* x, const float* u, const float* dy, const ConvShape& s,
                       bool relu, float* dx, float* du);

// The instruction set the fused kernels run with here: "avx512", "avx2" or
// "baseline".
const char* conv_isa();

// Floats per vector of that instruction set (16, 8 or 4).
int64_t vector_floats();

}  // namespace swcnn
