"""Winograd F(2x2, 3x3) primitives, with one public entry point per primitive.

Each function takes ``implementation="auto" | "native" | "reference" | "portable"``:

- ``"reference"``: ``keras.ops``, every backend (``keras_swcnn.ops.reference``);
- ``"portable"``: the convolutions from standard convolution ops only, for
  exported models (``keras_swcnn.ops.portable``; needs known H, W, C);
- ``"native"``: the compiled kernels as XLA custom calls: JAX on CPU and
  NVIDIA GPUs (``keras_swcnn.ops.jax_native``), TensorFlow on CPU
  (``keras_swcnn.ops.tensorflow_native``), and as torch custom operators on
  CPU tensors (``keras_swcnn.ops.torch_native``); raises ``RuntimeError``
  saying why when they cannot run on this backend/platform;
- ``"auto"``: native where available, else reference. On TensorFlow, a
  tensor whose height, width or channels are unknown while tracing also
  takes the reference path (XLA custom calls need static shapes). While a
  model is exported, ``"auto"`` is ``"portable"`` (``keras_swcnn.export``).

Example:
    >>> import numpy as np
    >>> from keras_swcnn import ops as wops
    >>> x = np.random.rand(1, 6, 6, 2).astype("float32")
    >>> u = np.random.rand(4, 4, 2, 3).astype("float32")
    >>> wops.winograd_conv2d(x, u).shape
    (1, 6, 6, 3)
"""

import keras
import numpy as np

from keras_swcnn import export, winograd
from keras_swcnn.ops import portable, reference
from keras_swcnn.ops._shapes import check_kernel_fits, nhwc_geometry, static_shape

IMPLEMENTATIONS = ("auto", "native", "reference", "portable")

#: What every implementation module (``reference``, ``portable``, ``jax_native``,
#: ``tensorflow_native``, ``torch_native``) provides: the five primitives below, with the
#: signatures of this module's functions less ``implementation``, and ``can_run(x)``, whether
#: it can run on ``x`` as it is known now (while tracing, its static shape); where it cannot,
#: ``"auto"`` takes the reference path. Native modules also provide ``unavailable_reason()``.
CONTRACT = ("winograd_conv2d", "sparse_winograd_conv2d", "input_transform",
            "batched_product", "output_transform", "can_run")


def _native_module():
    """The native implementation module for the current backend and why it may not run."""
    backend = keras.backend.backend()
    if backend == "jax":
        from keras_swcnn.ops import jax_native

        return jax_native, jax_native.unavailable_reason()
    if backend == "tensorflow":
        from keras_swcnn.ops import tensorflow_native

        return tensorflow_native, tensorflow_native.unavailable_reason()
    if backend == "torch":
        from keras_swcnn.ops import torch_native

        return torch_native, torch_native.unavailable_reason()
    return None, f"no native implementation for the {backend!r} backend"


def native_unavailable_reason():
    """``None`` when ``implementation="native"`` can run here, else the reason it cannot."""
    return _native_module()[1]


def check_implementation(implementation):
    """Raise ``ValueError`` unless ``implementation`` is one of ``IMPLEMENTATIONS``."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}."
        )


def _auto_means():
    if keras.backend.backend() == "torch":  # torch.compile cannot trace the stack walk itself
        from keras_swcnn.ops import torch_native

        return torch_native.auto_means()
    return export.auto_means()


def resolve_implementation(implementation="auto"):
    """The implementation module that ``implementation`` selects on the current backend."""
    check_implementation(implementation)
    if implementation == "auto":
        implementation = _auto_means()
    if implementation == "reference":
        return reference
    if implementation == "portable":
        return portable
    module, reason = _native_module()
    if reason is None:
        return module
    if implementation == "native":
        raise RuntimeError(f"The native Winograd implementation is not available: {reason}.")
    return reference


def _runnable(impl, implementation, x):
    """``impl``, or the reference path where "auto" chose one that cannot run on ``x``."""
    return reference if implementation == "auto" and not impl.can_run(x) else impl


def implementation_name(implementation="auto"):
    """``"native"``, ``"reference"`` or ``"portable"``: what ``implementation`` resolves to here."""
    module = resolve_implementation(implementation)
    return {reference: "reference", portable: "portable"}.get(module, "native")


def input_transform(x, padding="same", relu=True, implementation="auto"):
    """Transformed tiles ``(relu of) B^T d B`` of an NHWC tensor, shape ``[16, N*TH*TW, C]``."""
    impl = resolve_implementation(implementation)
    return impl.input_transform(x, winograd.check_padding(padding), _flag(relu, "relu"))


def _flag(value, name):
    """``value`` as a Python bool (numpy bools and 0/1 too: native attributes take bools only)."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}.")


def batched_product(v, kernel, implementation="auto"):
    """Per-position products summed over input channels: ``[16, P, C] x (4, 4, C, K) -> [16, P, K]``."""
    return resolve_implementation(implementation).batched_product(v, kernel)


def output_transform(m, geometry, implementation="auto"):
    """``A^T M A`` per tile, assembled into NHWC and cropped (see ``winograd.TileGeometry``)."""
    return resolve_implementation(implementation).output_transform(m, geometry)


def winograd_conv2d(
    x, kernel, padding="same", winograd_activation="relu", implementation="auto"
):
    """3x3 stride-1 convolution with a Winograd-domain kernel ``(4, 4, C, K)`` on NHWC input.

    Args:
        x: NHWC tensor.
        kernel: Winograd-domain kernel, shape ``(4, 4, in_channels, out_channels)``.
        padding: ``"same"`` or ``"valid"``.
        winograd_activation: ``"relu"`` (Winograd-ReLU, the paper's layer) or
            ``None`` (plain Winograd-native convolution).
        implementation: ``"auto"``, ``"native"`` or ``"reference"``.
    """
    winograd.check_winograd_activation(winograd_activation)
    padding = winograd.check_padding(padding)
    x_shape, kernel_shape = static_shape(x), static_shape(kernel)
    if len(x_shape) != 4:
        raise ValueError(f"Expected a 4D NHWC input, got shape {x_shape}.")
    if x_shape[-1] is not None:
        check_kernel_fits(x_shape, kernel_shape)
    if x_shape[0] == 0:  # an empty batch: every path agrees on this without computing
        return _empty_result(x, x_shape, kernel_shape[-1], padding)
    impl = _runnable(resolve_implementation(implementation), implementation, x)
    return impl.winograd_conv2d(x, kernel, padding, winograd_activation)


def _empty_result(x, x_shape, filters, padding):
    if x_shape[1] is None or x_shape[2] is None:
        raise ValueError(f"An empty batch needs a known height and width; got shape {x_shape}.")
    geometry = nhwc_geometry(x_shape, padding)
    dtype = keras.backend.standardize_dtype(getattr(x, "dtype", "float32"))
    return keras.ops.zeros((0, geometry.out_h, geometry.out_w, filters), dtype=dtype)


# In the order of the native kernels' swcnn::SparseMode: a mode's index is its code.
SPARSE_MODES = ("auto", "sparse", "dense")


def sparse_winograd_conv2d(x, mask, values, padding="same", winograd_activation="relu",
                           implementation="auto", mode="auto"):
    """``winograd_conv2d`` with a compressed kernel: multiplications only for stored weights.

    The kernel is ``(mask, values)`` as ``keras_swcnn.sparse.format`` lays it
    out (``format.compress`` makes it from a ``(4, 4, C, K)`` kernel). Inference
    only: no gradients flow through the native kernel.

    Args:
        x: NHWC tensor.
        mask: int32 ``[16, K, ceil(C / 32)]``.
        values: float32 ``[count]``, ``count`` the mask's set bits.
        padding, winograd_activation, implementation: as in ``winograd_conv2d``.
        mode: ``"auto"`` (the sparse kernel below the density where it stops
            paying, the dense fused kernel above), ``"sparse"`` or ``"dense"``
            (force one: benchmarks, tests). Native kernels only.

    Example:
        >>> import numpy as np
        >>> from keras_swcnn import ops as wops
        >>> from keras_swcnn import sparse_format as format
        >>> u = np.zeros((4, 4, 2, 3), "float32"); u[1, 1, 0, 2] = 1.0
        >>> mask, values = format.compress(u)
        >>> x = np.random.rand(1, 6, 6, 2).astype("float32")
        >>> wops.sparse_winograd_conv2d(x, mask, values).shape
        (1, 6, 6, 3)
    """
    winograd.check_winograd_activation(winograd_activation)
    padding = winograd.check_padding(padding)
    if mode not in SPARSE_MODES:
        raise ValueError(f"mode must be one of {SPARSE_MODES}, got {mode!r}.")
    mask_shape = tuple(getattr(mask, "shape", ()))
    x_shape = static_shape(x)
    channels = x_shape[-1] if x_shape else None
    if channels is not None:
        from keras_swcnn import sparse_format

        if len(mask_shape) != 3 or mask_shape[0] != 16 or (
                mask_shape[2] != sparse_format.mask_words(channels)):
            raise ValueError(
                f"mask shape {mask_shape} does not fit {channels} input channels: expected "
                f"(16, filters, {sparse_format.mask_words(channels)}).")
    if len(tuple(getattr(values, "shape", (0,)))) != 1:
        raise ValueError(f"values must be 1D, got shape {tuple(values.shape)}.")
    if channels is not None:
        check_kernel_fits(x_shape, (4, 4, channels, mask_shape[1]))
    if x_shape[:1] == (0,):
        return _empty_result(x, x_shape, mask_shape[1], padding)
    impl = _runnable(resolve_implementation(implementation), implementation, x)
    return impl.sparse_winograd_conv2d(
        x, mask, values, padding, winograd_activation, mode)


__all__ = [
    "CONTRACT",
    "SPARSE_MODES",
    "sparse_winograd_conv2d",
    "IMPLEMENTATIONS",
    "batched_product",
    "check_implementation",
    "implementation_name",
    "input_transform",
    "native_unavailable_reason",
    "output_transform",
    "resolve_implementation",
    "winograd_conv2d",
]
