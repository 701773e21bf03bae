"""The compressed Winograd-kernel format (also `keras_swcnn.sparse.format`): a bit per weight, a float per stored one.

A ``(4, 4, C, K)`` Winograd-domain kernel ``U`` (positions ``t = 4 * i + j``)
is stored as

- ``mask``: int32 ``[16, K, ceil(C / 32)]``; bit ``c % 32`` of
  ``mask[t, k, c // 32]`` is set when ``U[t, c, k]`` is stored (non-zero);
- ``values``: float32 ``[count]``, the stored weights ordered by ``(t, k, c)``.

Each output channel's column of a position is one run of ``values``: the
order the sparse kernel reads them in (a sum over input channels per output
channel). At density ``d`` this takes ``1/32 + d`` of the dense kernel's
bytes (at ``d = 0.1``: 7.6x smaller).

Example:
    >>> import numpy as np
    >>> from keras_swcnn import sparse_format as format
    >>> kernel = np.zeros((4, 4, 3, 2), "float32"); kernel[0, 1, 2, 1] = 5.0
    >>> mask, values = format.compress(kernel)
    >>> mask.shape, values.tolist()
    ((16, 2, 1), [5.0])
    >>> bool((format.expand(mask, values, 3) == kernel).all())
    True
"""

import numpy as np
from keras import ops

BITS = 32


def mask_words(in_channels):
    """32-bit words per (position, output channel) for ``in_channels`` input channels."""
    return (int(in_channels) + BITS - 1) // BITS


def mask_shape(in_channels, filters):
    """The shape of the mask of a ``(4, 4, in_channels, filters)`` kernel."""
    return (16, int(filters), mask_words(in_channels))


def _check_kernel(kernel):
    if kernel.ndim != 4 or kernel.shape[:2] != (4, 4):
        raise ValueError(
            f"Expected a Winograd kernel of shape (4, 4, C, K), got {kernel.shape}.")


def compress(kernel):
    """``(mask, values)`` of a ``(4, 4, C, K)`` kernel: its non-zero weights only (numpy)."""
    kernel = np.asarray(kernel)
    _check_kernel(kernel)
    _, _, channels, filters = kernel.shape
    columns = np.ascontiguousarray(
        kernel.reshape(16, channels, filters).transpose(0, 2, 1), dtype=np.float32)
    stored = columns != 0
    values = columns[stored]  # row-major over (t, k, c)
    padded = np.zeros((16, filters, mask_words(channels) * BITS), bool)
    padded[:, :, :channels] = stored
    bits = np.packbits(padded, axis=-1, bitorder="little")  # 4 bytes per word, low byte first
    mask = np.ascontiguousarray(bits).view("<u4").astype(np.uint32).view(np.int32)
    return mask.reshape(mask_shape(channels, filters)), values


def _stored_bits(mask, in_channels):
    """Bits ``[16, K, C]`` (0/1) of a mask, any backend (``keras.ops``)."""
    mask = ops.convert_to_tensor(mask, "int32")
    words = ops.expand_dims(mask, -1)
    # Floor division and modulo instead of shifts and `&`: every export format has
    # them (LiteRT has no builtin bitwise and). Floor division by 2**b is an
    # arithmetic shift, so bits 0..30 come out right for negative words too; bit
    # 31, whose 2**31 does not fit an int32, is the sign.
    low = ops.mod(ops.floor_divide(words, ops.convert_to_tensor(2 ** np.arange(BITS - 1), "int32")), 2)
    bits = ops.concatenate([low, ops.cast(ops.less(words, 0), "int32")], axis=-1)
    _, filters, words = mask.shape
    return ops.reshape(bits, (16, filters, words * BITS))[:, :, :in_channels]


def _gather(values, index):
    """``values[index]`` for 1-D tensors, in ops that every export format has."""
    import keras

    if keras.backend.backend() == "torch":
        return values[index]  # torch's ONNX exporter has no ravel, which keras.ops.take uses
    return ops.take(values, index)


def expand(mask, values, in_channels):
    """The dense ``(4, 4, C, K)`` kernel of ``(mask, values)``, any backend (``keras.ops``).

    Differentiable in ``values``; the inverse of ``compress``.
    """
    bits = _stored_bits(mask, in_channels)
    _, filters, _ = bits.shape
    flat = ops.reshape(bits, (16 * filters * in_channels,))  # not (-1,): torch would ravel, which ONNX lacks
    # The n-th set bit takes values[n]; a trailing zero keeps the gather valid
    # when nothing is stored.
    index = ops.maximum(ops.cumsum(flat) - 1, 0)
    values = ops.convert_to_tensor(values, "float32")
    padded = ops.concatenate([values, ops.zeros((1,), "float32")])
    dense = ops.where(flat == 1, _gather(padded, index), ops.zeros((), "float32"))
    dense = ops.transpose(ops.reshape(dense, (16, filters, in_channels)), (0, 2, 1))
    return ops.reshape(dense, (4, 4, in_channels, filters))


def count_stored(mask):
    """The number of stored weights a mask stands for (numpy)."""
    words = np.ascontiguousarray(np.asarray(mask, dtype=np.int32)).view(np.uint32)
    return int(np.unpackbits(words.view(np.uint8)).sum())
