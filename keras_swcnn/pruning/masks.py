"""Magnitude masks, the way tfmot computes them (``pruning_impl.Pruning._update_mask``)."""

from keras import ops


def magnitude_mask(weights, sparsity):
    """``(mask, threshold)`` keeping the ``k = max(round(n * (1 - sparsity)), 1)`` largest ``|w|``.

    The threshold is the k-th largest magnitude; every weight at or above it is
    kept (so ties at the threshold are kept, as in tfmot). ``round`` is
    round-half-to-even in float32, as ``tf.math.round``.

    Example:
        >>> import numpy as np
        >>> mask, _ = magnitude_mask(np.array([0.1, -3.0, 2.0, 0.5]), 0.5)
        >>> np.asarray(mask).tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    weights = ops.convert_to_tensor(weights)
    magnitudes = ops.abs(weights)
    flat = ops.reshape(magnitudes, (-1,))
    n = int(flat.shape[0])
    keep = ops.round(ops.cast(n, "float32") * (1.0 - ops.cast(sparsity, "float32")))
    k = ops.cast(ops.maximum(keep, 1.0), "int32")
    threshold = ops.take(ops.sort(flat), n - k)  # k-th largest
    mask = ops.cast(ops.greater_equal(magnitudes, threshold), weights.dtype)
    return mask, ops.cast(threshold, weights.dtype)
