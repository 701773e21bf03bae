// The fused Winograd F(2x2, 3x3) forward convolution on tensor cores (WMMA).
//
// A thread block owns kTiles tiles (rows of every per-position product) and
// kFilters filters (columns). For each chunk of kChunk input channels it
//   1. loads the tiles' 4x4 input patches (coalesced along channels),
//      transforms them (B^T d B), applies the Winograd ReLU and stores the
//      16 transformed positions in shared memory, rounded to the operand type;
//   2. copies the chunk of u for its filters to shared memory;
//   3. accumulates the 16 products V[t] @ U[t] on tensor cores: warp w owns
//      positions 2w and 2w + 1, as 2 x 2 accumulator fragments of 16 x 16 each.
// After the last chunk the accumulators go through shared memory once more
// and each thread applies the output transform (A^T m A) for (tile, filter)
// pairs and writes the cropped 2x2 block to y. V and M never reach device
// memory: the kernel reads x (about 4 times, from cache: neighbouring tiles
// overlap) and u, and writes y.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "swcnn/cuda_conv.h"
#include "swcnn/tile_arithmetic.h"
#include "tile_blocks.cuh"

namespace swcnn {
namespace {

using namespace nvcuda;

constexpr int kTiles = 32;    // tiles per block: rows of each product
constexpr int kFilters = 32;  // filters per block: columns
constexpr int kChunk = 16;    // input channels per step: the products' depth
constexpr int kWarps = 8;     // warp w owns positions 2w, 2w + 1
constexpr int kThreads = 32 * kWarps;
constexpr int kTileThreads = kThreads / kChunk;  // tiles loaded at once (one channel each)

// Element conversions for every data type the kernel reads or writes (float32
// is read by asynchronous copies, unconverted).
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

// The operand types of the products: what V and U are stored as in shared
// memory, the MMA shape's depth, and how a loaded fragment is prepared.
// Row strides are padded by 16 bytes against bank conflicts; WMMA needs
// strides of a multiple of 16 bytes and fragment pointers aligned to 32.
template <typename Storage_, typename Precision_, int kDepth_, int kPasses_>
struct Operands {
  using Storage = Storage_;
  using Precision = Precision_;
  static constexpr int kDepth = kDepth_;
  static constexpr int kPad = 16 / sizeof(Storage);
  static constexpr int kVStride = kChunk + kPad;    // V: [16][kTiles][kVStride]
  static constexpr int kUStride = kFilters + kPad;  // U: [16][kChunk][kUStride]
  static constexpr int kPasses = kPasses_;          // 3: the TF32 head/tail split
};
using Tf32 = Operands<float, wmma::precision::tf32, 8, 1>;
using Tf32x3 = Operands<float, wmma::precision::tf32, 8, 3>;
using Bf16 = Operands<__nv_bfloat16, __nv_bfloat16, 16, 1>;
using F16 = Operands<__half, __half, 16, 1>;

constexpr int kMStride = kFilters + 4;  // M (float): [16][kTiles][kMStride]

// float32 input patches are staged in shared memory by asynchronous copies:
// [kTiles][16 pixels][kChunk] with each tile's stride padded by 16 floats, so
// the two half-warps (two tiles) read different banks.
constexpr int kPatchStride = 16 * kChunk + 16;
template <typename T>
constexpr bool kAsyncCopies = std::is_same_v<T, float>;

template <typename T, typename Op>
constexpr size_t shared_bytes() {
  const size_t operands =
      sizeof(typename Op::Storage) * 16 * (kTiles * Op::kVStride + kChunk * Op::kUStride) +
      (kAsyncCopies<T> ? sizeof(float) * kTiles * kPatchStride : 0);
  const size_t products = sizeof(float) * 16 * kTiles * kMStride;
  return operands > products ? operands : products;
}

template <typename Op>
using FragmentA = wmma::fragment<wmma::matrix_a, 16, 16, Op::kDepth, typename Op::Precision,
                                 wmma::row_major>;
template <typename Op>
using FragmentB = wmma::fragment<wmma::matrix_b, 16, 16, Op::kDepth, typename Op::Precision,
                                 wmma::row_major>;
template <typename Op>
using Accumulator = wmma::fragment<wmma::accumulator, 16, 16, Op::kDepth, float>;

// Rounds a loaded float fragment to TF32 (head), and gives the rounded rest
// (tail) for the three-pass split; half-precision fragments are used as they are.
template <typename Op, typename Fragment>
__device__ __forceinline__ void split(Fragment& head, Fragment& tail) {
  if constexpr (std::is_same_v<typename Op::Precision, wmma::precision::tf32>) {
#pragma unroll
    for (int i = 0; i < head.num_elements; ++i) {
      const float value = head.x[i];
      head.x[i] = wmma::__float_to_tf32(value);
      if constexpr (Op::kPasses == 3) tail.x[i] = wmma::__float_to_tf32(value - head.x[i]);
    }
  }
}

// One chunk's products for the warp's two positions.
template <typename Op>
__device__ __forceinline__ void multiply_chunk(const typename Op::Storage* v,
                                               const typename Op::Storage* u, int warp,
                                               Accumulator<Op> (&acc)[2][2][2]) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int t = 2 * warp + i;
#pragma unroll
    for (int depth = 0; depth < kChunk; depth += Op::kDepth) {
      FragmentA<Op> a[2], a_tail[2];
      FragmentB<Op> b[2], b_tail[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        wmma::load_matrix_sync(a[r], v + (t * kTiles + 16 * r) * Op::kVStride + depth,
                               Op::kVStride);
        split<Op>(a[r], a_tail[r]);
      }
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        wmma::load_matrix_sync(b[c], u + (t * kChunk + depth) * Op::kUStride + 16 * c,
                               Op::kUStride);
        split<Op>(b[c], b_tail[c]);
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          if constexpr (Op::kPasses == 3) {  // small terms first
            wmma::mma_sync(acc[i][r][c], a_tail[r], b[c], acc[i][r][c]);
            wmma::mma_sync(acc[i][r][c], a[r], b_tail[c], acc[i][r][c]);
          }
          wmma::mma_sync(acc[i][r][c], a[r], b[c], acc[i][r][c]);
        }
      }
    }
  }
}

// Where one tile of the block reads its input patch.
struct TilePatch {
  int64_t image_offset;  // of the tile's image in x, in elements
  int64_t row, col;      // of the patch's top-left pixel (may be outside the image)
  bool valid;            // the tile exists (the last block may be partial)
};

__device__ __forceinline__ TilePatch tile_patch(const ConvShape& s, int64_t p) {
  TilePatch patch;
  patch.valid = p < s.num_tiles();
  const TilePosition at = tile_position(p, s.tiles_h, s.tiles_w);
  patch.image_offset = at.n * s.height * s.width * s.in_channels;
  patch.row = 2 * at.ty - s.pad_top;
  patch.col = 2 * at.tx - s.pad_left;
  return patch;
}

// Asynchronous 4-byte copy global -> shared (sm_80+), zero-filled when
// `valid` is false (nothing is read then): the copy needs no register and
// runs while the thread goes on.
__device__ __forceinline__ void copy_async_or_zero(float* shared_dst, const float* global_src,
                                                   bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(shared_dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(global_src),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void copy_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
__device__ __forceinline__ void copy_async_wait() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

// Copies rows [c0, c0 + kChunk) of u[t] for the block's filters into u_block
// ([16][kChunk][kUStride]), zeros past C and K. Each thread takes filter
// `lane_k` of channels c0 + lane_r + kWarps * h of every position. float32
// goes by asynchronous copies, to be waited for before the products; half
// types are converted on the way, through registers.
template <typename T, typename Op>
__device__ __forceinline__ void stage_kernel_chunk(const T* __restrict__ u, int64_t C, int64_t K,
                                                   int64_t c0, int64_t filter, bool filter_valid,
                                                   int lane_r, int lane_k,
                                                   typename Op::Storage* u_block) {
  static_assert(kChunk % kWarps == 0, "each thread copies whole channels of a chunk");
  constexpr int kRowsPerThread = kChunk / kWarps;
  const T* base = u + (c0 + lane_r) * K + filter;  // position 0, first channel
  const int64_t plane = C * K;                      // one position of u
#pragma unroll
  for (int h = 0; h < kRowsPerThread; ++h) {
    const int offset = lane_r + kWarps * h;
    const bool inside = filter_valid && c0 + offset < C;
    typename Op::Storage* target = u_block + offset * Op::kUStride + lane_k;
#pragma unroll 8
    for (int t = 0; t < 16; ++t) {
      const T* source = inside ? base + t * plane + kWarps * h * K : u;
      if constexpr (std::is_same_v<T, float>) {
        copy_async_or_zero(target + t * kChunk * Op::kUStride, source, inside);
      } else {
        target[t * kChunk * Op::kUStride] =
            from_float<typename Op::Storage>(inside ? to_float(*source) : 0.0f);
      }
    }
  }
  if constexpr (std::is_same_v<T, float>) copy_async_commit();
}

constexpr int kTilesPerThread = kTiles / kTileThreads;

// Copies channel `channel` of this thread's tiles' 4x4 input patches into its
// own slots of the patch buffer (zeros outside the image, past C and past the
// last tile). Only this thread reads those slots, so no barrier is needed
// between the copy, its wait and the transform.
__device__ __forceinline__ void stage_patches(const float* __restrict__ x, const ConvShape& s,
                                              const TilePatch (&patches)[kTilesPerThread],
                                              int64_t channel, float* own_slots) {
  const int64_t C = s.in_channels, row_stride = s.width * C;
  // Copies are issued, not waited for: loops, not unrolled code, keep the
  // addresses out of registers the accumulators need.
#pragma unroll
  for (int i = 0; i < kTilesPerThread; ++i) {
    const TilePatch& patch = patches[i];
    const bool tile_valid = patch.valid && channel < C;
    const float* row_start = x + patch.image_offset + (patch.row * s.width + patch.col) * C + channel;
    float* slots = own_slots + i * kTileThreads * kPatchStride;
#pragma unroll 1
    for (int r = 0; r < 4; ++r, row_start += row_stride, slots += 4 * kChunk) {
      const bool row_valid = tile_valid && patch.row + r >= 0 && patch.row + r < s.height;
#pragma unroll
      for (int col = 0; col < 4; ++col) {
        const bool inside = row_valid && patch.col + col >= 0 && patch.col + col < s.width;
        copy_async_or_zero(slots + col * kChunk, inside ? row_start + col * C : x, inside);
      }
    }
  }
  copy_async_commit();
}

template <typename T, typename Op>
__global__ void __launch_bounds__(kThreads, 2)
    fused_forward_kernel(const T* __restrict__ x, const T* __restrict__ u, ConvShape s,
                         bool relu, T* __restrict__ y) {
  using Storage = typename Op::Storage;
  extern __shared__ __align__(128) unsigned char shared[];
  Storage* v_block = reinterpret_cast<Storage*>(shared);
  Storage* u_block = v_block + 16 * kTiles * Op::kVStride;
  float* m_block = reinterpret_cast<float*>(shared);  // after the last chunk
  float* patch_block = reinterpret_cast<float*>(u_block + 16 * kChunk * Op::kUStride);

  const int64_t C = s.in_channels, K = s.out_channels;
  const int64_t first_tile = int64_t(blockIdx.x) * kTiles;
  const int64_t first_filter = int64_t(blockIdx.y) * kFilters;
  const int warp = threadIdx.x / 32;

  // This thread transforms channel `lane_c` of tiles `lane_t + kTileThreads * i`.
  const int lane_c = threadIdx.x % kChunk, lane_t = threadIdx.x / kChunk;
  TilePatch patches[kTilesPerThread];
#pragma unroll
  for (int i = 0; i < kTilesPerThread; ++i)
    patches[i] = tile_patch(s, first_tile + lane_t + kTileThreads * i);
  // ... and copies filter `lane_k` of rows `lane_r + kWarps * j` of u's chunk.
  const int lane_k = threadIdx.x % kFilters, lane_r = threadIdx.x / kFilters;
  const bool filter_valid = first_filter + lane_k < K;

  Accumulator<Op> acc[2][2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int c = 0; c < 2; ++c) wmma::fill_fragment(acc[i][r][c], 0.0f);

  // Pipeline (float32): the next chunk's patches are copied while this
  // chunk's products run, and the next chunk of u once they are done; both
  // land while the next patches are transformed. Half types load through
  // registers, in the same order.
  constexpr bool kAsync = kAsyncCopies<T>;
  const int64_t filter = first_filter + lane_k;
  float* own_slots = patch_block + lane_t * kPatchStride + lane_c;
  if (C > 0) {
    stage_kernel_chunk<T, Op>(u, C, K, 0, filter, filter_valid, lane_r, lane_k, u_block);
    if constexpr (kAsync) stage_patches(x, s, patches, lane_c, own_slots);
  }
  for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
    const int64_t channel = c0 + lane_c;
    if constexpr (kAsync) copy_async_wait();  // this thread's copies for c0
    // Not unrolled: the accumulators hold 64 registers through this phase.
#pragma unroll 1
    for (int i = 0; i < kTilesPerThread; ++i) {
      float d[16];
      if constexpr (kAsync) {
#pragma unroll
        for (int pixel = 0; pixel < 16; ++pixel)
          d[pixel] = own_slots[i * kTileThreads * kPatchStride + pixel * kChunk];
      } else {
        const TilePatch& patch = patches[i];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int64_t row = patch.row + r;
#pragma unroll
          for (int col = 0; col < 4; ++col) {
            const int64_t column = patch.col + col;
            const bool inside = patch.valid && channel < C && row >= 0 && row < s.height &&
                                column >= 0 && column < s.width;
            d[4 * r + col] =
                inside ? to_float(x[patch.image_offset + (row * s.width + column) * C + channel])
                       : 0.0f;
          }
        }
      }
      float w[16];
      tile::input_values(d, w);
      Storage* out = v_block + (lane_t + kTileThreads * i) * Op::kVStride + lane_c;
      // Not fmaxf, which returns 0 for a NaN: NaN propagates, as on the CPU.
#pragma unroll
      for (int t = 0; t < 16; ++t)
        out[t * kTiles * Op::kVStride] = from_float<Storage>(relu && w[t] < 0.0f ? 0.0f : w[t]);
    }
    __syncthreads();  // V, and u's chunk, visible to every warp
    if constexpr (kAsync) {
      if (c0 + kChunk < C) stage_patches(x, s, patches, channel + kChunk, own_slots);
    }
    multiply_chunk<Op>(v_block, u_block, warp, acc);
    __syncthreads();
    if (c0 + kChunk < C)
      stage_kernel_chunk<T, Op>(u, C, K, c0 + kChunk, filter, filter_valid, lane_r, lane_k,
                                u_block);
  }

#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int c = 0; c < 2; ++c)
        wmma::store_matrix_sync(m_block + ((2 * warp + i) * kTiles + 16 * r) * kMStride + 16 * c,
                                acc[i][r][c], kMStride, wmma::mem_row_major);
  __syncthreads();

  // Output transform: filter `lane_k` of tiles `lane_r + kWarps * j`.
  if (!filter_valid) return;
  const int64_t k = first_filter + lane_k;
#pragma unroll
  for (int j = 0; j < kTiles / kWarps; ++j) {
    const int tile_in_block = lane_r + kWarps * j;
    const int64_t p = first_tile + tile_in_block;
    if (p >= s.num_tiles()) break;
    float q[16], out[4];
#pragma unroll
    for (int t = 0; t < 16; ++t) q[t] = m_block[(t * kTiles + tile_in_block) * kMStride + lane_k];
    tile::output_values(q, out);
    for_each_output_pixel(tile_position(p, s.tiles_h, s.tiles_w), s.out_h, s.out_w,
                          [&](int i, int64_t pixel) { y[pixel * K + k] = from_float<T>(out[i]); });
  }
}

template <typename T, typename Op>
int launch(const T* x, const T* u, const ConvShape& s, bool relu, T* y, CudaStream stream) {
  const int64_t tiles = s.num_tiles(), out_size = s.batch * s.out_h * s.out_w * s.out_channels;
  if (out_size == 0) return 0;
  const int64_t tile_blocks = (tiles + kTiles - 1) / kTiles;
  const int64_t filter_blocks = (s.out_channels + kFilters - 1) / kFilters;
  if (tile_blocks > 0x7fffffff || filter_blocks > 65535)
    return static_cast<int>(cudaErrorInvalidConfiguration);
  auto kernel = fused_forward_kernel<T, Op>;
  constexpr size_t bytes = shared_bytes<T, Op>();
  // Over 48 KB of dynamic shared memory must be asked for, per kernel.
  cudaError_t error =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (error != cudaSuccess) return static_cast<int>(error);
  kernel<<<dim3(unsigned(tile_blocks), unsigned(filter_blocks)), kThreads, bytes, stream>>>(
      x, u, s, relu, y);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int conv_forward_cuda(const float* x, const float* u, const ConvShape& s, bool relu,
                      Float32Products products, float* y, CudaStream stream) {
  if (products == Float32Products::kTf32x3) return launch<float, Tf32x3>(x, u, s, relu, y, stream);
  return launch<float, Tf32>(x, u, s, relu, y, stream);
}

int conv_forward_cuda_bf16(const uint16_t* x, const uint16_t* u, const ConvShape& s, bool relu,
                           uint16_t* y, CudaStream stream) {
  using T = __nv_bfloat16;
  return launch<T, Bf16>(reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(u), s, relu,
                         reinterpret_cast<T*>(y), stream);
}

int conv_forward_cuda_f16(const uint16_t* x, const uint16_t* u, const ConvShape& s, bool relu,
                          uint16_t* y, CudaStream stream) {
  using T = __half;
  return launch<T, F16>(reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(u), s, relu,
                        reinterpret_cast<T*>(y), stream);
}

}  // namespace swcnn
