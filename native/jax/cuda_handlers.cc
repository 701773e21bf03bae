// XLA FFI handlers (JAX, platform "CUDA") for the Winograd transforms.
//
// Translation only: buffers, attributes and XLA's stream in; shapes validated
// (an ffi::Error on any mismatch); the CUDA kernels enqueued on that stream;
// a failed launch returned as an ffi::Error.
#include "cuda_handlers.h"

#include <cuda_runtime.h>

#include <string>

#include "ffi_shapes.h"
#include "swcnn/cuda_conv.h"
#include "swcnn/cuda_transforms.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using namespace swcnn::jax_ffi;  // NOLINT: the handlers' own helpers

namespace {

using F32Buffer = ffi::Buffer<ffi::F32>;
using F32Result = ffi::ResultBuffer<ffi::F32>;
using Stream = ffi::PlatformStream<cudaStream_t>;

ffi::Error status(int error) {
  if (error == 0) return ffi::Error::Success();
  return ffi::Error::Internal(std::string("keras_swcnn: CUDA launch failed: ") +
                              swcnn::cuda_error_string(error));
}

ffi::Error InputTransform(cudaStream_t stream, F32Buffer x, F32Result v, int64_t pad_top,
                          int64_t pad_left, int64_t tiles_h, int64_t tiles_w, bool relu) {
  swcnn::InputTransformShape s;
  ffi::Error error = input_shape(x.dimensions(), v->dimensions(), pad_top, pad_left,
                                 tiles_h, tiles_w, &s);
  if (error.failure()) return error;
  return status(
      swcnn::input_transform_cuda(x.typed_data(), s, relu, v->typed_data(), stream));
}

ffi::Error InputTransformBackward(cudaStream_t stream, F32Buffer dv, F32Buffer v, F32Result dx,
                                  int64_t pad_top, int64_t pad_left, int64_t tiles_h,
                                  int64_t tiles_w, bool relu) {
  swcnn::InputTransformShape s;
  ffi::Error error = input_shape(dx->dimensions(), dv.dimensions(), pad_top, pad_left,
                                 tiles_h, tiles_w, &s);
  if (error.failure()) return error;
  if (relu && (error = same_tiles(v.dimensions(), dv.dimensions())).failure()) return error;
  return status(swcnn::input_transform_backward_cuda(dv.typed_data(), v.typed_data(), s, relu,
                                                     dx->typed_data(), stream));
}

ffi::Error OutputTransform(cudaStream_t stream, F32Buffer m, F32Result y, int64_t tiles_h,
                           int64_t tiles_w) {
  swcnn::OutputTransformShape s;
  ffi::Error error = output_shape(m.dimensions(), y->dimensions(), tiles_h, tiles_w, &s);
  if (error.failure()) return error;
  return status(swcnn::output_transform_cuda(m.typed_data(), s, y->typed_data(), stream));
}

ffi::Error OutputTransformBackward(cudaStream_t stream, F32Buffer dy, F32Result dm,
                                   int64_t tiles_h, int64_t tiles_w) {
  swcnn::OutputTransformShape s;
  ffi::Error error = output_shape(dm->dimensions(), dy.dimensions(), tiles_h, tiles_w, &s);
  if (error.failure()) return error;
  return status(
      swcnn::output_transform_backward_cuda(dy.typed_data(), s, dm->typed_data(), stream));
}

// The fused forward for float32, bfloat16 or float16: x, u and y share the
// type. `products` picks how float32 products run (swcnn::Float32Products).
ffi::Error ConvForward(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer u,
                       ffi::Result<ffi::AnyBuffer> y, int64_t pad_top, int64_t pad_left,
                       int64_t tiles_h, int64_t tiles_w, bool relu, int64_t products) {
  swcnn::ConvShape s;
  ffi::Error error = conv_shape(x.dimensions(), u.dimensions(), y->dimensions(), pad_top,
                                pad_left, tiles_h, tiles_w, &s);
  if (error.failure()) return error;
  const ffi::DataType type = x.element_type();
  if (u.element_type() != type || y->element_type() != type)
    return invalid("input, kernel and output must have the same dtype");
  if (products != 0 && products != 1)
    return invalid("products must be 0 (TF32) or 1 (three-pass TF32)");
  switch (type) {
    case ffi::DataType::F32:
      return status(swcnn::conv_forward_cuda(
          x.typed_data<float>(), u.typed_data<float>(), s, relu,
          static_cast<swcnn::Float32Products>(products), y->typed_data<float>(), stream));
    case ffi::DataType::BF16:
      return status(swcnn::conv_forward_cuda_bf16(x.typed_data<uint16_t>(),
                                                  u.typed_data<uint16_t>(), s, relu,
                                                  y->typed_data<uint16_t>(), stream));
    case ffi::DataType::F16:
      return status(swcnn::conv_forward_cuda_f16(x.typed_data<uint16_t>(),
                                                 u.typed_data<uint16_t>(), s, relu,
                                                 y->typed_data<uint16_t>(), stream));
    default:
      return invalid("the fused CUDA convolution supports float32, bfloat16 and float16");
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SwcnnConvForwardCuda, ConvForward,
    input_transform_attributes(ffi::Ffi::Bind()
                                   .Ctx<Stream>()
                                   .Arg<ffi::AnyBuffer>()
                                   .Arg<ffi::AnyBuffer>()
                                   .Ret<ffi::AnyBuffer>())
        .Attr<int64_t>("products"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SwcnnInputTransformCuda, InputTransform,
    input_transform_attributes(ffi::Ffi::Bind().Ctx<Stream>().Arg<F32Buffer>().Ret<F32Buffer>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SwcnnInputTransformBackwardCuda, InputTransformBackward,
    input_transform_attributes(
        ffi::Ffi::Bind().Ctx<Stream>().Arg<F32Buffer>().Arg<F32Buffer>().Ret<F32Buffer>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SwcnnOutputTransformCuda, OutputTransform,
    output_transform_attributes(ffi::Ffi::Bind().Ctx<Stream>().Arg<F32Buffer>().Ret<F32Buffer>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SwcnnOutputTransformBackwardCuda, OutputTransformBackward,
    output_transform_attributes(ffi::Ffi::Bind().Ctx<Stream>().Arg<F32Buffer>().Ret<F32Buffer>()));
