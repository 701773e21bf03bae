// Where a tile sits and which output pixels its 2x2 block covers, for the
// CUDA kernels (NHWC, tiles numbered p = (n * TH + ty) * TW + tx).
#pragma once

#include <cstdint>

namespace swcnn {

struct TilePosition {
  int64_t n, ty, tx;  // image, tile row, tile column
};

__device__ __forceinline__ TilePosition tile_position(int64_t p, int64_t tiles_h,
                                                      int64_t tiles_w) {
  const int64_t per_image = tiles_h * tiles_w;
  return {p / per_image, (p % per_image) / tiles_w, p % tiles_w};
}

// fn(i, pixel) for the pixels of the tile's 2x2 output block (i = 2 * row +
// column within the block) that lie inside the out_h x out_w output; `pixel`
// is (n * out_h + row) * out_w + column. Cropped pixels are skipped.
template <typename Fn>
__device__ __forceinline__ void for_each_output_pixel(const TilePosition& at, int64_t out_h,
                                                      int64_t out_w, Fn&& fn) {
#pragma unroll
  for (int a = 0; a < 2; ++a) {
    const int64_t row = 2 * at.ty + a;
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      const int64_t col = 2 * at.tx + b;
      if (row < out_h && col < out_w) fn(2 * a + b, (at.n * out_h + row) * out_w + col);
    }
  }
}

}  // namespace swcnn
