// The per-tile transforms of the CPU kernels: the arithmetic of
// swcnn/tile_arithmetic.h (shared with the CUDA kernels) applied to every
// channel of one tile.
//
// Channels are the inner, contiguous loop, so it vectorizes. They
// are force-inlined so that each caller compiles them for its own
// instruction set (the multiversioned transforms, the fused kernels).
// Pixel pointers come from tile_pixels / output_pixels: pixels outside the
// image point at a zero buffer (reads) or a scratch sink (writes), which is
// how padding and cropping are handled without branches in the inner loop.
#pragma once

#include <algorithm>
#include <cstdint>

#include "swcnn/tile_arithmetic.h"
#include "swcnn/transforms.h"

#if defined(__GNUC__) && !defined(__clang__)
#define SWCNN_IVDEP _Pragma("GCC ivdep")
#elif defined(__clang__)
#define SWCNN_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#else
#define SWCNN_IVDEP
#endif

#define SWCNN_TILE_INLINE inline __attribute__((always_inline))

namespace swcnn::tile {

// v[t] = (B^T d B)[t] for one tile; d: 16 row-major pixel pointers, out: 16
// position pointers. `lo` is 0 for relu and -inf otherwise.
SWCNN_TILE_INLINE
void input_tile(const float* const* d, float* const* out, int64_t channels, float lo) {
  SWCNN_IVDEP
  for (int64_t ch = 0; ch < channels; ++ch) {
    float pixels[16], v[16];
    for (int t = 0; t < 16; ++t) pixels[t] = d[t][ch];
    input_values(pixels, v);
    for (int t = 0; t < 16; ++t) out[t][ch] = std::max(v[t], lo);
  }
}

// dx[r][s] += (B g B^T)[r][s] for one tile, g = dv masked by (v > 0) if kMask.
template <bool kMask>
SWCNN_TILE_INLINE void input_tile_backward_loop(const float* const* dv_ptrs,
                                                const float* const* v_ptrs,
                                                float* const* dx_ptrs, int64_t channels) {
  // Local copies of the pointers: the compiler then knows they stay put while
  // dx is written, and vectorizes the channel loop.
  const float* dv[16];
  const float* v[16];
  float* dx[16];
  for (int t = 0; t < 16; ++t) {
    dv[t] = dv_ptrs[t];
    v[t] = kMask ? v_ptrs[t] : nullptr;
    dx[t] = dx_ptrs[t];
  }
  SWCNN_IVDEP
  for (int64_t ch = 0; ch < channels; ++ch) {
    float g[16], sums[16];
    for (int t = 0; t < 16; ++t) g[t] = kMask ? (v[t][ch] > 0.0f ? dv[t][ch] : 0.0f) : dv[t][ch];
    input_backward_values(g, sums);
    for (int t = 0; t < 16; ++t) dx[t][ch] += sums[t];
  }
}

// dx[r][s] += (B dv B^T)[r][s] for one tile, dv masked by (v > 0) if v != null.
SWCNN_TILE_INLINE
void input_tile_backward(const float* const* dv, const float* const* v,
                         float* const* dx, int64_t channels) {
  if (v != nullptr)
    input_tile_backward_loop<true>(dv, v, dx, channels);
  else
    input_tile_backward_loop<false>(dv, v, dx, channels);
}

// y = A^T m A for one tile; y: 4 output pointers (row-major 2x2).
SWCNN_TILE_INLINE
void output_tile(const float* const* m, float* const* y, int64_t channels) {
  SWCNN_IVDEP
  for (int64_t k = 0; k < channels; ++k) {
    float q[16], out[4];
    for (int t = 0; t < 16; ++t) q[t] = m[t][k];
    output_values(q, out);
    for (int a = 0; a < 4; ++a) y[a][k] = out[a];
  }
}

// dm = A dy A^T for one tile; dy: 4 pointers (row-major 2x2).
SWCNN_TILE_INLINE
void output_tile_backward(const float* const* dy, float* const* dm, int64_t channels) {
  SWCNN_IVDEP
  for (int64_t k = 0; k < channels; ++k) {
    float block[4], out[16];
    for (int a = 0; a < 4; ++a) block[a] = dy[a][k];
    output_backward_values(block, out);
    for (int t = 0; t < 16; ++t) dm[t][k] = out[t];
  }
}

// Pointers to the 16 input pixels of tile (n, ty, tx); out-of-image pixels
// point at `outside` (zeros for reading, a scratch sink for writing).
template <typename T>
void tile_pixels(T* image, const InputTransformShape& s, int64_t ty, int64_t tx,
                 T* outside, T** pixels) {
  for (int r = 0; r < 4; ++r) {
    const int64_t row = 2 * ty - s.pad_top + r;
    for (int c = 0; c < 4; ++c) {
      const int64_t col = 2 * tx - s.pad_left + c;
      const bool inside = row >= 0 && row < s.height && col >= 0 && col < s.width;
      pixels[4 * r + c] = inside ? image + (row * s.width + col) * s.channels : outside;
    }
  }
}

// Pointers to the 2x2 output pixels of a tile; cropped ones point at `outside`.
template <typename T>
void output_pixels(T* y, const OutputTransformShape& s, int64_t n, int64_t ty,
                   int64_t tx, T* outside, T** pixels) {
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      const int64_t row = 2 * ty + i, col = 2 * tx + j;
      const bool inside = row < s.out_h && col < s.out_w;
      pixels[2 * i + j] =
          inside ? y + ((n * s.out_h + row) * s.out_w + col) * s.channels : outside;
    }
  }
}

}  // namespace swcnn::tile
