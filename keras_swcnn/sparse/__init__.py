"""Sparse inference: pruned Winograd-ReLU layers that compute only with their non-zero weights.

``sparsify`` turns every sufficiently sparse ``WinogradReLUConv2D`` of a model
into a ``SparseWinogradReLUConv2D`` (compressed weights, native sparse
kernels); ``densify`` goes back. Other layers are shared, not copied.

Example:
    >>> from keras_swcnn import applications, sparse
    >>> model = applications.ResNet18(variant="small", input_shape=(28, 28, 1), classes=10,
    ...                               width=16, weights="fashion_mnist_small")  # density 0.10
    >>> fast = sparse.sparsify(model)
    >>> len(sparse.sparse_layers(fast)) == len(sparse.winograd_layers(model))
    True
"""

import numpy as np
import keras
from keras import ops

from keras_swcnn.layers.sparse_winograd_relu_conv2d import SparseWinogradReLUConv2D
from keras_swcnn.layers.winograd_relu_conv2d import WinogradReLUConv2D
from keras_swcnn import sparse_format as format


def _layers(model, kind):
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, kind):
            found.append(layer)
    return found


def winograd_layers(model):
    """The ``WinogradReLUConv2D`` layers of ``model`` (nested models included)."""
    return _layers(model, WinogradReLUConv2D)


def sparse_layers(model):
    """The ``SparseWinogradReLUConv2D`` layers of ``model`` (nested models included)."""
    return _layers(model, SparseWinogradReLUConv2D)


def kernel_sparsity(layer):
    """The fraction of zeros in a built ``WinogradReLUConv2D``'s kernel."""
    kernel = np.asarray(ops.convert_to_numpy(layer.kernel))
    return float(np.mean(kernel == 0)) if kernel.size else 0.0


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model, got {type(model).__name__}.")
    from keras_swcnn.pruning.wrapper import PruneLowMagnitude

    if _layers(model, PruneLowMagnitude):
        raise ValueError(
            "The model still has pruning wrappers: call keras_swcnn.pruning.strip_pruning(model) "
            "first.")


def _clone(model, convert):
    try:
        return keras.models.clone_model(model, clone_function=convert, recursive=True)
    except ValueError as error:
        raise ValueError(
            f"Cannot rebuild {model.name!r}: only Sequential and functional models (nested ones "
            f"included) can be converted ({error})") from error


def sparsify(model, min_sparsity=0.5, sparse_mode="auto"):
    """A new model with each ``WinogradReLUConv2D`` of sparsity ``>= min_sparsity`` made sparse.

    Sparsity is the fraction of zeros in the Winograd-domain kernel (for
    example after ``keras_swcnn.pruning.strip_pruning``). The converted layers
    are ``SparseWinogradReLUConv2D`` with the same name and configuration and
    compute the same outputs; every other layer is shared with ``model``.

    Args:
        model: a built Sequential or functional model (nested models included).
        min_sparsity: the least fraction of zeros a layer needs to be converted.
        sparse_mode: passed to the sparse layers (``"auto"``, ``"sparse"``, ``"dense"``).

    Example:
        >>> from keras_swcnn.applications import ResNet18
        >>> model = ResNet18(variant="small", input_shape=(28, 28, 1), classes=10, width=16,
        ...                  weights="fashion_mnist_small")
        >>> fast = sparsify(model)
        >>> fast.predict(np.zeros((1, 28, 28, 1), "float32"), verbose=0).shape
        (1, 10)
    """
    _check_model(model)
    if not 0.0 <= float(min_sparsity) <= 1.0:
        raise ValueError(f"min_sparsity must be in [0, 1], got {min_sparsity!r}.")

    def convert(layer):
        if (isinstance(layer, WinogradReLUConv2D) and layer.built
                and kernel_sparsity(layer) >= min_sparsity):
            return SparseWinogradReLUConv2D.from_dense(layer, sparse_mode=sparse_mode)
        return layer

    return _clone(model, convert)


def densify(model):
    """A new model with every ``SparseWinogradReLUConv2D`` back as a ``WinogradReLUConv2D``.

    Example:
        >>> from keras_swcnn.applications import ResNet18
        >>> model = ResNet18(variant="small", input_shape=(28, 28, 1), classes=10, width=16,
        ...                  weights="fashion_mnist_small")
        >>> len(winograd_layers(densify(sparsify(model)))) == len(winograd_layers(model))
        True
    """
    _check_model(model)

    def convert(layer):
        if isinstance(layer, SparseWinogradReLUConv2D):
            return layer.to_dense()
        return layer

    return _clone(model, convert)


__all__ = ["SparseWinogradReLUConv2D", "densify", "format", "kernel_sparsity", "sparse_layers",
           "sparsify", "winograd_layers"]
