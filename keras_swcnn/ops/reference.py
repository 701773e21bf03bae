"""Reference Winograd F(2x2, 3x3) primitives written with ``keras.ops``.

They run on every Keras backend and are the specification that the native
implementations are tested against. Tensors are NHWC; transformed tiles use
the ``[16, N * TH * TW, C]`` layout (position ``t = 4 * i + j``), so the
per-position product is one batched matrix multiplication.

Example:
    >>> import numpy as np
    >>> from keras_swcnn.ops import reference
    >>> x = np.random.rand(2, 5, 5, 3).astype("float32")
    >>> u = np.random.rand(4, 4, 3, 8).astype("float32")
    >>> reference.winograd_conv2d(x, u, padding="same").shape
    (2, 5, 5, 8)
"""

from keras import ops

from keras_swcnn import winograd
from keras_swcnn.ops._shapes import dynamic_geometry


def _constant(matrix, dtype):
    return ops.convert_to_tensor(matrix, dtype=dtype)


def _split_into_tiles(x, axis, num_tiles):
    """Split ``axis`` (length >= 2 * num_tiles + 2) into ``(num_tiles, 4)`` overlapping windows.

    Tile ``i`` covers indices ``2i .. 2i+3``. Two reshapes (rows ``2i, 2i+1``
    and ``2i+2, 2i+3``) and a concat give all windows without a gather.
    """
    head = [slice(None)] * axis
    first = x[tuple(head + [slice(0, 2 * num_tiles)])]
    second = x[tuple(head + [slice(2, 2 * num_tiles + 2)])]
    shape = list(ops.shape(x))
    shape[0] = -1  # the batch dimension may be unknown
    split = shape[:axis] + [num_tiles, 2] + shape[axis + 1 :]
    return ops.concatenate(
        [ops.reshape(first, split), ops.reshape(second, split)], axis=axis + 1
    )


def can_run(x):
    """Always: ``keras.ops`` take any shape, known or not."""
    del x
    return True


def input_transform(x, padding="same", relu=True):
    """Transformed input tiles ``V = B^T d B`` (optionally relu'd), shape ``[16, N*TH*TW, C]``.

    Args:
        x: NHWC tensor.
        padding: ``"same"`` or ``"valid"``.
        relu: apply relu after the transform (the Winograd-ReLU layer).
    """
    x = ops.convert_to_tensor(x)
    geometry = dynamic_geometry(x, padding)
    bt = _constant(winograd.BT, x.dtype)
    # Enough zeros after the image for the last tile; extra rows are never read.
    pad = geometry.pad_top
    x = ops.pad(x, [[0, 0], [pad, 2], [pad, 2], [0, 0]])
    rows = _split_into_tiles(x, 1, geometry.tiles_h)  # (N, TH, 4, Wp, C)
    rows = ops.einsum("ar,nirwc->naiwc", bt, rows)  # B^T d, on whole rows
    tiles = _split_into_tiles(rows, 3, geometry.tiles_w)  # (N, 4, TH, TW, 4, C)
    v = ops.einsum("bs,naijsc->abnijc", bt, tiles)  # (B^T d) B
    v = ops.reshape(v, (16, -1, ops.shape(v)[-1]))
    return ops.relu(v) if relu else v


def batched_product(v, kernel):
    """Per-position products ``M[t] = V[t] @ U[t]``: ``[16, P, C] x (4, 4, C, K) -> [16, P, K]``."""
    kernel = ops.convert_to_tensor(kernel)
    c, k = ops.shape(kernel)[2], ops.shape(kernel)[3]
    return ops.matmul(v, ops.reshape(kernel, (16, c, k)))


def output_transform(m, geometry):
    """Output ``Y = A^T M A`` per tile, assembled into NHWC and cropped to the output size.

    Args:
        m: products, shape ``[16, N*TH*TW, K]``.
        geometry: the ``winograd.TileGeometry`` the input was tiled with.
    """
    m = ops.convert_to_tensor(m)
    at = _constant(winograd.AT, m.dtype)
    k = ops.shape(m)[-1]
    th, tw = geometry.tiles_h, geometry.tiles_w
    m = ops.reshape(m, (4, 4, -1, th, tw, k))
    y = ops.einsum("ia,abnhwk->nhiwbk", at, m)  # A^T M
    y = ops.einsum("jb,nhiwbk->nhiwjk", at, y)  # (A^T M) A
    y = ops.reshape(y, (-1, 2 * th, 2 * tw, k))
    return y[:, : geometry.out_h, : geometry.out_w, :]


def winograd_conv2d(x, kernel, padding="same", winograd_activation="relu"):
    """Winograd-domain 3x3 convolution of an NHWC tensor with a ``(4, 4, C, K)`` kernel.

    ``winograd_activation="relu"`` is the Winograd-ReLU layer
    (``A^T [sum_c U * relu(B^T d B)] A``); ``None`` is the plain Winograd layer,
    which equals a spatial convolution with ``g`` when ``U = G g G^T``.
    """
    x = ops.convert_to_tensor(x)
    geometry = dynamic_geometry(x, padding)
    v = input_transform(x, padding, relu=winograd_activation == "relu")
    m = batched_product(v, kernel)
    return output_transform(m, geometry)


def sparse_winograd_conv2d(x, mask, values, padding="same", winograd_activation="relu",
                           mode="auto"):
    """The convolution with a compressed kernel (``keras_swcnn.sparse.format``): expanded, then dense.

    ``mode`` only matters to the native kernels; the reference computes the same function.
    """
    del mode
    from keras_swcnn import sparse_format

    kernel = sparse_format.expand(mask, values, ops.shape(x)[-1])
    return winograd_conv2d(x, ops.cast(kernel, x.dtype), padding, winograd_activation)
