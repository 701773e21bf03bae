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

#include "parallel.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(SWCNN_NO_MULTIVERSION)
#define SWCNN_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SWCNN_MULTIVERSION
#endif

#if defined(__GNUC__) && !defined(__clang__)
#define SWCNN_IVDEP _Pragma("GCC ivdep")
#elif defined(__clang__)
#define SWCNN_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#else
#define SWCNN_IVDEP
#endif

namespace swcnn {

int num_threads() {
  static const int threads = [] {
    if (const char* env = std::getenv("SWCNN_NUM_THREADS")) {
      const int n = std::atoi(env);
      if (n > 0) return n;
    }
    return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  }();
  return threads;
}

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

int64_t grain_for(int64_t floats_per_item) {
  return std::max<int64_t>(1, kGrainFloats / std::max<int64_t>(floats_per_item, 1));
}

// v[t] = (B^T d B)[t] for one tile; d: 16 row-major pixel pointers, out: 16
// position pointers. `lo` is 0 for relu and -inf otherwise.
SWCNN_MULTIVERSION
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

// dx[r][s] += (B dv B^T)[r][s] for one tile, dv masked by (v > 0) if v != null.
SWCNN_MULTIVERSION
void input_tile_backward(const float* const* dv, const float* const* v,
                         float* const* dx, int64_t channels) {
  SWCNN_IVDEP
  for (int64_t ch = 0; ch < channels; ++ch) {
    float g[16];
    for (int t = 0; t < 16; ++t) {
      g[t] = dv[t][ch];
      if (v != nullptr && !(v[t][ch] > 0.0f)) g[t] = 0.0f;
    }
    float q[4][4];
    for (int b = 0; b < 4; ++b) {  // rows: B dv (B = (B^T)^T)
      const float g0 = g[b], g1 = g[4 + b], g2 = g[8 + b], g3 = g[12 + b];
      q[0][b] = g0;
      q[1][b] = g1 - g2 + g3;
      q[2][b] = g1 + g2 - g0;
      q[3][b] = -g3;
    }
    for (int r = 0; r < 4; ++r) {  // columns: (B dv) B^T
      dx[4 * r + 0][ch] += q[r][0];
      dx[4 * r + 1][ch] += q[r][1] - q[r][2] + q[r][3];
      dx[4 * r + 2][ch] += q[r][1] + q[r][2] - q[r][0];
      dx[4 * r + 3][ch] -= q[r][3];
    }
  }
}

// y = A^T m A for one tile; y: 4 output pointers (row-major 2x2).
SWCNN_MULTIVERSION
void output_tile(const float* const* m, float* const* y, int64_t channels) {
  SWCNN_IVDEP
  for (int64_t k = 0; k < channels; ++k) {
    float r0[4], r1[4];
    for (int c = 0; c < 4; ++c) {  // rows: A^T m
      const float q0 = m[c][k], q1 = m[4 + c][k], q2 = m[8 + c][k], q3 = m[12 + c][k];
      r0[c] = q0 + q1 + q2;
      r1[c] = q1 - q2 - q3;
    }
    y[0][k] = r0[0] + r0[1] + r0[2];  // columns: (A^T m) A
    y[1][k] = r0[1] - r0[2] - r0[3];
    y[2][k] = r1[0] + r1[1] + r1[2];
    y[3][k] = r1[1] - r1[2] - r1[3];
  }
}

// dm = A dy A^T for one tile; dy: 4 pointers (row-major 2x2).
SWCNN_MULTIVERSION
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

}  // namespace

std::string validate(const InputTransformShape& s) {
  if (s.batch < 0 || s.height < 1 || s.width < 1 || s.channels < 1)
    return "input must have shape [N, H, W, C] with N >= 0 and H, W, C >= 1";
  if (s.pad_top < 0 || s.pad_left < 0 || s.pad_top > 2 || s.pad_left > 2)
    return "pad_top and pad_left must be in [0, 2]";
  if (s.tiles_h < 1 || s.tiles_w < 1) return "tiles_h and tiles_w must be >= 1";
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
