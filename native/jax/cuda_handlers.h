// The JAX (XLA FFI) CUDA handlers; the _native_cuda module exposes them as capsules.
#pragma once

#include "xla/ffi/api/c_api.h"

extern "C" {
XLA_FFI_Error* SwcnnConvForwardCuda(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* SwcnnInputTransformCuda(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* SwcnnInputTransformBackwardCuda(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* SwcnnOutputTransformCuda(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* SwcnnOutputTransformBackwardCuda(XLA_FFI_CallFrame* call_frame);
}
