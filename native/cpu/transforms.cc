// CPU implementations of the Winograd F(2x2, 3x3) transforms.
//
// B^T and A^T hold only 0 and +-1, so all four transforms are additions. Each
// tile's inner loop runs over channels, which are contiguous both in NHWC and
// in the [16, P, C] layout, so it vectorizes. The inner loops are compiled
// several times (AVX-512, AVX2, baseline x86-64) and the best version for the
// running CPU is picked at load time (GCC/Clang function multi-versioning),
// so one binary is fast on new CPUs and still correct on any x86-64.
#include "swcnn/transforms.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <vector>

#include "thread_pool.h"
#include "tile_math.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(SWCNN_NO_MULTIVERSION)
#define SWCNN_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SWCNN_MULTIVERSION
#endif

namespace swcnn {

namespace {

constexpr int64_t kMaxElements = std::numeric_limits<int64_t>::max() / 16;
// Aim for at least this many floats of work per thread chunk.
constexpr int64_t kGrainFloats = 1 << 15;

bool product_overflows(std::initializer_list<int64_t> dims) {
  int64_t total = 1;
  for (int64_t d : dims) {
    if (d != 0 && total > kMaxElements / d) return true;
    total *= d;
  }
  return false;
}

// Whether a size exceeds what any tensor could have; checked before the sizes
// meet in sums and products, so that those cannot overflow.
bool any_too_large(std::initializer_list<int64_t> sizes) {
  for (int64_t size : sizes)
    if (size > kMaxElements) return true;
  return false;
}

int64_t grain_for(int64_t floats_per_item) {
  return std::max<int64_t>(1, kGrainFloats / std::max<int64_t>(floats_per_item, 1));
}

using tile::output_pixels;
using tile::tile_pixels;

// The per-tile loops, compiled once per instruction set.
SWCNN_MULTIVERSION
void input_tile(const float* const* d, float* const* out, int64_t channels, float lo) {
  tile::input_tile(d, out, channels, lo);
}

SWCNN_MULTIVERSION
void input_tile_backward(const float* const* dv, const float* const* v, float* const* dx,
                         int64_t channels) {
  tile::input_tile_backward(dv, v, dx, channels);
}

SWCNN_MULTIVERSION
void output_tile(const float* const* m, float* const* y, int64_t channels) {
  tile::output_tile(m, y, channels);
}

SWCNN_MULTIVERSION
void output_tile_backward(const float* const* dy, float* const* dm, int64_t channels) {
  tile::output_tile_backward(dy, dm, channels);
}

}  // namespace

std::string validate(const InputTransformShape& s) {
  if (s.batch < 0 || s.height < 1 || s.width < 1 || s.channels < 1)
    return "input must have shape [N, H, W, C] with N >= 0 and H, W, C >= 1";
  if (s.pad_top < 0 || s.pad_left < 0 || s.pad_top > 2 || s.pad_left > 2)
    return "pad_top and pad_left must be in [0, 2]";
  if (s.tiles_h < 1 || s.tiles_w < 1) return "tiles_h and tiles_w must be >= 1";
  // Before any arithmetic on them: no single size may overflow it.
  if (any_too_large({s.batch, s.height, s.width, s.channels, s.tiles_h, s.tiles_w}))
    return "tensor too large";
  // Each tile must start inside the padded image, or it would read nothing
  // but padding: that is a caller bug, not a shape we silently accept.
  if (2 * (s.tiles_h - 1) - s.pad_top >= s.height ||
      2 * (s.tiles_w - 1) - s.pad_left >= s.width)
    return "too many tiles for the input size";
  if (product_overflows({16, s.batch, s.tiles_h, s.tiles_w, s.channels}) ||
      product_overflows({s.batch, s.height, s.width, s.channels}))
    return "tensor too large";
  return {};
}

std::string validate(const OutputTransformShape& s) {
  if (s.batch < 0 || s.tiles_h < 1 || s.tiles_w < 1 || s.channels < 1)
    return "products must have shape [16, N * TH * TW, K] with TH, TW, K >= 1";
  if (any_too_large({s.batch, s.tiles_h, s.tiles_w, s.channels, s.out_h, s.out_w}))
    return "tensor too large";
  if (s.out_h < 1 || s.out_w < 1 || s.out_h > 2 * s.tiles_h || s.out_w > 2 * s.tiles_w ||
      s.out_h <= 2 * (s.tiles_h - 1) || s.out_w <= 2 * (s.tiles_w - 1))
    return "out_h/out_w must satisfy 2*(tiles-1) < out <= 2*tiles";
  if (product_overflows({16, s.batch, s.tiles_h, s.tiles_w, s.channels}))
    return "tensor too large";
  return {};
}

void input_transform_cpu(const float* x, const InputTransformShape& s, bool relu,
                         float* v) {
  const int64_t C = s.channels, plane = s.num_tiles() * C;
  const int64_t tiles_per_image = s.tiles_h * s.tiles_w;
  const float lo = relu ? 0.0f : -std::numeric_limits<float>::infinity();
  parallel_for(s.num_tiles(), grain_for(16 * C), [&](int64_t begin, int64_t end) {
    std::vector<float> zeros(C, 0.0f);
    const float* d[16];
    float* out[16];
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n = p / tiles_per_image, rest = p % tiles_per_image;
      tile_pixels(x + n * s.height * s.width * C, s, rest / s.tiles_w, rest % s.tiles_w,
                  static_cast<const float*>(zeros.data()), d);
      for (int t = 0; t < 16; ++t) out[t] = v + t * plane + p * C;
      input_tile(d, out, C, lo);
    }
  });
}

void input_transform_backward_cpu(const float* dv, const float* v,
                                  const InputTransformShape& s, bool relu, float* dx) {
  const int64_t C = s.channels, plane = s.num_tiles() * C;
  const int64_t image = s.height * s.width * C;
  parallel_for(s.batch * image, kGrainFloats, [&](int64_t begin, int64_t end) {
    std::fill(dx + begin, dx + end, 0.0f);
  });
  // Tiles overlap by two rows and two columns. Tile rows of equal parity never
  // overlap, so each parity is one parallel phase over (image, tile row), and
  // the tiles within a row are accumulated in order by one thread.
  const int64_t rows_per_phase[2] = {(s.tiles_h + 1) / 2, s.tiles_h / 2};
  for (int parity = 0; parity < 2; ++parity) {
    const int64_t rows = rows_per_phase[parity];
    parallel_for(s.batch * rows, grain_for(16 * C * s.tiles_w), [&](int64_t begin, int64_t end) {
      std::vector<float> sink(C);
      const float* g[16];
      const float* mask[16];
      float* out[16];
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / rows, ty = 2 * (task % rows) + parity;
        for (int64_t tx = 0; tx < s.tiles_w; ++tx) {
          const int64_t p = (n * s.tiles_h + ty) * s.tiles_w + tx;
          for (int t = 0; t < 16; ++t) {
            g[t] = dv + t * plane + p * C;
            mask[t] = relu ? v + t * plane + p * C : nullptr;
          }
          tile_pixels(dx + n * image, s, ty, tx, sink.data(), out);
          input_tile_backward(g, relu ? mask : nullptr, out, C);
        }
      }
    });
  }
}

void output_transform_cpu(const float* m, const OutputTransformShape& s, float* y) {
  const int64_t K = s.channels, plane = s.num_tiles() * K;
  const int64_t tiles_per_image = s.tiles_h * s.tiles_w;
  parallel_for(s.num_tiles(), grain_for(16 * K), [&](int64_t begin, int64_t end) {
    std::vector<float> sink(K);
    const float* in[16];
    float* out[4];
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n = p / tiles_per_image, rest = p % tiles_per_image;
      for (int t = 0; t < 16; ++t) in[t] = m + t * plane + p * K;
      output_pixels(y, s, n, rest / s.tiles_w, rest % s.tiles_w, sink.data(), out);
      output_tile(in, out, K);
    }
  });
}

void output_transform_backward_cpu(const float* dy, const OutputTransformShape& s,
                                   float* dm) {
  const int64_t K = s.channels, plane = s.num_tiles() * K;
  const int64_t tiles_per_image = s.tiles_h * s.tiles_w;
  parallel_for(s.num_tiles(), grain_for(16 * K), [&](int64_t begin, int64_t end) {
    std::vector<float> zeros(K, 0.0f);
    const float* in[4];
    float* out[16];
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n = p / tiles_per_image, rest = p % tiles_per_image;
      output_pixels(dy, s, n, rest / s.tiles_w, rest % s.tiles_w,
                    static_cast<const float*>(zeros.data()), in);
      for (int t = 0; t < 16; ++t) out[t] = dm + t * plane + p * K;
      output_tile_backward(in, out, K);
    }
  });
}

}  // namespace swcnn
