// The fused CPU convolutions, dense and sparse: validation, scratch memory
// and the choice of instruction set. The kernels themselves are in
// conv_kernels.inc and sparse_kernels.inc, compiled
// here once per instruction set under a GCC target pragma (one binary runs
// on any x86-64 and uses AVX-512 or AVX2 where the CPU has them).
#include "swcnn/conv.h"
#include "swcnn/sparse_conv.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "sparse_mask.h"
#include "thread_pool.h"
#include "tile_math.h"

namespace swcnn {
namespace {

// Per-thread buffers, kept between calls: kernels run often on the same
// shapes, and fresh large allocations would be page-faulted on every call.
class Scratch {
 public:
  enum Slot { kInputs, kProducts, kTileGradients, kKernelGradients, kPackedKernel, kSink,
              kChunkSums,
              kSlots };

  // A buffer of at least `size` floats; its contents are unspecified.
  float* get(Slot slot, int64_t size) {
    std::vector<float>& buffer = buffers_[slot];
    if (buffer.size() < static_cast<size_t>(size)) {
      buffer.clear();
      buffer.shrink_to_fit();
      buffer.resize(size);
    }
    return buffer.data();
  }

  // `size` zeros (never written by the kernels).
  const float* zeros(int64_t size) {
    if (zeros_.size() < static_cast<size_t>(size)) zeros_.assign(size, 0.0f);
    return zeros_.data();
  }

 private:
  std::vector<float> buffers_[kSlots];
  std::vector<float> zeros_;
};

Scratch& thread_scratch() {
  static thread_local Scratch scratch;
  return scratch;
}

}  // namespace

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(SWCNN_NO_MULTIVERSION)
#define SWCNN_X86_VARIANTS 1
namespace conv_avx512 {
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx2,fma,bmi2")
#define SWCNN_VECTOR_FLOATS 16
#define SWCNN_MAX_VECTORS 4
#include "conv_kernels.inc"
#include "sparse_kernels.inc"
#undef SWCNN_VECTOR_FLOATS
#undef SWCNN_MAX_VECTORS
#pragma GCC pop_options
}  // namespace conv_avx512

namespace conv_avx2 {
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi2")
#define SWCNN_VECTOR_FLOATS 8
#define SWCNN_MAX_VECTORS 2
#include "conv_kernels.inc"
#include "sparse_kernels.inc"
#undef SWCNN_VECTOR_FLOATS
#undef SWCNN_MAX_VECTORS
#pragma GCC pop_options
}  // namespace conv_avx2
#endif

namespace conv_baseline {
#define SWCNN_VECTOR_FLOATS 4
#define SWCNN_MAX_VECTORS 2
#include "conv_kernels.inc"
#include "sparse_kernels.inc"
#undef SWCNN_VECTOR_FLOATS
#undef SWCNN_MAX_VECTORS
}  // namespace conv_baseline

namespace {

enum class Isa { kAvx512, kAvx2, kBaseline };

Isa best_supported_isa() {
#ifdef SWCNN_X86_VARIANTS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kBaseline;
}

// The best instruction set of this CPU, or a lesser one named by SWCNN_ISA
// ("avx2", "baseline": for tests and comparisons; never a better one).
Isa detect_isa() {
  const Isa best = best_supported_isa();
  const char* env = std::getenv("SWCNN_ISA");
  if (env == nullptr) return best;
  const std::string name(env);
  const Isa asked = name == "avx2" ? Isa::kAvx2 : name == "baseline" ? Isa::kBaseline : best;
  return std::max(asked, best);  // the enum runs from best to least
}

Isa isa() {
  static const Isa chosen = detect_isa();
  return chosen;
}

void check(const ConvShape& s) {
  const std::string error = validate(s);
  if (!error.empty()) throw std::invalid_argument(error);
}

}  // namespace

std::string validate(const ConvShape& s) {
  if (s.out_channels < 1) return "the kernel must have K >= 1 output channels";
  std::string error = validate(s.input());
  if (error.empty()) error = validate(s.output());
  if (!error.empty()) return error;
  if (s.out_h > s.height + 2 * s.pad_top || s.out_w > s.width + 2 * s.pad_left)
    return "out_h/out_w larger than the padded input allows";
  constexpr int64_t kLimit = std::numeric_limits<int64_t>::max() / 64;
  if (s.in_channels > kLimit / 16 / s.out_channels) return "kernel too large";
  return {};
}

void conv_forward_cpu(const float* x, const float* u, const ConvShape& s, bool relu,
                      float* y) {
  check(s);
  if (s.num_tiles() == 0) return;
  switch (isa()) {
#ifdef SWCNN_X86_VARIANTS
    case Isa::kAvx512: return conv_avx512::forward(x, u, s, relu, y);
    case Isa::kAvx2: return conv_avx2::forward(x, u, s, relu, y);
#endif
    default: return conv_baseline::forward(x, u, s, relu, y);
  }
}

void conv_backward_cpu(const float* x, const float* u, const float* dy, const ConvShape& s,
                       bool relu, float* dx, float* du) {
  check(s);
  if (s.num_tiles() == 0) {  // an empty batch: no tiles, so no kernel gradient
    if (du != nullptr) std::fill_n(du, 16 * s.in_channels * s.out_channels, 0.0f);
    return;
  }
  switch (isa()) {
#ifdef SWCNN_X86_VARIANTS
    case Isa::kAvx512: return conv_avx512::backward(x, u, dy, s, relu, dx, du);
    case Isa::kAvx2: return conv_avx2::backward(x, u, dy, s, relu, dx, du);
#endif
    default: return conv_baseline::backward(x, u, dy, s, relu, dx, du);
  }
}

double sparse_dense_above(int64_t in_channels) {
  const double doublings = std::log2(double(std::max<int64_t>(in_channels, 16)) / 16.0);
  return std::min(0.4, 0.05 + 0.1 * doublings);
}

void sparse_conv_forward_cpu(const float* x, const SparseKernel& u, const ConvShape& s,
                             bool relu, float* y, SparseMode mode) {
  const std::shared_ptr<const DecodedMask> decoded = decoded_mask(s, u);
  const DecodedMask& m = *decoded;
  if (s.num_tiles() == 0) return;
  const int64_t C = s.in_channels, K = s.out_channels;
  const double density = double(u.count) / double(16 * C * K);
  if (mode == SparseMode::kDense ||
      (mode == SparseMode::kAuto && density > sparse_dense_above(C))) {
    const std::shared_ptr<const Expansion> expansion = expanded_kernel(s, u, m);
    return conv_forward_cpu(x, expansion->kernel.data(), s, relu, y);
  }
  switch (isa()) {
#ifdef SWCNN_X86_VARIANTS
    case Isa::kAvx512: return conv_avx512::sparse_forward(x, m.begin, m.channel, u, s, relu, y);
    case Isa::kAvx2: return conv_avx2::sparse_forward(x, m.begin, m.channel, u, s, relu, y);
#endif
    default: return conv_baseline::sparse_forward(x, m.begin, m.channel, u, s, relu, y);
  }
}

int64_t vector_floats() {
  switch (isa()) {
#ifdef SWCNN_X86_VARIANTS
    case Isa::kAvx512: return conv_avx512::kW;
    case Isa::kAvx2: return conv_avx2::kW;
#endif
    default: return conv_baseline::kW;
  }
}

const char* conv_isa() {
  switch (isa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "baseline";
  }
}

}  // namespace swcnn
