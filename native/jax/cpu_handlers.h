// The JAX (XLA FFI) CPU handlers; the Python module exposes them as capsules.
#pragma once

#include "xla/ffi/api/c_api.h"

extern "C" {
XLA_FFI_Error* SwcnnInputTransformCpu(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* SwcnnInputTransformBackwardCpu(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* SwcnnOutputTransformCpu(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* SwcnnOutputTransformBackwardCpu(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* SwcnnConvForwardCpu(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* SwcnnConvBackwardCpu(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* SwcnnSparseConvForwardCpu(XLA_FFI_CallFrame* call_frame);
}
