// The arithmetic of one Winograd F(2x2, 3x3) tile, written once for the CPU
// and the CUDA kernels.
//
// Tiles are row-major: a 4x4 tile d and its transform v hold position
// t = 4 * i + j at index t; a 2x2 output block holds (i, j) at 2 * i + j.
// T is a float (the CUDA kernels: one thread per tile and channel) or a vector
// of floats (the CPU kernels: several channels or tiles at once, GCC vector
// extensions). Only additions and subtractions: the matrices hold 0 and +-1.
//
//   B^T = [1  0 -1  0]      A^T = [1  1  1  0]
//         [0  1  1  0]            [0  1 -1 -1]
//         [0 -1  1  0]
//         [0  1  0 -1]
#pragma once

// Force-inlined, with the loops unrolled, so that the arrays stay in registers
// (and each CPU caller compiles the code for its own instruction set).
#if defined(__CUDACC__)
#define SWCNN_TILE_FN __host__ __device__ __forceinline__
#define SWCNN_UNROLL _Pragma("unroll")
#else
#define SWCNN_TILE_FN inline __attribute__((always_inline))
#define SWCNN_UNROLL _Pragma("GCC unroll 4")
#endif

namespace swcnn::tile {

// v = B^T d B (before any Winograd ReLU).
template <typename T>
SWCNN_TILE_FN void input_values(const T* d, T* v) {
  T t[4][4];
  SWCNN_UNROLL
  for (int c = 0; c < 4; ++c) {  // rows: B^T d
    t[0][c] = d[c] - d[8 + c];
    t[1][c] = d[4 + c] + d[8 + c];
    t[2][c] = d[8 + c] - d[4 + c];
    t[3][c] = d[4 + c] - d[12 + c];
  }
  SWCNN_UNROLL
  for (int r = 0; r < 4; ++r) {  // columns: (B^T d) B
    v[4 * r + 0] = t[r][0] - t[r][2];
    v[4 * r + 1] = t[r][1] + t[r][2];
    v[4 * r + 2] = t[r][2] - t[r][1];
    v[4 * r + 3] = t[r][1] - t[r][3];
  }
}

// dx = B g B^T: the input transform's backward for one tile's gradient g
// (already masked by the Winograd ReLU where there is one).
template <typename T>
SWCNN_TILE_FN void input_backward_values(const T* g, T* dx) {
  T q[4][4];
  SWCNN_UNROLL
  for (int b = 0; b < 4; ++b) {  // rows: B g (B = (B^T)^T)
    q[0][b] = g[b];
    q[1][b] = g[4 + b] - g[8 + b] + g[12 + b];
    q[2][b] = g[4 + b] + g[8 + b] - g[b];
    q[3][b] = -g[12 + b];
  }
  SWCNN_UNROLL
  for (int r = 0; r < 4; ++r) {  // columns: (B g) B^T
    dx[4 * r + 0] = q[r][0];
    dx[4 * r + 1] = q[r][1] - q[r][2] + q[r][3];
    dx[4 * r + 2] = q[r][1] + q[r][2] - q[r][0];
    dx[4 * r + 3] = -q[r][3];
  }
}

// y = A^T m A: a tile's 2x2 output block from its 16 products.
template <typename T>
SWCNN_TILE_FN void output_values(const T* m, T* y) {
  T r0[4], r1[4];
  SWCNN_UNROLL
  for (int c = 0; c < 4; ++c) {  // rows: A^T m
    r0[c] = m[c] + m[4 + c] + m[8 + c];
    r1[c] = m[4 + c] - m[8 + c] - m[12 + c];
  }
  y[0] = r0[0] + r0[1] + r0[2];  // columns: (A^T m) A
  y[1] = r0[1] - r0[2] - r0[3];
  y[2] = r1[0] + r1[1] + r1[2];
  y[3] = r1[1] - r1[2] - r1[3];
}

// dm = A dy A^T: the output transform's backward for one 2x2 block dy.
template <typename T>
SWCNN_TILE_FN void output_backward_values(const T* dy, T* dm) {
  T r[4][2];
  SWCNN_UNROLL
  for (int j = 0; j < 2; ++j) {  // rows: A dy
    r[0][j] = dy[j];
    r[1][j] = dy[j] + dy[2 + j];
    r[2][j] = dy[j] - dy[2 + j];
    r[3][j] = -dy[2 + j];
  }
  SWCNN_UNROLL
  for (int a = 0; a < 4; ++a) {  // columns: (A dy) A^T
    dm[4 * a + 0] = r[a][0];
    dm[4 * a + 1] = r[a][0] + r[a][1];
    dm[4 * a + 2] = r[a][0] - r[a][1];
    dm[4 * a + 3] = -r[a][1];
  }
}

}  // namespace swcnn::tile
