// XLA FFI handlers (JAX, platform "cpu") for the Winograd transforms.
//
// Translation only: buffers and attributes in, shape structs built and
// validated (an ffi::Error on any mismatch, never a crash), kernels called.
#include "cpu_handlers.h"

#include <functional>
#include <utility>

#include "ffi_shapes.h"
#include "swcnn/conv.h"
#include "swcnn/executor.h"
#include "swcnn/sparse_conv.h"
#include "swcnn/transforms.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using namespace swcnn::jax_ffi;  // NOLINT: the handlers' own helpers

namespace {

using F32Buffer = ffi::Buffer<ffi::F32>;
using F32Result = ffi::ResultBuffer<ffi::F32>;

// XLA's intra-op threads, lent to the kernels for one handler call: inside
// XLA, swcnn's own pool would compete with them for the same CPUs.
class XlaThreads final : public swcnn::Executor {
 public:
  explicit XlaThreads(ffi::ThreadPool pool)
      : pool_(pool), threads_(static_cast<int>(pool_.num_threads())) {}
  int threads() const override { return threads_; }
  void schedule(std::function<void()> task) override { pool_.Schedule(std::move(task)); }

 private:
  ffi::ThreadPool pool_;
  int threads_;
};

// run_kernel on XLA's threads (on swcnn's pool where XLA lends none).
template <typename Fn>
ffi::Error run_on_xla_threads(ffi::ThreadPool pool, Fn&& fn) {
  XlaThreads threads(pool);
  if (threads.threads() < 1) return run_kernel(std::forward<Fn>(fn));
  swcnn::ScopedExecutor scope(&threads);
  return run_kernel(std::forward<Fn>(fn));
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
  if (relu && (error = same_tiles(v.dimensions(), dv.dimensions())).failure()) return error;
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

ffi::Error ConvForward(ffi::ThreadPool pool, F32Buffer x, F32Buffer u, F32Result y,
                       int64_t pad_top, int64_t pad_left, int64_t tiles_h, int64_t tiles_w,
                       bool relu) {
  swcnn::ConvShape s;
  ffi::Error error = conv_shape(x.dimensions(), u.dimensions(), y->dimensions(), pad_top,
                                pad_left, tiles_h, tiles_w, &s);
  if (error.failure()) return error;
  return run_on_xla_threads(pool, [&] {
    swcnn::conv_forward_cpu(x.typed_data(), u.typed_data(), s, relu, y->typed_data());
  });
}

ffi::Error ConvBackward(ffi::ThreadPool pool, F32Buffer x, F32Buffer u, F32Buffer dy,
                        F32Result dx, F32Result du, int64_t pad_top, int64_t pad_left,
                        int64_t tiles_h, int64_t tiles_w, bool relu) {
  swcnn::ConvShape s;
  ffi::Error error = conv_shape(x.dimensions(), u.dimensions(), dy.dimensions(), pad_top,
                                pad_left, tiles_h, tiles_w, &s);
  if (error.failure()) return error;
  if (dx->element_count() != x.element_count() || du->element_count() != u.element_count())
    return invalid("dx and du must have the shapes of x and u");
  return run_on_xla_threads(pool, [&] {
    swcnn::conv_backward_cpu(x.typed_data(), u.typed_data(), dy.typed_data(), s, relu,
                             dx->typed_data(), du->typed_data());
  });
}

ffi::Error SparseConvForward(ffi::ThreadPool pool, F32Buffer x, ffi::Buffer<ffi::S32> mask,
                             F32Buffer values, F32Result y, int64_t pad_top,
                             int64_t pad_left, int64_t tiles_h, int64_t tiles_w, bool relu,
                             int64_t mode) {
  swcnn::ConvShape s;
  ffi::Error error = sparse_conv_shape(x.dimensions(), mask.dimensions(), values.dimensions(),
                                       y->dimensions(), pad_top, pad_left, tiles_h, tiles_w, &s);
  if (error.failure()) return error;
  if (mode < 0 || mode > 2) return invalid("mode must be 0 (auto), 1 (sparse) or 2 (dense)");
  // int32 in the framework; the bits are the mask's.
  const swcnn::SparseKernel u{reinterpret_cast<const uint32_t*>(mask.typed_data()),
                              values.typed_data(), int64_t(values.element_count())};
  return run_on_xla_threads(pool, [&] {
    swcnn::sparse_conv_forward_cpu(x.typed_data(), u, s, relu, y->typed_data(),
                                   static_cast<swcnn::SparseMode>(mode));
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SwcnnSparseConvForwardCpu, SparseConvForward,
    input_transform_attributes(ffi::Ffi::Bind()
                                   .Ctx<ffi::ThreadPool>()
                                   .Arg<F32Buffer>()
                                   .Arg<ffi::Buffer<ffi::S32>>()
                                   .Arg<F32Buffer>()
                                   .Ret<F32Buffer>())
        .Attr<int64_t>("mode"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SwcnnConvForwardCpu, ConvForward,
    input_transform_attributes(ffi::Ffi::Bind()
                                   .Ctx<ffi::ThreadPool>()
                                   .Arg<F32Buffer>()
                                   .Arg<F32Buffer>()
                                   .Ret<F32Buffer>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SwcnnConvBackwardCpu, ConvBackward,
    input_transform_attributes(ffi::Ffi::Bind()
                                   .Ctx<ffi::ThreadPool>()
                                   .Arg<F32Buffer>()
                                   .Arg<F32Buffer>()
                                   .Arg<F32Buffer>()
                                   .Ret<F32Buffer>()
                                   .Ret<F32Buffer>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SwcnnInputTransformCpu, InputTransform,
    input_transform_attributes(ffi::Ffi::Bind().Arg<F32Buffer>().Ret<F32Buffer>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SwcnnInputTransformBackwardCpu, InputTransformBackward,
    input_transform_attributes(
        ffi::Ffi::Bind().Arg<F32Buffer>().Arg<F32Buffer>().Ret<F32Buffer>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SwcnnOutputTransformCpu, OutputTransform,
    output_transform_attributes(ffi::Ffi::Bind().Arg<F32Buffer>().Ret<F32Buffer>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SwcnnOutputTransformBackwardCpu, OutputTransformBackward,
    output_transform_attributes(ffi::Ffi::Bind().Arg<F32Buffer>().Ret<F32Buffer>()));
