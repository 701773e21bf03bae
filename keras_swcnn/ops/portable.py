"""The Winograd-ReLU convolution from standard convolution ops only: for exported models.

Exported models must run where keras_swcnn is not installed (TF Serving, the
LiteRT interpreter, onnxruntime, a fresh JAX process), so they can hold neither
the native custom calls nor shape arithmetic a converter cannot size. This
implementation leaves the batch dimension alone and uses only ops every format
has:

1. input transform: one depthwise 4x4 convolution, stride 2, with 16 filters per
   channel: filter ``t = 4 a + b`` is ``outer(B^T[a], B^T[b])``, so output
   channel ``16 c + t`` is ``V[t]`` of channel ``c`` for every tile; then the ReLU;
2. products: per position ``t``, a 1x1 convolution of ``V[t]`` with ``U[a, b]``;
3. output transform: each of a tile's four outputs is a signed sum of nine of the
   16 products (``A^T`` holds only 0 and +-1), interleaved into rows and columns by
   stacking and reshaping (no transposes), then cropped.

It computes the same function as ``reference`` (the tests compare both with a
float64 model) and is selected by ``implementation="portable"``, or by ``"auto"``
while a model is being exported (see ``keras_swcnn.export``).

Example:
    >>> import numpy as np
    >>> from keras_swcnn.ops import portable
    >>> x = np.random.rand(2, 5, 5, 3).astype("float32")
    >>> u = np.random.rand(4, 4, 3, 8).astype("float32")
    >>> tuple(portable.winograd_conv2d(x, u).shape)
    (2, 5, 5, 8)
"""

import numpy as np
from keras import ops

from keras_swcnn import winograd
from keras_swcnn.ops._shapes import known_dimension
from keras_swcnn.ops.reference import batched_product, input_transform, output_transform  # noqa: F401

#: Filter ``t = 4 a + b`` of the input transform, as a 4x4 spatial filter: ``B^T[a, r] B^T[b, s]``.
_INPUT_FILTERS = np.einsum("ar,bs->abrs", winograd.BT, winograd.BT).reshape(16, 4, 4)


def _static_size(x):
    height, width, channels = (known_dimension(d) for d in x.shape[1:])
    if None in (height, width, channels):
        raise ValueError(
            "The portable Winograd lowering (used for export) needs a known height, width and "
            f"channel count; got input shape {tuple(x.shape)}. Give the model a fixed input shape.")
    return height, width, channels


def _transformed_tiles(x, geometry, channels, relu):
    """``V[t]`` for the 16 positions, each ``(N, TH, TW, C)``."""
    height, width = known_dimension(x.shape[1]), known_dimension(x.shape[2])
    pad_bottom = 2 * geometry.tiles_h + 2 - height - geometry.pad_top
    pad_right = 2 * geometry.tiles_w + 2 - width - geometry.pad_left
    x = ops.pad(x, [[0, 0], [geometry.pad_top, pad_bottom], [geometry.pad_left, pad_right], [0, 0]])
    filters = np.broadcast_to(_INPUT_FILTERS.transpose(1, 2, 0)[:, :, None, :], (4, 4, channels, 16))
    v = ops.depthwise_conv(x, ops.convert_to_tensor(np.ascontiguousarray(filters), x.dtype),
                           strides=2, padding="valid")
    if relu:
        v = ops.relu(v)
    return [v[..., t::16] for t in range(16)]  # depthwise output channel 16 c + t


def _signed_sum(terms):
    total = None
    for sign, tensor in terms:
        if total is None:
            total = tensor if sign > 0 else -tensor
        else:
            total = total + tensor if sign > 0 else total - tensor
    return total


def _interleave(a, b, axis):
    """Alternate ``a`` and ``b`` along ``axis`` (1: rows, 2: columns) of NHWC tensors."""
    stacked = ops.stack([a, b], axis=axis + 1)
    shape = [-1] + [known_dimension(d) for d in a.shape[1:]]
    shape[axis] *= 2
    return ops.reshape(stacked, shape)


def _assemble(products, geometry):
    """``A^T M A`` per tile from the 16 product tensors, as one NHWC image, cropped."""
    outputs = {}
    for p in range(2):
        for q in range(2):
            outputs[p, q] = _signed_sum(
                (winograd.AT[p, a] * winograd.AT[q, b], products[4 * a + b])
                for a in range(4) for b in range(4) if winograd.AT[p, a] * winograd.AT[q, b])
    rows = [_interleave(outputs[p, 0], outputs[p, 1], axis=2) for p in range(2)]
    y = _interleave(rows[0], rows[1], axis=1)
    return y[:, : geometry.out_h, : geometry.out_w, :]


def can_run(x):
    """Always: a shape this lowering cannot size is refused with a ``ValueError`` naming it."""
    del x
    return True


def winograd_conv2d(x, kernel, padding="same", winograd_activation="relu"):
    """Winograd(-ReLU) 3x3 convolution of NHWC ``x`` with a ``(4, 4, C, K)`` kernel, standard ops only."""
    x = ops.convert_to_tensor(x)
    kernel = ops.cast(ops.convert_to_tensor(kernel), x.dtype)
    height, width, channels = _static_size(x)
    geometry = winograd.tile_geometry(height, width, padding)
    tiles = _transformed_tiles(x, geometry, channels, winograd_activation == "relu")
    products = [ops.conv(tiles[t], kernel[t // 4, t % 4][None, None], padding="valid")
                for t in range(16)]
    return _assemble(products, geometry)


def sparse_winograd_conv2d(x, mask, values, padding="same", winograd_activation="relu",
                           mode="auto"):
    """The convolution with a compressed kernel: expanded in the graph, then ``winograd_conv2d``."""
    del mode
    from keras_swcnn import sparse_format

    kernel = sparse_format.expand(mask, values, x.shape[-1])
    return winograd_conv2d(x, kernel, padding, winograd_activation)
