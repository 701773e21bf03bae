"""tfmot integration: a tf_keras ``WinogradReLUConv2D`` that is a tfmot ``PrunableLayer``.

TensorFlow Model Optimization (tfmot 0.8) prunes only tf_keras (Keras 2)
layers. This module provides the Winograd-ReLU layer as a tf_keras layer that
implements ``tfmot.sparsity.keras.PrunableLayer`` (its prunable weight is the
Winograd-domain kernel), so tfmot's own ``prune_low_magnitude``, schedules,
``UpdatePruningStep``, ``strip_pruning`` and ``sparsity_m_by_n`` work on it.
The math is keras-swcnn's: the native TensorFlow custom calls where they run
(CPU, static spatial shapes), else the TensorFlow reference ops.

Import it on demand: importing tfmot switches TensorFlow to legacy Keras
(``TF_USE_LEGACY_KERAS=1``) for the whole process.

Example:
    >>> import tf_keras
    >>> import tensorflow_model_optimization as tfmot
    >>> from keras_swcnn.integrations.tfmot import WinogradReLUConv2D
    >>> model = tf_keras.Sequential([tf_keras.Input((28, 28, 16)), WinogradReLUConv2D(32)])
    >>> pruned = tfmot.sparsity.keras.prune_low_magnitude(
    ...     model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.9, 0))
"""

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras

from keras_swcnn import winograd
from keras_swcnn import ops as winograd_ops
from keras_swcnn.layers.winograd_relu_conv2d import (
    DEFAULT_KERNEL_INITIALIZER, check_filters, check_layer_options)


def _keras_ops_conv(module, x, kernel, padding, winograd_activation):
    """The convolution in ``keras.ops`` (reference or portable): TensorFlow ops, any device."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return module.winograd_conv2d(x, kernel, padding, winograd_activation)
    raise RuntimeError(
        "The tf_keras WinogradReLUConv2D needs the native TensorFlow path (CPU, known "
        "height/width/channels) or KERAS_BACKEND=tensorflow for the keras.ops paths; the "
        f"Keras backend is {keras.backend.backend()!r}."
    )


def winograd_conv2d(x, kernel, padding="same", winograd_activation="relu", implementation="auto"):
    """The convolution the tf_keras layer computes, with keras-swcnn's TensorFlow kernels.

    ``"auto"`` is the portable lowering while a model is exported (e.g. by
    ``TFLiteConverter``; see ``keras_swcnn.export``), else native where it runs.
    """
    from keras_swcnn import export
    from keras_swcnn.ops import portable, reference, tensorflow_native

    if implementation == "auto":
        implementation = export.auto_means()
    if implementation == "portable":
        return _keras_ops_conv(portable, x, kernel, padding, winograd_activation)
    native_ok = tensorflow_native.unavailable_reason() is None and tensorflow_native.can_run(x)
    if implementation == "native" or (implementation == "auto" and native_ok):
        return tensorflow_native.winograd_conv2d(x, kernel, padding, winograd_activation)
    return _keras_ops_conv(reference, x, kernel, padding, winograd_activation)


@tf_keras.utils.register_keras_serializable(package="keras_swcnn")
class WinogradReLUConv2D(tf_keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    """tf_keras twin of ``keras_swcnn.layers.WinogradReLUConv2D`` (NHWC), prunable by tfmot.

    Same arguments and weights (``kernel`` of shape ``(4, 4, in, filters)``,
    optional ``bias``) as the Keras 3 layer, channels_last only; convert
    weights either way with ``copy_weights``.

    Example:
        >>> layer = WinogradReLUConv2D(64, padding="same")
        >>> layer.get_prunable_weights()  # doctest: +SKIP
    """

    def __init__(self, filters, padding="same", winograd_activation="relu", activation=None,
                 use_bias=False, kernel_initializer=None, bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, implementation="auto", **kwargs):
        super().__init__(**kwargs)
        # The Keras 3 layer's rules (this twin is channels_last only).
        padding, _ = check_layer_options(padding, "channels_last", winograd_activation)
        winograd_ops.check_implementation(implementation)
        self.filters = check_filters(filters)
        self.padding = padding
        self.winograd_activation = winograd_activation
        self.activation = tf_keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = tf_keras.initializers.get(
            kernel_initializer or DEFAULT_KERNEL_INITIALIZER)
        self.bias_initializer = tf_keras.initializers.get(bias_initializer)
        self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = tf_keras.regularizers.get(bias_regularizer)
        self.implementation = implementation
        self.input_spec = tf_keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = tf.TensorShape(input_shape)[-1]
        if channels is None:
            raise ValueError(f"The channel dimension must be known, got shape {input_shape}.")
        self.kernel = self.add_weight(
            "kernel", shape=(4, 4, int(channels), self.filters),
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer)
        self.bias = self.add_weight(
            "bias", shape=(self.filters,), initializer=self.bias_initializer,
            regularizer=self.bias_regularizer) if self.use_bias else None
        self.input_spec = tf_keras.layers.InputSpec(ndim=4, axes={-1: int(channels)})
        super().build(input_shape)

    def call(self, inputs):
        y = winograd_conv2d(inputs, self.kernel, self.padding, self.winograd_activation,
                            self.implementation)
        if self.use_bias:
            y = y + self.bias
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape([n, winograd.output_length(h, self.padding),
                               winograd.output_length(w, self.padding), self.filters])

    def get_prunable_weights(self):
        """The Winograd-domain kernel: tfmot prunes it where the multiplications happen."""
        return [self.kernel]

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters, "padding": self.padding,
            "winograd_activation": self.winograd_activation,
            "activation": tf_keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": tf_keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": tf_keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": tf_keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": tf_keras.regularizers.serialize(self.bias_regularizer),
            "implementation": self.implementation,
        })
        return config


def copy_weights(source, target):
    """Copy kernel (and bias) between a Keras 3 and a tf_keras ``WinogradReLUConv2D``, either way.

    Both layers must be built with the same kernel shape and bias setting.

    Example:
        >>> copy_weights(keras3_layer, tf_keras_layer)  # doctest: +SKIP
    """
    weights = [np.asarray(w) for w in source.get_weights()]
    expected = [tuple(w.shape) for w in target.get_weights()]
    if [w.shape for w in weights] != expected:
        raise ValueError(
            f"Weight shapes differ: source {[w.shape for w in weights]}, target {expected}; "
            "build both layers with the same input channels, filters and use_bias."
        )
    target.set_weights(weights)
    return target
