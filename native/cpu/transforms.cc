// CPU implementations of the Winograd F(2x2, 3x3) transforms.
//
// B^T and A^T hold only 0 and +-1, so both transforms are additions. The
// innermost loop runs over channels, which are contiguous in NHWC and in the
// [16, P, C] tile layout, so the compiler vectorizes it for whatever
// instruction set the build targets.
#include "swcnn/transforms.h"

#include <algorithm>
#include <limits>
#include <vector>

namespace swcnn {
namespace {

constexpr int64_t kMaxElements = std::numeric_limits<int64_t>::max() / 16;

bool product_overflows(std::initializer_list<int64_t> dims) {
  int64_t total = 1;
  for (int64_t d : dims) {
    if (d != 0 && total > kMaxElements / d) return true;
    total *= d;
  }
  return false;
}

}  // namespace

std::string validate(const InputTransformShape& s) {
  if (s.batch < 0 || s.height < 1 || s.width < 1 || s.channels < 1)
    return "input must have shape [N, H, W, C] with N >= 0 and H, W, C >= 1";
  if (s.pad_top < 0 || s.pad_left < 0 || s.pad_top > 2 || s.pad_left > 2)
    return "pad_top and pad_left must be in [0, 2]";
  if (s.tiles_h < 1 || s.tiles_w < 1)
    return "tiles_h and tiles_w must be >= 1";
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
  if (s.out_h < 1 || s.out_w < 1 || s.out_h > 2 * s.tiles_h ||
      s.out_w > 2 * s.tiles_w || s.out_h <= 2 * (s.tiles_h - 1) ||
      s.out_w <= 2 * (s.tiles_w - 1))
    return "out_h/out_w must satisfy 2*(tiles-1) < out <= 2*tiles";
  if (product_overflows({16, s.batch, s.tiles_h, s.tiles_w, s.channels}))
    return "tensor too large";
  return {};
}

void input_transform_cpu(const float* x, const InputTransformShape& s,
                         bool relu, float* v) {
  const int64_t C = s.channels;
  const int64_t plane = s.num_tiles() * C;  // stride between positions t
  std::vector<float> zeros(C, 0.0f);
  const float* d[4][4];

  for (int64_t n = 0; n < s.batch; ++n) {
    const float* image = x + n * s.height * s.width * C;
    for (int64_t ty = 0; ty < s.tiles_h; ++ty) {
      for (int64_t tx = 0; tx < s.tiles_w; ++tx) {
        const int64_t p = (n * s.tiles_h + ty) * s.tiles_w + tx;
        for (int r = 0; r < 4; ++r) {
          const int64_t row = 2 * ty - s.pad_top + r;
          for (int c = 0; c < 4; ++c) {
            const int64_t col = 2 * tx - s.pad_left + c;
            const bool inside =
                row >= 0 && row < s.height && col >= 0 && col < s.width;
            d[r][c] = inside ? image + (row * s.width + col) * C : zeros.data();
          }
        }
        float* out = v + p * C;
        for (int64_t ch = 0; ch < C; ++ch) {
          float t[4][4];
          // Rows: B^T d.
          for (int c = 0; c < 4; ++c) {
            const float d0 = d[0][c][ch], d1 = d[1][c][ch];
            const float d2 = d[2][c][ch], d3 = d[3][c][ch];
            t[0][c] = d0 - d2;
            t[1][c] = d1 + d2;
            t[2][c] = d2 - d1;
            t[3][c] = d1 - d3;
          }
          // Columns: (B^T d) B.
          for (int r = 0; r < 4; ++r) {
            float w[4] = {t[r][0] - t[r][2], t[r][1] + t[r][2],
                          t[r][2] - t[r][1], t[r][1] - t[r][3]};
            for (int c = 0; c < 4; ++c) {
              const float value = relu ? std::max(w[c], 0.0f) : w[c];
              out[(4 * r + c) * plane + ch] = value;
            }
          }
        }
      }
    }
  }
}

void output_transform_cpu(const float* m, const OutputTransformShape& s,
                          float* y) {
  const int64_t K = s.channels;
  const int64_t plane = s.num_tiles() * K;
  for (int64_t n = 0; n < s.batch; ++n) {
    for (int64_t ty = 0; ty < s.tiles_h; ++ty) {
      for (int64_t tx = 0; tx < s.tiles_w; ++tx) {
        const int64_t p = (n * s.tiles_h + ty) * s.tiles_w + tx;
        const float* in = m + p * K;
        const int64_t row0 = 2 * ty, col0 = 2 * tx;
        const bool has_row1 = row0 + 1 < s.out_h;
        const bool has_col1 = col0 + 1 < s.out_w;
        float* y00 = y + ((n * s.out_h + row0) * s.out_w + col0) * K;
        float* y01 = y00 + K;
        float* y10 = y00 + s.out_w * K;
        float* y11 = y10 + K;
        for (int64_t k = 0; k < K; ++k) {
          float q[4][4];
          for (int t = 0; t < 16; ++t) q[t / 4][t % 4] = in[t * plane + k];
          // Rows: A^T m.
          float r0[4], r1[4];
          for (int c = 0; c < 4; ++c) {
            r0[c] = q[0][c] + q[1][c] + q[2][c];
            r1[c] = q[1][c] - q[2][c] - q[3][c];
          }
          // Columns: (A^T m) A, cropped at the bottom/right edge.
          y00[k] = r0[0] + r0[1] + r0[2];
          if (has_col1) y01[k] = r0[1] - r0[2] - r0[3];
          if (has_row1) {
            y10[k] = r1[0] + r1[1] + r1[2];
            if (has_col1) y11[k] = r1[1] - r1[2] - r1[3];
          }
        }
      }
    }
  }
}

}  // namespace swcnn
