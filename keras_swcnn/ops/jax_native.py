"""Native Winograd primitives for the JAX backend: XLA FFI custom calls on CPU and CUDA.

The compiled handlers (``native/jax/cpu_handlers.cc``; on NVIDIA GPUs
``native/jax/cuda_handlers.cc`` from the separate ``_native_cuda`` extension,
imported only when JAX's default backend is a GPU) are registered with
``jax.ffi.register_ffi_target`` on first use and called with
``jax.ffi.ffi_call``. On the CPU the convolution is one fused call forward
and one backward (``native/cpu/conv.cc``: no transformed-tile tensor goes
through memory). On CUDA the backward, and the float32 forward, are composed
of the transform calls and XLA dots for the per-position products; the
bfloat16/float16 forward is one fused tensor-core call
(``native/cuda/fused_conv.cu``; see ``cuda_forward``). Gradients come
from ``jax.custom_vjp`` with the input and kernel as the only residuals: the
backward pass recomputes the transformed tiles (additions only), which keeps
training memory at the level of a plain conv.

Precision on GPUs follows JAX's ``jax_default_matmul_precision``, as XLA's
own dots and cuDNN convolutions do: by default float32 products run on
tensor cores in TF32 (about 1e-3 relative error); under ``"highest"`` or
``"float32"`` they are accurate to float32 (dots at ``Precision.HIGHEST``;
the fused kernel sums three TF32 products per term). CPU
products are always float32.

Dtype rule: the CPU kernels compute in float32; other floating inputs
(float16, bfloat16, float64) are cast to float32 and the result is cast back
to the input's dtype. On CUDA the forward runs bfloat16 and float16 as they
are (products in that type, float32 accumulation); the backward casts them.

Example:
    >>> import numpy as np
    >>> from keras_swcnn.ops import jax_native
    >>> x = np.random.rand(1, 6, 6, 2).astype("float32")
    >>> u = np.random.rand(4, 4, 2, 3).astype("float32")
    >>> jax_native.winograd_conv2d(x, u).shape
    (1, 6, 6, 3)
"""

import functools
import os

import numpy as np
import jax
import jax.numpy as jnp

from keras_swcnn import native
from keras_swcnn.ops import SPARSE_MODES, jax_sharding
from keras_swcnn.ops._shapes import check_kernel_fits, images_in, nhwc_geometry

_registered = False


def unavailable_reason():
    """``None`` when the native JAX path can run here, else why it cannot."""
    if not native.available():
        return f"the native extension did not load ({native.load_error})"
    platform = jax.default_backend()
    if platform == "cpu":
        return None
    if platform in ("gpu", "cuda", "rocm"):
        unsupported = gpu_unsupported_reason(jax.devices()[0])
        if unsupported:
            return unsupported
        if native.cuda_module() is not None:
            return None
        return f"the CUDA extension is not available ({native.cuda_load_error()})"
    return f"no native kernels for the JAX platform {platform!r}"


#: The oldest compute capability the CUDA kernels run on: they are built as sm_80 code (which
#: every 8.x GPU runs), sm_90 code, and compute_90 PTX (compiled by the driver for newer GPUs).
MIN_COMPUTE_CAPABILITY = (8, 0)


def can_run(x):
    """Always: JAX traces with concrete shapes, which is all the kernels need."""
    del x
    return True


def gpu_unsupported_reason(device):
    """Why the CUDA kernels cannot run on the JAX GPU ``device``, or ``None`` if they can."""
    platform_version = str(getattr(getattr(device, "client", None), "platform_version", ""))
    if device.platform == "rocm" or "rocm" in platform_version.lower():
        return "the GPU is an AMD (ROCm) device; the native GPU kernels are CUDA only"
    capability = str(getattr(device, "compute_capability", ""))
    try:
        major, minor = (int(part) for part in capability.split(".")[:2])
    except ValueError:
        return f"the compute capability of {device} is unknown ({capability!r})"
    if (major, minor) < MIN_COMPUTE_CAPABILITY:
        return (f"{getattr(device, 'device_kind', device)} has compute capability {capability}; "
                "the CUDA kernels are built for 8.0 and newer")
    return None


def _register():
    global _registered
    if not _registered:
        for name, capsule in native._require().jax_cpu_targets().items():
            jax.ffi.register_ffi_target(name, capsule, platform="cpu")
        if jax.default_backend() in ("gpu", "cuda") and native.cuda_module() is not None:
            for name, capsule in native.cuda_module().jax_cuda_targets().items():
                jax.ffi.register_ffi_target(name, capsule, platform="CUDA")
        _registered = True


def _call(target, result_shape, *args, dtype=jnp.float32, **attributes):
    """One FFI call; ``result_shape`` is a shape, or a tuple of shapes for several results."""
    _register()
    attributes = {
        k: (v if isinstance(v, bool) else np.int64(v)) for k, v in attributes.items()
    }
    if result_shape and isinstance(result_shape[0], tuple):
        result = tuple(jax.ShapeDtypeStruct(shape, dtype) for shape in result_shape)
    else:
        result = jax.ShapeDtypeStruct(result_shape, dtype)
    # Each call works on one whole NHWC batch; under vmap, run them one by one.
    return jax.ffi.ffi_call(target, result, vmap_method="sequential")(*args, **attributes)


def _input_transform(x, geometry, relu):
    n, _, _, c = x.shape
    shape = (16, n * geometry.tiles_h * geometry.tiles_w, c)
    return _call(
        "swcnn_input_transform", shape, x, pad_top=geometry.pad_top,
        pad_left=geometry.pad_left, tiles_h=geometry.tiles_h, tiles_w=geometry.tiles_w,
        relu=relu,
    )


def _input_transform_backward(dv, v, x_shape, geometry, relu):
    return _call(
        "swcnn_input_transform_backward", tuple(x_shape), dv, v,
        pad_top=geometry.pad_top, pad_left=geometry.pad_left, tiles_h=geometry.tiles_h,
        tiles_w=geometry.tiles_w, relu=relu,
    )


def _output_transform(m, batch, geometry):
    shape = (batch, geometry.out_h, geometry.out_w, m.shape[-1])
    return _call(
        "swcnn_output_transform", shape, m, tiles_h=geometry.tiles_h, tiles_w=geometry.tiles_w
    )


def _output_transform_backward(dy, geometry):
    n, _, _, k = dy.shape
    shape = (16, n * geometry.tiles_h * geometry.tiles_w, k)
    return _call(
        "swcnn_output_transform_backward", shape, dy, tiles_h=geometry.tiles_h,
        tiles_w=geometry.tiles_w,
    )


def _positions(kernel):
    return kernel.reshape((16,) + kernel.shape[2:])


#: Values of ``jax_default_matmul_precision`` that ask for float32-accurate products
#: (lower case; the algorithm names are JAX's ``DotAlgorithmPreset``s of that accuracy).
FLOAT32_PRECISIONS = ("highest", "float32", "f32_f32_f32", "tf32_tf32_f32_x3",
                      "bf16_bf16_f32_x6", "bf16_bf16_f32_x9")


def full_float32_products():
    """Whether float32 products must be float32-accurate (JAX's matmul precision setting).

    Read when the forward is traced, so ``with jax.default_matmul_precision("highest"):``
    around a call (or ``JAX_DEFAULT_MATMUL_PRECISION=highest``) selects it; the
    call's backward keeps the forward's choice.

    Example:
        >>> with jax.default_matmul_precision("highest"):
        ...     full_float32_products()
        True
    """
    precision = jax.config.jax_default_matmul_precision
    return str(precision).lower() in FLOAT32_PRECISIONS


def _matmul(a, b, precise):
    # DEFAULT lets XLA use TF32 on GPUs, as its own dots do; HIGHEST when the
    # user asked for float32-accurate products (CPU dots are float32 either way).
    precision = jax.lax.Precision.HIGHEST if precise else jax.lax.Precision.DEFAULT
    return jnp.matmul(a, b, precision=precision)


def _on_cpu():
    """Whether the CPU kernels run (one fused call forward and one backward)."""
    return jax.default_backend() == "cpu"


#: How the CUDA forward runs: "fused" (one tensor-core kernel) or "composed"
#: (transform kernels around an XLA dot), read at trace time from the
#: environment variable of this name. Unset: float32 composes, half types fuse.
CUDA_FORWARD_VARIABLE = "SWCNN_CUDA_FORWARD"

#: The dtypes the fused CUDA forward takes as they are; others are cast to float32.
CUDA_FORWARD_DTYPES = ("float32", "bfloat16", "float16")


def cuda_forward(dtype="float32"):
    """How the CUDA forward is built for inputs of ``dtype``: ``"fused"`` or ``"composed"``.

    Measured on an H100 (docs/gpu.md): in float32 the fused kernel's forward is
    within 10% of the composed one, but a training step takes 10-59% less time
    composed (XLA shares the transformed tiles between the forward and the
    backward, which recomputes them), so float32 composes. bfloat16 and float16
    fuse: products in that type, no float32 round trip.

    Example:
        >>> cuda_forward("bfloat16")
        'fused'
    """
    choice = os.environ.get(CUDA_FORWARD_VARIABLE)
    if choice is None:
        return "composed" if jnp.dtype(dtype) == jnp.float32 else "fused"
    if choice not in ("fused", "composed"):
        raise ValueError(f"{CUDA_FORWARD_VARIABLE}={choice!r}: expected 'fused' or 'composed'.")
    return choice


# `precise`: float32-accurate products (full_float32_products() when the call
# was traced), passed down so that the backward keeps the forward's choice.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, kernel, padding, relu, precise):
    return _conv_forward(x, kernel, padding, relu, precise)[0]


def _tile_attributes(geometry, relu):
    return dict(pad_top=geometry.pad_top, pad_left=geometry.pad_left,
                tiles_h=geometry.tiles_h, tiles_w=geometry.tiles_w, relu=relu)


def _forward_on_device(x, u, options):
    padding, relu, precise = options
    geometry = nhwc_geometry(x.shape, padding)
    shape = (x.shape[0], geometry.out_h, geometry.out_w, u.shape[-1])
    if _on_cpu():
        return _call("swcnn_conv_forward", shape, x, u, **_tile_attributes(geometry, relu))
    if cuda_forward(x.dtype) == "composed":
        v = _input_transform(x.astype(jnp.float32), geometry, relu)
        y = _output_transform(_matmul(v, u.astype(jnp.float32), precise), x.shape[0], geometry)
        return y.astype(x.dtype)
    return _call("swcnn_conv_forward_cuda", shape, x, u, dtype=x.dtype,
                 products=int(precise), **_tile_attributes(geometry, relu))


def _backward_on_device(x, u, dy, options):
    padding, relu, precise = options
    geometry = nhwc_geometry(x.shape, padding)
    if _on_cpu():
        return _call("swcnn_conv_backward", (x.shape, u.shape), x, u, dy,
                     **_tile_attributes(geometry, relu))
    v = _input_transform(x, geometry, relu)  # recomputed: cheaper than storing 4x the input
    dm = _output_transform_backward(dy, geometry)
    du = _matmul(jnp.swapaxes(v, 1, 2), dm, precise)
    dv = _matmul(dm, jnp.swapaxes(u, 1, 2), precise)
    return _input_transform_backward(dv, v, x.shape, geometry, relu), du


# Dimensions: n images, h w input rows/columns, c input channels, t Winograd
# positions, k filters, p q output rows/columns. Each device convolves its own
# images (and filters, for a kernel split along k).
_forward = jax_sharding.partitioned(
    _forward_on_device, operands=("n h w c", "t c k"), results=("n p q k",))
_backward = jax_sharding.partitioned(
    _backward_on_device, operands=("n h w c", "t c k", "n p q k"), results=("n h w c", "t c k"))


def _conv_forward(x, kernel, padding, relu, precise):
    nhwc_geometry(x.shape, padding)  # refuses a bad rank or size before any partitioning
    check_kernel_fits(x.shape, kernel.shape)
    return _forward(x, _positions(kernel), (padding, relu, precise)), (x, kernel)


def _conv_backward(padding, relu, precise, residuals, dy):
    x, kernel = residuals
    # The backward kernels take float32 (half precision reaches here on CUDA only).
    x32, kernel32, dy32 = (a.astype(jnp.float32) for a in (x, kernel, dy))
    dx, du = _backward(x32, _positions(kernel32), dy32, (padding, relu, precise))
    return dx.astype(x.dtype), du.reshape(kernel.shape).astype(kernel.dtype)


_conv.defvjp(_conv_forward, _conv_backward)


def _floating(x):
    """``x`` as a JAX array; refuses a non-floating dtype."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"Expected a floating-point tensor, got dtype {x.dtype}.")
    return x


def _as_float32(x):
    x = _floating(x)
    return x.astype(jnp.float32), x.dtype


def _compute_dtype(dtype):
    """The dtype the forward kernel runs in for inputs of ``dtype``."""
    if not _on_cpu() and jnp.dtype(dtype).name in CUDA_FORWARD_DTYPES:
        return jnp.dtype(dtype)
    return jnp.dtype(jnp.float32)


def winograd_conv2d(x, kernel, padding="same", winograd_activation="relu"):
    """Native Winograd(-ReLU) convolution (see ``keras_swcnn.ops.winograd_conv2d``)."""
    x, kernel = _floating(x), _floating(kernel)
    compute = _compute_dtype(x.dtype)
    y = _conv(x.astype(compute), kernel.astype(compute), padding,
              winograd_activation == "relu", full_float32_products())
    return y.astype(x.dtype)


def sparse_winograd_conv2d(x, mask, values, padding="same", winograd_activation="relu",
                           mode="auto"):
    """Native sparse convolution (see ``keras_swcnn.ops.sparse_winograd_conv2d``); CPU only.

    Inference only: the call has no gradient. On CUDA the kernel is expanded
    and the dense path runs.
    """
    x, dtype = _as_float32(x)
    mask = jnp.asarray(mask, jnp.int32)
    values = jnp.asarray(values, jnp.float32)
    nhwc_geometry(x.shape, padding)  # refuses a bad rank or size before any partitioning
    relu = winograd_activation == "relu"
    if not _on_cpu():
        from keras_swcnn import sparse_format

        kernel = sparse_format.expand(mask, values, x.shape[-1])
        return _conv(x, kernel, padding, relu, full_float32_products()).astype(dtype)
    return _sparse_forward(x, mask, values, (padding, relu, mode)).astype(dtype)


def _sparse_forward_on_device(x, mask, values, options):
    padding, relu, mode = options
    geometry = nhwc_geometry(x.shape, padding)
    shape = (x.shape[0], geometry.out_h, geometry.out_w, mask.shape[1])
    return _call("swcnn_sparse_conv_forward", shape, x, mask, values,
                 mode=SPARSE_MODES.index(mode), **_tile_attributes(geometry, relu))


# The packed weights (s: the values of all filters) are whole on every device.
_sparse_forward = jax_sharding.partitioned(
    _sparse_forward_on_device, operands=("n h w c", "t k b", "s"), results=("n p q k",),
    splittable=("n",))


def input_transform(x, padding="same", relu=True):
    """Native ``(relu of) B^T d B`` as ``[16, N*TH*TW, C]`` (forward only)."""
    x, dtype = _as_float32(x)
    return _input_transform(x, nhwc_geometry(x.shape, padding), relu).astype(dtype)


def batched_product(v, kernel):
    """``M[t] = V[t] @ U[t]`` as an XLA dot."""
    return _matmul(v, _positions(jnp.asarray(kernel)), full_float32_products())


def output_transform(m, geometry):
    """Native ``A^T M A`` assembled into NHWC and cropped (forward only)."""
    m, dtype = _as_float32(m)
    return _output_transform(m, images_in(m.shape, geometry), geometry).astype(dtype)
