// CUDA kernels for the Winograd F(2x2, 3x3) transforms (NHWC, float32).
//
// One thread per (tile or pixel, channel): consecutive threads of a warp take
// consecutive channels, so every global load and store is coalesced in NHWC
// and in the [16, P, C] tile layout. All four kernels are memory-bound: they
// move each element once (the backward input transform gathers instead of
// scattering, so it needs no atomics and writes each dx element once).
#include <cuda_runtime.h>

#include <cstdint>

#include "swcnn/cuda_transforms.h"
#include "swcnn/tile_arithmetic.h"
#include "tile_blocks.cuh"

namespace swcnn {
namespace {

constexpr int kThreads = 256;

int64_t blocks_for(int64_t items) { return (items + kThreads - 1) / kThreads; }

// Tile p = (n * TH + ty) * TW + tx and channel of a (tile, channel) thread index.
struct TileIndex {
  int64_t p, channel;
  TilePosition tile;
};

__device__ TileIndex tile_index(int64_t index, int64_t channels, int64_t tiles_h,
                                int64_t tiles_w) {
  const int64_t p = index / channels;
  return {p, index % channels, tile_position(p, tiles_h, tiles_w)};
}

__global__ void input_transform_kernel(const float* __restrict__ x, InputTransformShape s,
                                       bool relu, float* __restrict__ v) {
  const int64_t C = s.channels, P = s.num_tiles();
  const int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (index >= P * C) return;
  const TileIndex at = tile_index(index, C, s.tiles_h, s.tiles_w);
  const int64_t p = at.p, ch = at.channel, n = at.tile.n, ty = at.tile.ty, tx = at.tile.tx;
  const float* image = x + n * s.height * s.width * C + ch;
  float d[16];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t row = 2 * ty - s.pad_top + r;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t col = 2 * tx - s.pad_left + c;
      const bool inside = row >= 0 && row < s.height && col >= 0 && col < s.width;
      d[4 * r + c] = inside ? __ldg(image + (row * s.width + col) * C) : 0.0f;
    }
  }
  float w[16];
  tile::input_values(d, w);
  const int64_t plane = P * C;
  float* out = v + p * C + ch;
  // Not fmaxf, which returns 0 for a NaN: NaN propagates, as on the CPU and in keras.ops.
#pragma unroll
  for (int t = 0; t < 16; ++t) out[t * plane] = relu && w[t] < 0.0f ? 0.0f : w[t];
}

// The backward input transform gathers: each thread sums, for its pixel, the
// dv terms of the (up to four) tiles that hold it. Coefficient of dv[a][b] in
// dx[r][s] for one tile: B[r][a] * B[s][b] (tile::input_backward_values for
// all 16 pixels at once); kBT[a][r] below is B^T.
__constant__ float kBT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};

__global__ void input_transform_backward_kernel(const float* __restrict__ dv,
                                                const float* __restrict__ v,
                                                InputTransformShape s, bool relu,
                                                float* __restrict__ dx) {
  const int64_t C = s.channels, P = s.num_tiles(), plane = P * C;
  const int64_t total = s.batch * s.height * s.width * C;
  const int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (index >= total) return;
  const int64_t ch = index % C, pixel = index / C;
  const int64_t w = pixel % s.width, h = (pixel / s.width) % s.height;
  const int64_t n = pixel / (s.width * s.height);
  // Padded coordinates; the pixel is row r of tile ty when 2*ty + r == R.
  const int64_t R = h + s.pad_top, S = w + s.pad_left;
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t ty = R / 2 - i;
    const int r = static_cast<int>(R - 2 * ty);
    if (ty < 0 || ty >= s.tiles_h) continue;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int64_t tx = S / 2 - j;
      const int c = static_cast<int>(S - 2 * tx);
      if (tx < 0 || tx >= s.tiles_w) continue;
      const int64_t base = ((n * s.tiles_h + ty) * s.tiles_w + tx) * C + ch;
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const float ca = kBT[a][r];
        if (ca == 0.0f) continue;
#pragma unroll
        for (int b = 0; b < 4; ++b) {
          const float cb = kBT[b][c];
          if (cb == 0.0f) continue;
          const int64_t at = (4 * a + b) * plane + base;
          float g = __ldg(dv + at);
          if (relu && !(__ldg(v + at) > 0.0f)) g = 0.0f;
          sum += ca * cb * g;
        }
      }
    }
  }
  dx[index] = sum;
}

__global__ void output_transform_kernel(const float* __restrict__ m, OutputTransformShape s,
                                        float* __restrict__ y) {
  const int64_t K = s.channels, P = s.num_tiles(), plane = P * K;
  const int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (index >= P * K) return;
  const TileIndex at = tile_index(index, K, s.tiles_h, s.tiles_w);
  const int64_t p = at.p, k = at.channel;
  float q[16], out[4];
#pragma unroll
  for (int t = 0; t < 16; ++t) q[t] = __ldg(m + t * plane + p * K + k);
  tile::output_values(q, out);
  for_each_output_pixel(at.tile, s.out_h, s.out_w,
                        [&](int i, int64_t pixel) { y[pixel * K + k] = out[i]; });
}

__global__ void output_transform_backward_kernel(const float* __restrict__ dy,
                                                 OutputTransformShape s,
                                                 float* __restrict__ dm) {
  const int64_t K = s.channels, P = s.num_tiles(), plane = P * K;
  const int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (index >= P * K) return;
  const TileIndex at = tile_index(index, K, s.tiles_h, s.tiles_w);
  const int64_t p = at.p, k = at.channel;
  float g[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // cropped pixels stay zero
  for_each_output_pixel(at.tile, s.out_h, s.out_w,
                        [&](int i, int64_t pixel) { g[i] = __ldg(dy + pixel * K + k); });
  float values[16];
  tile::output_backward_values(g, values);
  float* out = dm + p * K + k;
#pragma unroll
  for (int t = 0; t < 16; ++t) out[t * plane] = values[t];
}

int launched() { return static_cast<int>(cudaGetLastError()); }

}  // namespace

int input_transform_cuda(const float* x, const InputTransformShape& s, bool relu, float* v,
                         CudaStream stream) {
  const int64_t items = s.num_tiles() * s.channels;
  if (items == 0) return 0;
  input_transform_kernel<<<blocks_for(items), kThreads, 0, stream>>>(x, s, relu, v);
  return launched();
}

int input_transform_backward_cuda(const float* dv, const float* v, const InputTransformShape& s,
                                  bool relu, float* dx, CudaStream stream) {
  const int64_t items = s.batch * s.height * s.width * s.channels;
  if (items == 0) return 0;
  input_transform_backward_kernel<<<blocks_for(items), kThreads, 0, stream>>>(dv, v, s, relu,
                                                                              dx);
  return launched();
}

int output_transform_cuda(const float* m, const OutputTransformShape& s, float* y,
                          CudaStream stream) {
  const int64_t items = s.num_tiles() * s.channels;
  if (items == 0) return 0;
  output_transform_kernel<<<blocks_for(items), kThreads, 0, stream>>>(m, s, y);
  return launched();
}

int output_transform_backward_cuda(const float* dy, const OutputTransformShape& s, float* dm,
                                   CudaStream stream) {
  const int64_t items = s.num_tiles() * s.channels;
  if (items == 0) return 0;
  output_transform_backward_kernel<<<blocks_for(items), kThreads, 0, stream>>>(dy, s, dm);
  return launched();
}

const char* cuda_error_string(int error) {
  return cudaGetErrorString(static_cast<cudaError_t>(error));
}

}  // namespace swcnn
