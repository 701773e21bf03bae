// The compressed kernel's mask (swcnn/sparse_conv.h), decoded into the lists
// the sparse products walk, and kept between calls.
//
// Decoding walks every mask bit and writes one channel index per stored
// weight: at batch 1 it cost a third of a 14x14x512 layer's time (perf,
// docs/performance.md), though a layer's mask is the same at every call. So
// decoded masks are kept, keyed by their contents: a call whose mask is
// byte for byte one seen before (same shape, same count) gets its decoding
// without decoding again. The comparison reads the mask once (memcmp) and
// is exact, so a buffer reused for another mask is never mistaken for it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "swcnn/conv.h"
#include "swcnn/sparse_conv.h"

namespace swcnn {

// A kernel expanded to [16, C, K] for the dense fused kernel, and the values
// it was expanded from.
struct Expansion {
  std::vector<float> values, kernel;
};

// Column (t, k)'s stored weights are values[begin[t * K + k] ..
// begin[t * K + k + 1]), for input channels channel[...].
struct DecodedMask {
  std::vector<int64_t> begin;
  std::vector<int32_t> channel;
  // The last expansion of a kernel with this mask (expanded_kernel), and its
  // size in bytes (read by the cache's memory bound without the lock).
  mutable std::mutex expansion_mutex;
  mutable std::shared_ptr<const Expansion> expansion;
  mutable std::atomic<size_t> expansion_bytes{0};
};

// The decoded mask of `u` for shape `s`. Throws std::invalid_argument, naming
// the problem, for a shape `validate` refuses or a mask inconsistent with
// u.count (another number of set bits, or bits past channel C).
std::shared_ptr<const DecodedMask> decoded_mask(const ConvShape& s, const SparseKernel& u);

// The kernel `u` (whose decoded mask is `decoded`) expanded to [16, C, K],
// for the dense fused kernel that runs above the crossover density. Kept with
// the decoded mask while the values stay the same (compared byte for byte):
// expanding on every call made the fallback 2-3x slower than the dense layer
// at batch 1 (14x14x512, density 1.0: 14.6 ms, kept 7.3 ms, the dense layer
// 5.4 ms; docs/performance.md).
std::shared_ptr<const Expansion> expanded_kernel(const ConvShape& s, const SparseKernel& u,
                                                 const DecodedMask& decoded);

}  // namespace swcnn
