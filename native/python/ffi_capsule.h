// An XLA FFI handler as the PyCapsule that jax.ffi.register_ffi_target takes.
#pragma once

#include <nanobind/nanobind.h>

#include "xla/ffi/api/c_api.h"

namespace swcnn::python {

inline nanobind::capsule handler_capsule(XLA_FFI_Error* (*handler)(XLA_FFI_CallFrame*)) {
  return nanobind::capsule(reinterpret_cast<void*>(handler));
}

}  // namespace swcnn::python
