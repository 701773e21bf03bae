"""Native Winograd primitives for the torch backend: the CPU kernels as torch custom operators.

The compiled kernels are registered with ``torch.library.custom_op`` under the
``keras_swcnn::`` namespace: ``conv_forward`` and ``conv_backward`` (the fused
convolution, tied together with ``register_autograd``), ``sparse_conv_forward``
(inference), ``input_transform`` and ``output_transform`` (forward only). Each
has a fake implementation, so ``torch.compile`` traces through them without a
graph break and ``torch.export`` can place them.

No C++ is compiled against torch: the operators' bodies hand the tensors' memory
to the extension's numpy front door (``tensor.numpy()`` and
``torch.from_numpy`` share memory, no copies). So the native module built
without torch works with whatever torch is installed at run time, and importing
keras_swcnn never imports torch: this module is imported only on the torch
backend. CPU tensors only; elsewhere ``implementation="auto"`` takes the
reference path. The kernels run on torch's OpenMP threads (importing this
module switches the extension to the process's OpenMP runtime, which torch
loaded), so ``torch.set_num_threads`` governs them too.

Dtype rule: the kernels compute in float32; other floating inputs are cast to
float32 and the result is cast back.

Example:
    >>> import torch
    >>> from keras_swcnn.ops import torch_native
    >>> x, u = torch.rand(1, 6, 6, 2), torch.rand(4, 4, 2, 3)
    >>> tuple(torch_native.winograd_conv2d(x, u).shape)
    (1, 6, 6, 3)
"""

import keras
import torch

from keras_swcnn import export, native
from keras_swcnn.ops import SPARSE_MODES
from keras_swcnn.ops._shapes import check_kernel_fits, images_in, nhwc_geometry


def _kernels():
    return native._require()


def _use_torchs_threads():
    """Run the kernels on torch's OpenMP threads, if the OpenMP runtime the extension finds by
    name is torch's (it reports torch's thread count); otherwise keep swcnn's pool.

    torch's OpenMP threads spin for a while after each of torch's parallel ops: a second pool
    would compete with them for the same CPUs.
    """
    kernels = _kernels()
    if kernels.use_openmp_threads(True) and (
            kernels.openmp_max_threads() != torch.get_num_threads()):
        kernels.use_openmp_threads(False)  # another runtime: it would be a second team
    return kernels.openmp_max_threads() > 0


if native.available():
    _use_torchs_threads()


def _numpy(tensor):
    return tensor.detach().contiguous().numpy()


@torch.library.custom_op("keras_swcnn::conv_forward", mutates_args=())
def conv_forward(x: torch.Tensor, u: torch.Tensor, pad_top: int, pad_left: int, tiles_h: int,
                 tiles_w: int, out_h: int, out_w: int, relu: bool) -> torch.Tensor:
    """y[N, OH, OW, K] of NHWC float32 x and u[16, C, K]."""
    return torch.from_numpy(_kernels().conv_forward(
        _numpy(x), _numpy(u), pad_top, pad_left, tiles_h, tiles_w, out_h, out_w, relu))


@conv_forward.register_fake
def _(x, u, pad_top, pad_left, tiles_h, tiles_w, out_h, out_w, relu):
    return x.new_empty((x.shape[0], out_h, out_w, u.shape[2]))


@torch.library.custom_op("keras_swcnn::conv_backward", mutates_args=())
def conv_backward(x: torch.Tensor, u: torch.Tensor, dy: torch.Tensor, pad_top: int, pad_left: int,
                  tiles_h: int, tiles_w: int, relu: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, du) of the fused convolution for dy."""
    dx, du = _kernels().conv_backward(_numpy(x), _numpy(u), _numpy(dy), pad_top, pad_left, tiles_h,
                                      tiles_w, relu)
    return torch.from_numpy(dx), torch.from_numpy(du)


@conv_backward.register_fake
def _(x, u, dy, pad_top, pad_left, tiles_h, tiles_w, relu):
    return torch.empty_like(x), torch.empty_like(u)


def _save_inputs(ctx, inputs, output):
    x, u, pad_top, pad_left, tiles_h, tiles_w, _, _, relu = inputs
    ctx.save_for_backward(x, u)
    ctx.tiles = (pad_top, pad_left, tiles_h, tiles_w, relu)


def _conv_gradients(ctx, dy):
    x, u = ctx.saved_tensors
    dx, du = conv_backward(x, u, dy.contiguous(), *ctx.tiles)
    return (dx, du) + (None,) * 7


conv_forward.register_autograd(_conv_gradients, setup_context=_save_inputs)


@torch.library.custom_op("keras_swcnn::sparse_conv_forward", mutates_args=())
def sparse_conv_forward(x: torch.Tensor, mask: torch.Tensor, values: torch.Tensor, pad_top: int,
                        pad_left: int, tiles_h: int, tiles_w: int, out_h: int, out_w: int,
                        relu: bool, mode: int) -> torch.Tensor:
    """y[N, OH, OW, K] with the compressed kernel (mask int32 [16, K, words], values float32)."""
    return torch.from_numpy(_kernels().sparse_conv_forward(
        _numpy(x), _numpy(mask), _numpy(values), pad_top, pad_left, tiles_h, tiles_w, out_h, out_w,
        relu, SPARSE_MODES[mode]))


@sparse_conv_forward.register_fake
def _(x, mask, values, pad_top, pad_left, tiles_h, tiles_w, out_h, out_w, relu, mode):
    return x.new_empty((x.shape[0], out_h, out_w, mask.shape[1]))


@torch.library.custom_op("keras_swcnn::input_transform", mutates_args=())
def input_transform_op(x: torch.Tensor, pad_top: int, pad_left: int, tiles_h: int, tiles_w: int,
                       relu: bool) -> torch.Tensor:
    """v[16, N*TH*TW, C] = (relu of) B^T d B."""
    return torch.from_numpy(_kernels().input_transform(_numpy(x), pad_top, pad_left, tiles_h,
                                                       tiles_w, relu))


@input_transform_op.register_fake
def _(x, pad_top, pad_left, tiles_h, tiles_w, relu):
    return x.new_empty((16, x.shape[0] * tiles_h * tiles_w, x.shape[3]))


@torch.library.custom_op("keras_swcnn::output_transform", mutates_args=())
def output_transform_op(m: torch.Tensor, batch: int, tiles_h: int, tiles_w: int, out_h: int,
                        out_w: int) -> torch.Tensor:
    """y[N, OH, OW, K] = A^T m A per tile, cropped."""
    return torch.from_numpy(_kernels().output_transform(_numpy(m), batch, tiles_h, tiles_w, out_h,
                                                        out_w))


@output_transform_op.register_fake
def _(m, batch, tiles_h, tiles_w, out_h, out_w):
    return m.new_empty((batch, out_h, out_w, m.shape[2]))


#: What ``implementation="auto"`` means (``keras_swcnn.export``), decided once per trace:
#: dynamo calls it while tracing and keeps the answer as a constant.
auto_means = torch.compiler.assume_constant_result(export.auto_means)


def unavailable_reason():
    """``None`` when the native torch operators can run here, else why not."""
    if not native.available():
        return f"the native extension did not load ({native.load_error})"
    return None


def can_run(x):
    """Whether ``x`` is a tensor the CPU kernels take (on the CPU; any floating dtype)."""
    return isinstance(x, torch.Tensor) and x.device.type == "cpu"


def _tensor(x, dtype=None):
    # keras.ops unwraps Keras variables and places numpy input on Keras's device.
    return keras.ops.convert_to_tensor(x, dtype=dtype)


def _check_cpu(x):
    if isinstance(x, torch.Tensor) and x.device.type != "cpu":
        raise ValueError(
            f"The native torch operators run on CPU tensors; got one on {x.device}. Use "
            "implementation='auto' (the reference path there) or 'reference'.")


def _as_float32(x):
    _check_cpu(x)  # before keras.ops, which would move it to Keras's device
    x = _tensor(x)
    _check_cpu(x)
    if not x.is_floating_point():
        raise ValueError(f"Expected a floating-point tensor, got dtype {x.dtype}.")
    return x.to(torch.float32), x.dtype


def winograd_conv2d(x, kernel, padding="same", winograd_activation="relu"):
    """Native Winograd(-ReLU) convolution (see ``keras_swcnn.ops.winograd_conv2d``), differentiable."""
    x, dtype = _as_float32(x)
    kernel, _ = _as_float32(kernel)
    geometry = nhwc_geometry(x.shape, padding)
    check_kernel_fits(tuple(x.shape), tuple(kernel.shape))
    u = kernel.reshape((16,) + tuple(kernel.shape[2:]))
    y = conv_forward(x, u, geometry.pad_top, geometry.pad_left, geometry.tiles_h, geometry.tiles_w,
                     geometry.out_h, geometry.out_w, winograd_activation == "relu")
    return y.to(dtype)


def sparse_winograd_conv2d(x, mask, values, padding="same", winograd_activation="relu",
                           mode="auto"):
    """Native sparse convolution (see ``keras_swcnn.ops.sparse_winograd_conv2d``); inference only."""
    x, dtype = _as_float32(x)
    geometry = nhwc_geometry(x.shape, padding)
    y = sparse_conv_forward(
        x, _tensor(mask, "int32"), _tensor(values, "float32"),
        geometry.pad_top, geometry.pad_left, geometry.tiles_h, geometry.tiles_w, geometry.out_h,
        geometry.out_w, winograd_activation == "relu", SPARSE_MODES.index(mode))
    return y.to(dtype)


def input_transform(x, padding="same", relu=True):
    """Native ``(relu of) B^T d B`` as ``[16, N*TH*TW, C]`` (forward only)."""
    x, dtype = _as_float32(x)
    geometry = nhwc_geometry(x.shape, padding)
    v = input_transform_op(x, geometry.pad_top, geometry.pad_left, geometry.tiles_h,
                           geometry.tiles_w, relu)
    return v.to(dtype)


def batched_product(v, kernel):
    """``M[t] = V[t] @ U[t]`` with ``torch.matmul``."""
    kernel = _tensor(kernel)
    return torch.matmul(_tensor(v), kernel.reshape((16,) + tuple(kernel.shape[2:])))


def output_transform(m, geometry):
    """Native ``A^T M A`` assembled into NHWC and cropped (forward only)."""
    m, dtype = _as_float32(m)
    batch = images_in(tuple(m.shape), geometry)
    return output_transform_op(m, batch, geometry.tiles_h, geometry.tiles_w, geometry.out_h,
                               geometry.out_w).to(dtype)
