"""The inference-only Winograd-ReLU convolution with a compressed (pruned) kernel."""

import numpy as np
import keras
from keras import ops

from keras_swcnn import ops as winograd_ops
from keras_swcnn.layers.winograd_relu_conv2d import (
    WinogradReLUConv2D, check_filters, check_layer_options, conv_output_shape, run_channels_last)
from keras_swcnn import sparse_format


@keras.saving.register_keras_serializable(package="keras_swcnn")
class SparseWinogradReLUConv2D(keras.layers.Layer):
    """A ``WinogradReLUConv2D`` for inference whose kernel keeps only its non-zero weights.

    It computes what a ``WinogradReLUConv2D`` with the same (pruned) kernel
    computes, but the native kernels multiply only by the stored weights: at
    weight density ``d`` the products cost about ``d`` of the dense ones. The
    kernel is stored compressed (``keras_swcnn.sparse.format``): an int32 bit
    ``mask`` of shape ``(16, filters, ceil(C / 32))`` and the ``values``
    (one float per stored weight), so ``.keras`` and ``.weights.h5`` files hold
    only the non-zeros. The weights are not trainable: train and prune the
    dense layer, then convert (``from_dense`` or ``keras_swcnn.sparse.sparsify``).

    Args:
        filters: number of output channels.
        stored: the number of stored weights (the length of ``values``).
        padding, data_format, winograd_activation, activation, use_bias,
        implementation: as in ``WinogradReLUConv2D``.
        sparse_mode: ``"auto"`` (default: the sparse kernel below the density
            where it stops paying, the dense fused kernel above; measured in
            docs/performance.md), ``"sparse"`` or ``"dense"``.

    Example:
        >>> import numpy as np
        >>> from keras_swcnn.layers import WinogradReLUConv2D, SparseWinogradReLUConv2D
        >>> dense = WinogradReLUConv2D(8)
        >>> dense.build((None, 12, 12, 4))
        >>> pruned = np.random.rand(4, 4, 4, 8) < 0.1
        >>> dense.kernel.assign(np.where(pruned, 1.0, 0.0).astype("float32"))
        >>> sparse = SparseWinogradReLUConv2D.from_dense(dense)
        >>> x = np.random.rand(2, 12, 12, 4).astype("float32")
        >>> bool(np.allclose(sparse(x), dense(x), atol=1e-5))
        True
    """

    def __init__(self, filters, stored, padding="same", data_format=None,
                 winograd_activation="relu", activation=None, use_bias=False,
                 implementation="auto", sparse_mode="auto", **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        filters = check_filters(filters)
        if not isinstance(stored, (int, np.integer)) or stored < 0:
            raise ValueError(f"stored must be a non-negative integer, got {stored!r}.")
        self.padding, self.data_format = check_layer_options(
            padding, data_format, winograd_activation)
        if sparse_mode not in winograd_ops.SPARSE_MODES:
            raise ValueError(
                f"sparse_mode must be one of {winograd_ops.SPARSE_MODES}, got {sparse_mode!r}.")
        winograd_ops.check_implementation(implementation)
        self.filters = filters
        self.stored = int(stored)
        self.winograd_activation = winograd_activation
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.implementation = implementation
        self.sparse_mode = sparse_mode

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def _check_input_shape(self, input_shape):
        if len(input_shape) != 4 or input_shape[self._channel_axis] is None:
            raise ValueError(
                "SparseWinogradReLUConv2D expects 4D input with a known channel dimension "
                f"({self.data_format}); got shape {tuple(input_shape)}.")
        return input_shape[self._channel_axis]

    def build(self, input_shape):
        channels = self._check_input_shape(input_shape)
        self.in_channels = int(channels)
        if self.stored > 16 * self.in_channels * self.filters:
            raise ValueError(
                f"stored={self.stored} exceeds the {16 * self.in_channels * self.filters} "
                f"weights of a (4, 4, {self.in_channels}, {self.filters}) kernel.")
        self.mask = self.add_weight(
            name="mask", shape=sparse_format.mask_shape(channels, self.filters),
            dtype="int32", initializer="zeros", trainable=False)
        self.values = self.add_weight(
            name="values", shape=(self.stored,), dtype="float32", initializer="zeros",
            trainable=False)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros",
                                        trainable=False)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={self._channel_axis: channels})

    def call(self, inputs):
        return run_channels_last(
            inputs,
            lambda x: winograd_ops.sparse_winograd_conv2d(
                x, self.mask, self.values, padding=self.padding,
                winograd_activation=self.winograd_activation,
                implementation=self.implementation, mode=self.sparse_mode),
            self.data_format, self.bias, self.activation)

    def compute_output_shape(self, input_shape):
        self._check_input_shape(input_shape)
        return conv_output_shape(input_shape, self.filters, self.padding, self.data_format)

    @property
    def density(self):
        """The fraction of the ``(4, 4, C, K)`` kernel's weights that are stored."""
        return self.stored / float(16 * self.in_channels * self.filters)

    def dense_kernel(self):
        """The ``(4, 4, C, K)`` kernel as a numpy array (zeros where nothing is stored)."""
        return np.asarray(ops.convert_to_numpy(
            sparse_format.expand(self.mask, self.values, self.in_channels)))

    def set_dense_kernel(self, kernel):
        """Store the non-zeros of a ``(4, 4, C, K)`` kernel with exactly ``stored`` of them."""
        kernel = np.asarray(kernel, np.float32)
        expected = (4, 4, self.in_channels, self.filters)
        if kernel.shape != expected:
            raise ValueError(f"Expected a kernel of shape {expected}, got {kernel.shape}.")
        mask, values = sparse_format.compress(kernel)
        if values.shape[0] != self.stored:
            raise ValueError(
                f"The kernel has {values.shape[0]} non-zero weights; this layer stores "
                f"{self.stored}. Make a new layer with from_dense().")
        self.mask.assign(mask)
        self.values.assign(values)

    @classmethod
    def from_dense(cls, layer, **kwargs):
        """A built sparse layer computing what the built ``WinogradReLUConv2D`` ``layer`` computes.

        ``kwargs`` override the copied configuration (``name``, ``sparse_mode``, ...).

        Example:
            >>> from keras_swcnn.layers import WinogradReLUConv2D
            >>> dense = WinogradReLUConv2D(4); dense.build((None, 8, 8, 2))
            >>> SparseWinogradReLUConv2D.from_dense(dense).stored > 0
            True
        """
        if not isinstance(layer, WinogradReLUConv2D):
            raise ValueError(f"Expected a WinogradReLUConv2D, got {type(layer).__name__}.")
        if not layer.built:
            raise ValueError("The WinogradReLUConv2D must be built (have weights) to convert.")
        kernel = np.asarray(ops.convert_to_numpy(layer.kernel), np.float32)
        mask, values = sparse_format.compress(kernel)
        config = dict(
            filters=layer.filters, stored=int(values.shape[0]), padding=layer.padding,
            data_format=layer.data_format, winograd_activation=layer.winograd_activation,
            activation=keras.activations.serialize(layer.activation), use_bias=layer.use_bias,
            implementation=layer.implementation, name=layer.name,
            dtype=layer.dtype_policy,
        )
        config.update(kwargs)
        sparse = cls(**config)
        channels = kernel.shape[2]
        sparse.build((None, None, None, channels) if sparse.data_format == "channels_last"
                     else (None, channels, None, None))
        sparse.mask.assign(mask)
        sparse.values.assign(values)
        if layer.use_bias:
            sparse.bias.assign(ops.convert_to_numpy(layer.bias))
        return sparse

    def to_dense(self, **kwargs):
        """A built ``WinogradReLUConv2D`` with this layer's kernel (zeros where nothing is stored)."""
        config = dict(
            filters=self.filters, padding=self.padding, data_format=self.data_format,
            winograd_activation=self.winograd_activation,
            activation=keras.activations.serialize(self.activation), use_bias=self.use_bias,
            implementation=self.implementation, name=self.name, dtype=self.dtype_policy,
        )
        config.update(kwargs)
        dense = WinogradReLUConv2D(**config)
        dense.build((None, None, None, self.in_channels)
                    if dense.data_format == "channels_last"
                    else (None, self.in_channels, None, None))
        dense.kernel.assign(self.dense_kernel())
        if self.use_bias:
            dense.bias.assign(ops.convert_to_numpy(self.bias))
        return dense

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "stored": self.stored,
            "padding": self.padding,
            "data_format": self.data_format,
            "winograd_activation": self.winograd_activation,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "implementation": self.implementation,
            "sparse_mode": self.sparse_mode,
        })
        return config
