// Shape checks shared by the JAX (XLA FFI) handlers of every platform:
// buffers' dimensions and attributes become a validated shape struct, or an
// ffi::Error naming the problem.
#pragma once

#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>

#include "swcnn/conv.h"
#include "swcnn/sparse_conv.h"
#include "swcnn/transforms.h"
#include "xla/ffi/api/ffi.h"

namespace swcnn::jax_ffi {

namespace ffi = xla::ffi;

inline ffi::Error invalid(const std::string& what) {
  return ffi::Error::InvalidArgument("keras_swcnn: " + what);
}

// An NHWC image buffer and its [16, N*TH*TW, C] tile buffer.
inline ffi::Error input_shape(ffi::Span<const int64_t> image, ffi::Span<const int64_t> tiles,
                              int64_t pad_top, int64_t pad_left, int64_t tiles_h,
                              int64_t tiles_w, InputTransformShape* s) {
  if (image.size() != 4) return invalid("input must be 4D NHWC");
  if (tiles.size() != 3) return invalid("tiles must be 3D [16, N*TH*TW, C]");
  *s = {image[0], image[1], image[2], image[3], pad_top, pad_left, tiles_h, tiles_w};
  std::string error = validate(*s);
  if (!error.empty()) return invalid(error);
  if (tiles[0] != 16 || tiles[1] != s->num_tiles() || tiles[2] != s->channels)
    return invalid("tiles must have shape [16, N*TH*TW, C] for the given input");
  return ffi::Error::Success();
}

// A [16, N*TH*TW, K] product buffer and its NHWC output buffer.
inline ffi::Error output_shape(ffi::Span<const int64_t> products,
                               ffi::Span<const int64_t> image, int64_t tiles_h,
                               int64_t tiles_w, OutputTransformShape* s) {
  if (products.size() != 3) return invalid("products must be 3D [16, N*TH*TW, K]");
  if (image.size() != 4) return invalid("output must be 4D NHWC");
  *s = {image[0], tiles_h, tiles_w, image[3], image[1], image[2]};
  std::string error = validate(*s);
  if (!error.empty()) return invalid(error);
  if (products[0] != 16 || products[1] != s->num_tiles() || products[2] != s->channels)
    return invalid("products must have shape [16, N*TH*TW, K] for the given output");
  return ffi::Error::Success();
}

// The forward tiles (for the relu mask) must match their gradient's shape.
inline ffi::Error same_tiles(ffi::Span<const int64_t> forward, ffi::Span<const int64_t> gradient) {
  if (forward.size() != 3 || gradient.size() != 3 || forward[0] != gradient[0] ||
      forward[1] != gradient[1] || forward[2] != gradient[2])
    return invalid("the forward tiles must have the shape of their gradient");
  return ffi::Error::Success();
}

// The fused convolution's shape from x [N, H, W, C], u [16, C, K], the NHWC
// output (or its gradient) and the tile attributes.
inline ffi::Error conv_shape(ffi::Span<const int64_t> x, ffi::Span<const int64_t> u,
                             ffi::Span<const int64_t> y, int64_t pad_top, int64_t pad_left,
                             int64_t tiles_h, int64_t tiles_w, ConvShape* s) {
  if (x.size() != 4) return invalid("input must be 4D NHWC");
  if (u.size() != 3 || u[0] != 16 || u[1] != x[3])
    return invalid("kernel must have shape [16, C, K] with C the input's channels");
  if (y.size() != 4 || y[0] != x[0] || y[3] != u[2])
    return invalid("output must have shape [N, OH, OW, K] for the input and kernel");
  *s = {x[0], x[1], x[2], x[3], u[2], pad_top, pad_left, tiles_h, tiles_w, y[1], y[2]};
  std::string error = validate(*s);
  if (!error.empty()) return invalid(error);
  return ffi::Error::Success();
}

// The sparse convolution's shape from x [N, H, W, C], mask [16, K, words],
// values [count] and the NHWC output; the mask's contents are checked too.
inline ffi::Error sparse_conv_shape(ffi::Span<const int64_t> x, ffi::Span<const int64_t> mask,
                                    ffi::Span<const int64_t> values,
                                    ffi::Span<const int64_t> y, int64_t pad_top,
                                    int64_t pad_left, int64_t tiles_h, int64_t tiles_w,
                                    ConvShape* s) {
  if (x.size() != 4) return invalid("input must be 4D NHWC");
  if (mask.size() != 3 || mask[0] != 16 || mask[2] != sparse_mask_words(x[3]))
    return invalid("mask must have shape [16, K, ceil(C / 32)] with C the input's channels");
  if (values.size() != 1) return invalid("values must be 1D");
  if (y.size() != 4 || y[0] != x[0] || y[3] != mask[1])
    return invalid("output must have shape [N, OH, OW, K] for the input and mask");
  *s = {x[0], x[1], x[2], x[3], mask[1], pad_top, pad_left, tiles_h, tiles_w, y[1], y[2]};
  std::string error = validate(*s);
  if (!error.empty()) return invalid(error);
  return ffi::Error::Success();
}

// Runs a kernel that may throw (scratch memory, worker failures) and turns
// any exception into an ffi::Error: nothing escapes into XLA.
template <typename Fn>
ffi::Error run_kernel(Fn&& fn) {
  try {
    fn();
    return ffi::Error::Success();
  } catch (const std::invalid_argument& error) {  // what a kernel's own validation refused
    return invalid(error.what());
  } catch (const std::exception& error) {
    return ffi::Error::Internal(std::string("keras_swcnn: ") + error.what());
  } catch (...) {
    return ffi::Error::Internal("keras_swcnn: unknown error in a native kernel");
  }
}

// The attributes each handler takes, appended to a binding that already has
// its context, arguments and results: one list for every platform.
template <typename Binding>
auto input_transform_attributes(Binding binding) {
  return std::move(binding).template Attr<int64_t>("pad_top")
      .template Attr<int64_t>("pad_left")
      .template Attr<int64_t>("tiles_h")
      .template Attr<int64_t>("tiles_w")
      .template Attr<bool>("relu");
}

template <typename Binding>
auto output_transform_attributes(Binding binding) {
  return std::move(binding).template Attr<int64_t>("tiles_h").template Attr<int64_t>("tiles_w");
}

}  // namespace swcnn::jax_ffi
