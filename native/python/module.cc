// keras_swcnn._native: the numpy front door to the CPU kernels.
//
// Only translation happens here: arrays in, shape structs built, validation
// errors raised as ValueError, kernels called with the GIL released.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_custom_calls.h"
#include "cpu_handlers.h"
#include "graph_ops.h"
#include "ffi_capsule.h"
#include "swcnn/conv.h"
#include "swcnn/executor.h"
#include "swcnn/sparse_conv.h"
#include "swcnn/transforms.h"

namespace nb = nanobind;
using swcnn::python::handler_capsule;

namespace {

using InArray4 = nb::ndarray<const float, nb::ndim<4>, nb::c_contig, nb::device::cpu>;
using InArray3 = nb::ndarray<const float, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using InMask = nb::ndarray<const int32_t, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using InValues = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using OutArray = nb::ndarray<float, nb::c_contig, nb::device::cpu>;
using NumpyArray = nb::ndarray<nb::numpy, float>;

void check(const std::string& error) {
  if (!error.empty()) throw nb::value_error(error.c_str());
}

// An input's memory: `out` must not overlap it (the kernels read inputs while
// writing outputs).
struct Span {
  const void* data;
  size_t bytes;
};

bool overlaps(const void* out, size_t out_bytes, const Span& in) {
  const auto a = reinterpret_cast<uintptr_t>(out), b = reinterpret_cast<uintptr_t>(in.data);
  return in.data != nullptr && out_bytes > 0 && in.bytes > 0 && a < b + in.bytes &&
         b < a + out_bytes;
}

// Use `out` when given (its shape must match exactly and it must not overlap
// `inputs`), else allocate. `out` is bound without conversion (float32,
// C-contiguous, CPU), so a result is never left in a temporary copy.
float* output_buffer(std::optional<OutArray>& out, const std::vector<size_t>& shape,
                     nb::object& owner_array, std::initializer_list<Span> inputs = {}) {
  if (out) {
    bool same = out->ndim() == shape.size();
    for (size_t i = 0; same && i < shape.size(); ++i) same = out->shape(i) == shape[i];
    if (!same) throw nb::value_error("`out` has the wrong shape");
    for (const Span& in : inputs)
      if (overlaps(out->data(), out->size() * sizeof(float), in))
        throw nb::value_error("`out` overlaps an input; pass a separate array");
    return out->data();
  }
  size_t count = 1;
  for (size_t d : shape) count *= d;
  float* data = new float[count > 0 ? count : 1];
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
  owner_array = nb::cast(NumpyArray(data, shape.size(), shape.data(), owner));
  return data;
}

nb::object input_transform(InArray4 x, int64_t pad_top, int64_t pad_left,
                           int64_t tiles_h, int64_t tiles_w, bool relu,
                           std::optional<OutArray> out) {
  const swcnn::InputTransformShape s{int64_t(x.shape(0)), int64_t(x.shape(1)),
                                     int64_t(x.shape(2)), int64_t(x.shape(3)),
                                     pad_top, pad_left, tiles_h, tiles_w};
  check(swcnn::validate(s));
  nb::object result = out ? nb::cast(*out) : nb::none();
  float* v = output_buffer(out, {16, size_t(s.num_tiles()), size_t(s.channels)}, result,
                           {{x.data(), x.size() * sizeof(float)}});
  {
    nb::gil_scoped_release release;
    swcnn::input_transform_cpu(x.data(), s, relu, v);
  }
  return result;
}

nb::object output_transform(InArray3 m, int64_t batch, int64_t tiles_h,
                            int64_t tiles_w, int64_t out_h, int64_t out_w,
                            std::optional<OutArray> out) {
  const swcnn::OutputTransformShape s{batch, tiles_h, tiles_w, int64_t(m.shape(2)), out_h, out_w};
  check(swcnn::validate(s));
  if (m.shape(0) != 16 || int64_t(m.shape(1)) != s.num_tiles())
    throw nb::value_error("products must have shape [16, batch * tiles_h * tiles_w, K]");
  nb::object result = out ? nb::cast(*out) : nb::none();
  float* y = output_buffer(
      out, {size_t(batch), size_t(out_h), size_t(out_w), size_t(s.channels)}, result,
      {{m.data(), m.size() * sizeof(float)}});
  {
    nb::gil_scoped_release release;
    swcnn::output_transform_cpu(m.data(), s, y);
  }
  return result;
}

nb::object input_transform_backward(InArray3 dv, std::optional<InArray3> v, int64_t batch,
                                    int64_t height, int64_t width, int64_t pad_top,
                                    int64_t pad_left, int64_t tiles_h, int64_t tiles_w,
                                    bool relu, std::optional<OutArray> out) {
  const swcnn::InputTransformShape s{batch,   height,   width,   int64_t(dv.shape(2)),
                                     pad_top, pad_left, tiles_h, tiles_w};
  check(swcnn::validate(s));
  if (dv.shape(0) != 16 || int64_t(dv.shape(1)) != s.num_tiles())
    throw nb::value_error("dv must have shape [16, batch * tiles_h * tiles_w, C]");
  if (relu) {
    if (!v) throw nb::value_error("relu=True needs the forward tiles v");
    for (size_t i = 0; i < 3; ++i)
      if (v->shape(i) != dv.shape(i)) throw nb::value_error("v must have the shape of dv");
  }
  nb::object result = out ? nb::cast(*out) : nb::none();
  const float* v_data = relu ? v->data() : nullptr;
  float* dx = output_buffer(
      out, {size_t(batch), size_t(height), size_t(width), size_t(s.channels)}, result,
      {{dv.data(), dv.size() * sizeof(float)}, {v_data, relu ? v->size() * sizeof(float) : 0}});
  {
    nb::gil_scoped_release release;
    swcnn::input_transform_backward_cpu(dv.data(), v_data, s, relu, dx);
  }
  return result;
}

nb::object output_transform_backward(InArray4 dy, int64_t tiles_h, int64_t tiles_w,
                                     std::optional<OutArray> out) {
  const swcnn::OutputTransformShape s{int64_t(dy.shape(0)), tiles_h, tiles_w,
                                      int64_t(dy.shape(3)), int64_t(dy.shape(1)),
                                      int64_t(dy.shape(2))};
  check(swcnn::validate(s));
  nb::object result = out ? nb::cast(*out) : nb::none();
  float* dm = output_buffer(out, {16, size_t(s.num_tiles()), size_t(s.channels)}, result,
                            {{dy.data(), dy.size() * sizeof(float)}});
  {
    nb::gil_scoped_release release;
    swcnn::output_transform_backward_cpu(dy.data(), s, dm);
  }
  return result;
}

// The convolution's shape from the input, the kernel and the tile geometry.
swcnn::ConvShape conv_shape(const InArray4& x, const InArray3& u, int64_t pad_top,
                            int64_t pad_left, int64_t tiles_h, int64_t tiles_w, int64_t out_h,
                            int64_t out_w) {
  if (u.shape(0) != 16 || u.shape(1) != x.shape(3))
    throw nb::value_error("u must have shape [16, C, K] with C the input's channels");
  const swcnn::ConvShape s{int64_t(x.shape(0)), int64_t(x.shape(1)), int64_t(x.shape(2)),
                           int64_t(x.shape(3)), int64_t(u.shape(2)), pad_top,
                           pad_left,            tiles_h,             tiles_w,
                           out_h,               out_w};
  check(swcnn::validate(s));
  return s;
}

nb::object conv_forward(InArray4 x, InArray3 u, int64_t pad_top, int64_t pad_left,
                        int64_t tiles_h, int64_t tiles_w, int64_t out_h, int64_t out_w,
                        bool relu) {
  const swcnn::ConvShape s = conv_shape(x, u, pad_top, pad_left, tiles_h, tiles_w, out_h, out_w);
  std::optional<OutArray> none;
  nb::object result;
  float* y = output_buffer(none, {size_t(s.batch), size_t(out_h), size_t(out_w),
                                  size_t(s.out_channels)}, result);
  {
    nb::gil_scoped_release release;
    swcnn::conv_forward_cpu(x.data(), u.data(), s, relu, y);
  }
  return result;
}

nb::tuple conv_backward(InArray4 x, InArray3 u, InArray4 dy, int64_t pad_top, int64_t pad_left,
                        int64_t tiles_h, int64_t tiles_w, bool relu) {
  const swcnn::ConvShape s = conv_shape(x, u, pad_top, pad_left, tiles_h, tiles_w,
                                        int64_t(dy.shape(1)), int64_t(dy.shape(2)));
  if (int64_t(dy.shape(0)) != s.batch || int64_t(dy.shape(3)) != s.out_channels)
    throw nb::value_error("dy must have shape [N, OH, OW, K] for the input and kernel");
  std::optional<OutArray> none;
  nb::object dx_array, du_array;
  float* dx = output_buffer(none, {size_t(s.batch), size_t(s.height), size_t(s.width),
                                   size_t(s.in_channels)}, dx_array);
  float* du = output_buffer(none, {16, size_t(s.in_channels), size_t(s.out_channels)}, du_array);
  {
    nb::gil_scoped_release release;
    swcnn::conv_backward_cpu(x.data(), u.data(), dy.data(), s, relu, dx, du);
  }
  return nb::make_tuple(dx_array, du_array);
}

swcnn::SparseMode sparse_mode(const std::string& mode) {
  if (mode == "auto") return swcnn::SparseMode::kAuto;
  if (mode == "sparse") return swcnn::SparseMode::kSparse;
  if (mode == "dense") return swcnn::SparseMode::kDense;
  throw nb::value_error("mode must be 'auto', 'sparse' or 'dense'");
}

nb::object sparse_conv_forward(InArray4 x, InMask mask, InValues values, int64_t pad_top,
                               int64_t pad_left, int64_t tiles_h, int64_t tiles_w,
                               int64_t out_h, int64_t out_w, bool relu,
                               const std::string& mode) {
  const int64_t C = int64_t(x.shape(3)), K = int64_t(mask.shape(1));
  if (mask.shape(0) != 16 || int64_t(mask.shape(2)) != swcnn::sparse_mask_words(C))
    throw nb::value_error("mask must have shape [16, K, ceil(C / 32)] for the input's C");
  const swcnn::ConvShape s{int64_t(x.shape(0)), int64_t(x.shape(1)), int64_t(x.shape(2)),
                           C, K, pad_top, pad_left, tiles_h, tiles_w, out_h, out_w};
  // int32 on the Python side (every framework has it); the bits are the same.
  const swcnn::SparseKernel u{reinterpret_cast<const uint32_t*>(mask.data()), values.data(),
                              int64_t(values.shape(0))};
  check(swcnn::validate(s));  // the kernel checks the mask (std::invalid_argument: ValueError)
  const swcnn::SparseMode chosen = sparse_mode(mode);
  std::optional<OutArray> none;
  nb::object result;
  float* y = output_buffer(none, {size_t(s.batch), size_t(out_h), size_t(out_w), size_t(K)},
                           result);
  {
    nb::gil_scoped_release release;
    swcnn::sparse_conv_forward_cpu(x.data(), u, s, relu, y, chosen);
  }
  return result;
}

// The kernels' own shape checks, for callers that emit kernel calls without
// running them (TensorFlow traces custom calls that run later, where they
// cannot report errors): "" when the shape is supported, else why not.
std::string check_input_transform(int64_t batch, int64_t height, int64_t width, int64_t channels,
                                  int64_t pad_top, int64_t pad_left, int64_t tiles_h,
                                  int64_t tiles_w) {
  return swcnn::validate(swcnn::InputTransformShape{batch, height, width, channels, pad_top,
                                                    pad_left, tiles_h, tiles_w});
}

std::string check_output_transform(int64_t batch, int64_t tiles_h, int64_t tiles_w,
                                   int64_t channels, int64_t out_h, int64_t out_w) {
  return swcnn::validate(
      swcnn::OutputTransformShape{batch, tiles_h, tiles_w, channels, out_h, out_w});
}

std::string check_conv(int64_t batch, int64_t height, int64_t width, int64_t in_channels,
                       int64_t out_channels, int64_t pad_top, int64_t pad_left, int64_t tiles_h,
                       int64_t tiles_w, int64_t out_h, int64_t out_w) {
  return swcnn::validate(swcnn::ConvShape{batch, height, width, in_channels, out_channels,
                                          pad_top, pad_left, tiles_h, tiles_w, out_h, out_w});
}

}  // namespace

NB_MODULE(_native, module) {
  module.def("check_input_transform", &check_input_transform,
             "'' when the input-transform shape is supported, else why not.");
  module.def("check_output_transform", &check_output_transform,
             "'' when the output-transform shape is supported, else why not.");
  module.def("check_conv", &check_conv, "'' when the convolution shape is supported, else why not.");
  module.doc() = "keras-swcnn native CPU kernels (Winograd F(2x2,3x3) transforms).";
  module.def("input_transform", &input_transform, nb::arg("x"), nb::arg("pad_top"),
             nb::arg("pad_left"), nb::arg("tiles_h"), nb::arg("tiles_w"),
             nb::arg("relu"), nb::arg("out").noconvert() = nb::none(),
             "v[16, N*TH*TW, C] = (relu of) B^T d B for each 4x4 tile of the "
             "zero-padded NHWC float32 input.");
  module.def("output_transform", &output_transform, nb::arg("m"), nb::arg("batch"),
             nb::arg("tiles_h"), nb::arg("tiles_w"), nb::arg("out_h"), nb::arg("out_w"),
             nb::arg("out").noconvert() = nb::none(),
             "y[N, OH, OW, K] = A^T m A for each tile, cropped to OH x OW.");
  module.def("input_transform_backward", &input_transform_backward, nb::arg("dv"),
             nb::arg("v").none(), nb::arg("batch"), nb::arg("height"), nb::arg("width"),
             nb::arg("pad_top"), nb::arg("pad_left"), nb::arg("tiles_h"), nb::arg("tiles_w"),
             nb::arg("relu"), nb::arg("out").noconvert() = nb::none(),
             "dx[N, H, W, C] = sum over tiles of B (dv masked by v > 0) B^T.");
  module.def("output_transform_backward", &output_transform_backward, nb::arg("dy"),
             nb::arg("tiles_h"), nb::arg("tiles_w"), nb::arg("out").noconvert() = nb::none(),
             "dm[16, N*TH*TW, K] = A dy A^T per tile.");
  module.def("conv_forward", &conv_forward, nb::arg("x"), nb::arg("u"), nb::arg("pad_top"),
             nb::arg("pad_left"), nb::arg("tiles_h"), nb::arg("tiles_w"), nb::arg("out_h"),
             nb::arg("out_w"), nb::arg("relu"),
             "y[N, OH, OW, K]: the fused Winograd(-ReLU) convolution of NHWC x with "
             "u[16, C, K].");
  module.def("conv_backward", &conv_backward, nb::arg("x"), nb::arg("u"), nb::arg("dy"),
             nb::arg("pad_top"), nb::arg("pad_left"), nb::arg("tiles_h"), nb::arg("tiles_w"),
             nb::arg("relu"), "(dx, du): the fused convolution's gradients for dy.");
  module.def("sparse_conv_forward", &sparse_conv_forward, nb::arg("x"), nb::arg("mask"),
             nb::arg("values"), nb::arg("pad_top"), nb::arg("pad_left"), nb::arg("tiles_h"),
             nb::arg("tiles_w"), nb::arg("out_h"), nb::arg("out_w"), nb::arg("relu"),
             nb::arg("mode") = "auto",
             "y[N, OH, OW, K]: the Winograd(-ReLU) convolution with a compressed kernel "
             "(mask int32 [16, K, ceil(C/32)], values in (t, k, c) order).");
  module.def("sparse_mask_cache", []() {
    const swcnn::DecodedMaskStats stats = swcnn::decoded_mask_stats();
    return nb::make_tuple(stats.kept, stats.decoded);
  }, "(kept, decoded): decoded sparse masks kept, and calls so far that decoded one.");
  module.def("lent_parallel_calls", &swcnn::lent_parallel_calls,
             "Parallel kernel steps run so far on threads a framework lent (JAX: XLA's "
             "intra-op pool; torch: its OpenMP threads); for tests.");
  module.def("use_openmp_threads", &swcnn::use_openmp_threads, nb::arg("on"),
             "Run kernel calls on the OpenMP runtime already loaded in the process (torch's) "
             "instead of swcnn's pool; returns whether one was found. False: the pool again.");
  module.def("openmp_max_threads", &swcnn::openmp_max_threads,
             "omp_get_max_threads() of the OpenMP runtime in use, 0 when the pool is.");
  module.def("conv_isa", []() { return std::string(swcnn::conv_isa()); },
             "The instruction set the fused kernels use on this CPU.");
  module.def("kernels", []() {
    return std::vector<std::string>{"input_transform_cpu", "input_transform_backward_cpu",
                                    "output_transform_cpu", "output_transform_backward_cpu",
                                    "conv_forward_cpu", "conv_backward_cpu",
                                    "sparse_conv_forward_cpu"};
  });
  module.def("register_tensorflow_cpu_targets", [](const std::string& library) {
    std::string error = swcnn::tensorflow::register_cpu_targets(library);
    if (!error.empty()) throw std::runtime_error(error);
    std::vector<std::string> names;
    for (const auto& target : swcnn::tensorflow::cpu_targets()) names.push_back(target.name);
    return names;
  }, nb::arg("library"),
     "Register the TensorFlow custom-call targets (platform Host) in the XLA of the "
     "already-loaded TensorFlow library; returns their names.");
  module.def("register_tensorflow_graph_ops", [](const std::string& library) {
    std::string error = swcnn::tensorflow::register_graph_ops(library);
    if (!error.empty()) throw std::runtime_error(error);
    return swcnn::tensorflow::graph_op_names();
  }, nb::arg("library"),
     "Register the TensorFlow ops (graph and eager mode, any batch size) and their CPU "
     "kernels through TensorFlow's C API in the already-loaded libtensorflow_framework; "
     "returns their names. Later calls return the first call's outcome.");
  module.def("jax_cpu_targets", []() {
    nb::dict targets;
    targets["swcnn_input_transform"] = handler_capsule(SwcnnInputTransformCpu);
    targets["swcnn_input_transform_backward"] = handler_capsule(SwcnnInputTransformBackwardCpu);
    targets["swcnn_output_transform"] = handler_capsule(SwcnnOutputTransformCpu);
    targets["swcnn_output_transform_backward"] = handler_capsule(SwcnnOutputTransformBackwardCpu);
    targets["swcnn_conv_forward"] = handler_capsule(SwcnnConvForwardCpu);
    targets["swcnn_conv_backward"] = handler_capsule(SwcnnConvBackwardCpu);
    targets["swcnn_sparse_conv_forward"] = handler_capsule(SwcnnSparseConvForwardCpu);
    return targets;
  }, "XLA FFI handlers for JAX's CPU platform, as {target name: PyCapsule}.");
}
