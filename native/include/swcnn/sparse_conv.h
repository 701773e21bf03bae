// The sparse Winograd F(2x2, 3x3) convolution on the CPU (inference only):
// the forward pass of conv.h with a kernel most of whose weights are zero,
// computed with multiplications only for the non-zero weights.
//
// Compressed kernel (the layout SparseWinogradReLUConv2D stores):
//   mask   : [16, K, words] 32-bit words, words = ceil(C / 32); bit c % 32 of
//            mask[t, k, c / 32] is set when u[t, c, k] is stored
//   values : the stored weights, ordered by (t, k, c)
// so storage is one bit per weight plus one float per stored weight.
//
// The kernel transforms a block of tiles as the dense one does, turns the
// block so that tiles are the vector lanes, and for every output channel k
// and position t adds w * v[t][c][lanes] for the stored (c, w) of column
// (t, k) only; the output transform then runs on the lanes. Above a density
// where that stops paying (sparse_dense_above), the kernel is expanded and the dense
// fused kernel runs instead.
#pragma once

#include <cstdint>

#include "swcnn/conv.h"

namespace swcnn {

struct SparseKernel {
  const uint32_t* mask = nullptr;  // [16, K, words]
  const float* values = nullptr;   // [count]
  int64_t count = 0;               // stored weights (the mask's set bits)
};

// 32-bit words per (t, k) mask row for C input channels.
inline int64_t sparse_mask_words(int64_t in_channels) { return (in_channels + 31) / 32; }

// Which kernel runs: chosen by density, or forced (benchmarks, tests).
enum class SparseMode { kAuto, kSparse, kDense };

// The stored fraction above which kAuto runs the dense kernel, for C input
// channels: 0.05 at 16 channels, 0.1 more per doubling, at most 0.4. The
// sparse kernel's transforms and its turn of tiles into lanes cost the same
// at every density, and weigh more the fewer channels each product has, so
// the crossover rises with C (measured on AVX-512, sparse / dense time at
// batch 32: 16 channels >= 1.08 at every density from 0.1 up; 32: 0.96 at
// 0.1, 1.07 at 0.15; 64: 1.00-0.85 at 0.2; 128: 0.79-0.94 at 0.3; 256: 0.68
// at 0.4; docs/performance.md, "Sparse inference: ..."). One rule for all
// shapes leaves some either side: 56x56x64 was 1.10 at 0.25 (7x7x64: 0.85),
// 14x14x512 1.08 at 0.4.
double sparse_dense_above(int64_t in_channels);

// y = the convolution of x with the kernel `u` stands for. Throws
// std::invalid_argument, naming the problem, for a shape `validate` refuses
// or a mask inconsistent with `u.count` (another number of set bits, or bits
// past channel C), and std::bad_alloc when scratch memory runs out.
void sparse_conv_forward_cpu(const float* x, const SparseKernel& u, const ConvShape& s,
                             bool relu, float* y, SparseMode mode = SparseMode::kAuto);

// Calls decode the mask once per distinct mask and keep the decoding (see
// native/cpu/sparse_mask.h): how many are kept, and how many calls so far
// decoded one (for tests).
struct DecodedMaskStats {
  int64_t kept, decoded;
};
DecodedMaskStats decoded_mask_stats();

}  // namespace swcnn
