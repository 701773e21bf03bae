// XLA FFI handlers (JAX, platform "cpu") for the Winograd transforms.
//
// Translation only: buffers and attributes in, shape structs built and
// validated (an ffi::Error on any mismatch, never a crash), kernels called.
#include "cpu_handlers.h"

#include <string>

#include "swcnn/transforms.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using F32Buffer = ffi::Buffer<ffi::F32>;
using F32Result = ffi::ResultBuffer<ffi::F32>;

ffi::Error invalid(const std::string& what) {
  return ffi::Error::InvalidArgument("keras_swcnn: " + what);
}

// Builds the input-transform shape from an NHWC buffer and the attributes,
// and checks the tile buffer has shape [16, N*TH*TW, C].
ffi::Error input_shape(ffi::Span<const int64_t> image, ffi::Span<const int64_t> tiles,
                       int64_t pad_top, int64_t pad_left, int64_t tiles_h,
                       int64_t tiles_w, swcnn::InputTransformShape* s) {
  if (image.size() != 4) return invalid("input must be 4D NHWC");
  if (tiles.size() != 3) return invalid("tiles must be 3D [16, N*TH*TW, C]");
  *s = {image[0], image[1], image[2], image[3], pad_top, pad_left, tiles_h, tiles_w};
  std::string error = swcnn::validate(*s);
  if (!error.empty()) return invalid(error);
  if (tiles[0] != 16 || tiles[1] != s->num_tiles() || tiles[2] != s->channels)
    return invalid("tiles must have shape [16, N*TH*TW, C] for the given input");
  return ffi::Error::Success();
}

ffi::Error output_shape(ffi::Span<const int64_t> products, ffi::Span<const int64_t> image,
                        int64_t tiles_h, int64_t tiles_w, swcnn::OutputTransformShape* s) {
  if (products.size() != 3) return invalid("products must be 3D [16, N*TH*TW, K]");
  if (image.size() != 4) return invalid("output must be 4D NHWC");
  *s = {image[0], tiles_h, tiles_w, image[3], image[1], image[2]};
  std::string error = swcnn::validate(*s);
  if (!error.empty()) return invalid(error);
  if (products[0] != 16 || products[1] != s->num_tiles() || products[2] != s->channels)
    return invalid("products must have shape [16, N*TH*TW, K] for the given output");
  return ffi::Error::Success();
}

ffi::Error InputTransform(F32Buffer x, F32Result v, int64_t pad_top, int64_t pad_left,
                          int64_t tiles_h, int64_t tiles_w, bool relu) {
  swcnn::InputTransformShape s;
  ffi::Error error = input_shape(x.dimensions(), v->dimensions(), pad_top, pad_left,
                                 tiles_h, tiles_w, &s);
  if (error.failure()) return error;
  swcnn::input_transform_cpu(x.typed_data(), s, relu, v->typed_data());
  return ffi::Error::Success();
}

ffi::Error InputTransformBackward(F32Buffer dv, F32Buffer v, F32Result dx, int64_t pad_top,
                                  int64_t pad_left, int64_t tiles_h, int64_t tiles_w,
                                  bool relu) {
  swcnn::InputTransformShape s;
  ffi::Error error = input_shape(dx->dimensions(), dv.dimensions(), pad_top, pad_left,
                                 tiles_h, tiles_w, &s);
  if (error.failure()) return error;
  if (relu) {
    auto forward = v.dimensions(), gradient = dv.dimensions();
    if (forward.size() != 3 || forward[0] != gradient[0] || forward[1] != gradient[1] ||
        forward[2] != gradient[2])
      return invalid("the forward tiles must have the shape of their gradient");
  }
  swcnn::input_transform_backward_cpu(dv.typed_data(), v.typed_data(), s, relu,
                                      dx->typed_data());
  return ffi::Error::Success();
}

ffi::Error OutputTransform(F32Buffer m, F32Result y, int64_t tiles_h, int64_t tiles_w) {
  swcnn::OutputTransformShape s;
  ffi::Error error = output_shape(m.dimensions(), y->dimensions(), tiles_h, tiles_w, &s);
  if (error.failure()) return error;
  swcnn::output_transform_cpu(m.typed_data(), s, y->typed_data());
  return ffi::Error::Success();
}

ffi::Error OutputTransformBackward(F32Buffer dy, F32Result dm, int64_t tiles_h,
                                   int64_t tiles_w) {
  swcnn::OutputTransformShape s;
  ffi::Error error = output_shape(dm->dimensions(), dy.dimensions(), tiles_h, tiles_w, &s);
  if (error.failure()) return error;
  swcnn::output_transform_backward_cpu(dy.typed_data(), s, dm->typed_data());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SwcnnInputTransformCpu, InputTransform,
                              ffi::Ffi::Bind()
                                  .Arg<F32Buffer>()
                                  .Ret<F32Buffer>()
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left")
                                  .Attr<int64_t>("tiles_h")
                                  .Attr<int64_t>("tiles_w")
                                  .Attr<bool>("relu"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SwcnnInputTransformBackwardCpu, InputTransformBackward,
                              ffi::Ffi::Bind()
                                  .Arg<F32Buffer>()
                                  .Arg<F32Buffer>()
                                  .Ret<F32Buffer>()
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left")
                                  .Attr<int64_t>("tiles_h")
                                  .Attr<int64_t>("tiles_w")
                                  .Attr<bool>("relu"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SwcnnOutputTransformCpu, OutputTransform,
                              ffi::Ffi::Bind()
                                  .Arg<F32Buffer>()
                                  .Ret<F32Buffer>()
                                  .Attr<int64_t>("tiles_h")
                                  .Attr<int64_t>("tiles_w"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SwcnnOutputTransformBackwardCpu, OutputTransformBackward,
                              ffi::Ffi::Bind()
                                  .Arg<F32Buffer>()
                                  .Ret<F32Buffer>()
                                  .Attr<int64_t>("tiles_h")
                                  .Attr<int64_t>("tiles_w"));
