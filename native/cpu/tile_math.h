// The per-tile arithmetic of Winograd F(2x2, 3x3), shared by the CPU kernels.
//
// Each function runs the 4x4 (or 2x2) transform of one tile for every
// channel; channels are the inner, contiguous loop, so it vectorizes. They
// are force-inlined so that each caller compiles them for its own
// instruction set (the multiversioned transforms, the fused kernels).
// Pixel pointers come from tile_pixels / output_pixels: pixels outside the
// image point at a zero buffer (reads) or a scratch sink (writes), which is
// how padding and cropping are handled without branches in the inner loop.
#pragma once

#include <algorithm>
#include <cstdint>

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
    float t[4][4];
    for (int c = 0; c < 4; ++c) {  // rows: B^T d
      const float d0 = d[c][ch], d1 = d[4 + c][ch];
      const float d2 = d[8 + c][ch], d3 = d[12 + c][ch];
      t[0][c] = d0 - d2;
      t[1][c] = d1 + d2;
      t[2][c] = d2 - d1;
      t[3][c] = d1 - d3;
    }
    for (int r = 0; r < 4; ++r) {  // columns: (B^T d) B
      out[4 * r + 0][ch] = std::max(t[r][0] - t[r][2], lo);
      out[4 * r + 1][ch] = std::max(t[r][1] + t[r][2], lo);
      out[4 * r + 2][ch] = std::max(t[r][2] - t[r][1], lo);
      out[4 * r + 3][ch] = std::max(t[r][1] - t[r][3], lo);
    }
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
    float g[16];
    for (int t = 0; t < 16; ++t) g[t] = kMask ? (v[t][ch] > 0.0f ? dv[t][ch] : 0.0f) : dv[t][ch];
    float q[4][4];
    for (int b = 0; b < 4; ++b) {  // rows: B g (B = (B^T)^T)
      const float g0 = g[b], g1 = g[4 + b], g2 = g[8 + b], g3 = g[12 + b];
      q[0][b] = g0;
      q[1][b] = g1 - g2 + g3;
      q[2][b] = g1 + g2 - g0;
      q[3][b] = -g3;
    }
    for (int r = 0; r < 4; ++r) {  // columns: (B g) B^T
      dx[4 * r + 0][ch] += q[r][0];
      dx[4 * r + 1][ch] += q[r][1] - q[r][2] + q[r][3];
      dx[4 * r + 2][ch] += q[r][1] + q[r][2] - q[r][0];
      dx[4 * r + 3][ch] -= q[r][3];
    }
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

// y[0..3] (row-major 2x2) = A^T m A for the 16 values m[t] of one tile. T is
// a float (one channel) or a vector of floats (several tiles or channels).
template <typename T>
SWCNN_TILE_INLINE void output_values(const T* m, T* y) {
  T r0[4], r1[4];
  for (int c = 0; c < 4; ++c) {  // rows: A^T m
    r0[c] = m[c] + m[4 + c] + m[8 + c];
    r1[c] = m[4 + c] - m[8 + c] - m[12 + c];
  }
  y[0] = r0[0] + r0[1] + r0[2];  // columns: (A^T m) A
  y[1] = r0[1] - r0[2] - r0[3];
  y[2] = r1[0] + r1[1] + r1[2];
  y[3] = r1[1] - r1[2] - r1[3];
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
    const float y0[2] = {dy[0][k], dy[1][k]}, y1[2] = {dy[2][k], dy[3][k]};
    float r[4][2];
    for (int j = 0; j < 2; ++j) {  // rows: A dy
      r[0][j] = y0[j];
      r[1][j] = y0[j] + y1[j];
      r[2][j] = y0[j] - y1[j];
      r[3][j] = -y1[j];
    }
    for (int a = 0; a < 4; ++a) {  // columns: (A dy) A^T
      dm[4 * a + 0][k] = r[a][0];
      dm[4 * a + 1][k] = r[a][0] + r[a][1];
      dm[4 * a + 2][k] = r[a][0] - r[a][1];
      dm[4 * a + 3][k] = -r[a][1];
    }
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
