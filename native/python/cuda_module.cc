// keras_swcnn._native_cuda: the CUDA kernels' XLA FFI handlers as capsules.
//
// A separate extension so that CPU-only installs and CPU sessions never load
// CUDA code; Python imports it only when a GPU backend is active.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <string>
#include <vector>

#include "cuda_handlers.h"
#include "ffi_capsule.h"

namespace nb = nanobind;

NB_MODULE(_native_cuda, module) {
  module.doc() = "keras-swcnn CUDA kernels (Winograd F(2x2,3x3) transforms and the fused forward) for XLA.";
  module.def("kernels", []() {
    return std::vector<std::string>{"input_transform_cuda", "input_transform_backward_cuda",
                                    "output_transform_cuda", "output_transform_backward_cuda",
                                    "conv_forward_cuda"};
  });
  module.def("jax_cuda_targets", []() {
    using swcnn::python::handler_capsule;
    nb::dict targets;
    targets["swcnn_conv_forward_cuda"] = handler_capsule(SwcnnConvForwardCuda);
    targets["swcnn_input_transform"] = handler_capsule(SwcnnInputTransformCuda);
    targets["swcnn_input_transform_backward"] = handler_capsule(SwcnnInputTransformBackwardCuda);
    targets["swcnn_output_transform"] = handler_capsule(SwcnnOutputTransformCuda);
    targets["swcnn_output_transform_backward"] = handler_capsule(SwcnnOutputTransformBackwardCuda);
    return targets;
  }, "XLA FFI handlers for JAX's CUDA platform, as {target name: PyCapsule}.");
}
