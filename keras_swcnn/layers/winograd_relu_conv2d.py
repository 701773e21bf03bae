"""The Winograd-ReLU convolution layer (Liu et al., ICLR 2018)."""

import numpy as np
import keras
from keras import ops

from keras_swcnn import ops as winograd_ops
from keras_swcnn import winograd

#: The paper's initializer: variance scaling with factor 2 * 9 / 32 over fan-in
#: 16 * in_channels (Keras computes fan-in of a (4, 4, C, K) kernel as 16 * C).
DEFAULT_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2 * 9 / 32, "mode": "fan_in", "distribution": "truncated_normal"},
}


def _as_pair(value, name):
    if isinstance(value, int):
        return (value, value)
    try:
        pair = tuple(int(v) for v in value)
    except TypeError:
        pair = ()
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}.")
    return pair


def check_filters(filters):
    """``filters`` as an int, or ``ValueError`` unless it is a positive integer."""
    if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters < 1:
        raise ValueError(f"filters must be a positive integer, got {filters!r}.")
    return int(filters)


def check_layer_options(padding, data_format, winograd_activation):
    """``(padding, data_format)`` normalised, or ``ValueError`` naming what is not supported."""
    padding = winograd.check_padding(padding)
    winograd.check_winograd_activation(winograd_activation)
    resolved = data_format or keras.config.image_data_format()
    if resolved not in ("channels_last", "channels_first"):
        raise ValueError(
            "data_format must be 'channels_last', 'channels_first' or None, got "
            f"{data_format!r}."
        )
    return padding, resolved


def run_channels_last(inputs, conv, data_format, bias, activation):
    """``conv`` (NHWC in, NHWC out) on ``inputs`` of either data format, then bias and activation."""
    x = inputs
    if data_format == "channels_first":
        x = ops.transpose(x, (0, 2, 3, 1))
    y = conv(x)
    if bias is not None:
        y = y + ops.cast(bias, y.dtype)
    if data_format == "channels_first":
        y = ops.transpose(y, (0, 3, 1, 2))
    if activation is not None:
        y = activation(y)
    return y


def conv_output_shape(input_shape, filters, padding, data_format):
    """The output shape of a 3x3 stride-1 convolution layer (both data formats)."""
    if data_format == "channels_last":
        n, h, w, _ = input_shape
    else:
        n, _, h, w = input_shape
    h, w = (winograd.output_length(d, padding) for d in (h, w))
    for d in (h, w):
        if d is not None and d < 1:
            raise ValueError(
                "A 3x3 'valid' convolution needs spatial dimensions of at least 3; "
                f"got input shape {tuple(input_shape)}."
            )
    if data_format == "channels_last":
        return (n, h, w, filters)
    return (n, filters, h, w)


@keras.saving.register_keras_serializable(package="keras_swcnn")
class WinogradReLUConv2D(keras.layers.Layer):
    """3x3 stride-1 convolution whose kernel lives in the Winograd F(2x2, 3x3) domain.

    Each 4x4 input tile ``d`` (stride 2) is transformed to ``V = B^T d B``; with
    ``winograd_activation="relu"`` the ReLU is applied *there*, so both the
    weights ``U`` and the activations ``relu(V)`` are sparse where the
    multiplications happen; the output tile is ``A^T [sum_c U * relu(V)] A``.
    The input of this layer is therefore the pre-activation: do not put a ReLU
    in front of it (the paper's blocks are ``BN -> WinogradReLUConv2D``).
    With ``winograd_activation=None`` the layer is the plain Winograd-native
    convolution, equal to ``Conv2D`` with kernel ``g`` when ``U = G g G^T``.

    The trainable ``kernel`` has shape ``(4, 4, in_channels, filters)``: tile
    row ``i``, tile column ``j``, input, output. Its ``reshape(16, C, K)`` is the
    paper's ``[16, C, K]`` layout with position ``t = 4 * i + j``
    (``keras_swcnn.winograd.to_paper_layout``).

    The default initializer is the paper's: variance scaling with factor
    ``2 * 9 / 32`` over fan-in ``16 * in_channels`` (truncated normal), which
    keeps activations well scaled through deep stacks the way He
    initialization does for spatial 3x3 convolutions.

    Args:
        filters: number of output channels.
        kernel_size: must be 3 (F(2x2, 3x3)); accepted for ``Conv2D`` compatibility.
        strides: must be 1.
        padding: ``"same"`` (default) or ``"valid"``.
        data_format: ``"channels_last"``, ``"channels_first"`` or ``None``
            (``keras.config.image_data_format()``).
        dilation_rate: must be 1.
        groups: must be 1.
        winograd_activation: ``"relu"`` (default) or ``None``.
        activation: optional activation applied to the (spatial) output.
        use_bias: add a bias to the output (default ``False``, as in the paper).
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint,
        bias_constraint: as in ``keras.layers.Conv2D``.
        implementation: ``"auto"`` (default: the native kernels where they
            run on this backend and platform, else the ``keras.ops``
            reference), ``"native"`` (raise if unavailable) or ``"reference"``.
            ``keras_swcnn.build_info()`` says which ``"auto"`` picks.

    Example:
        >>> import keras
        >>> from keras_swcnn.layers import WinogradReLUConv2D
        >>> model = keras.Sequential([
        ...     keras.Input((28, 28, 1)),
        ...     keras.layers.Conv2D(16, 3, padding="same"),
        ...     WinogradReLUConv2D(32),
        ...     keras.layers.GlobalAveragePooling2D(),
        ...     keras.layers.Dense(10),
        ... ])
        >>> model.layers[1].kernel.shape
        (4, 4, 16, 32)
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        padding="same",
        data_format=None,
        dilation_rate=1,
        groups=1,
        winograd_activation="relu",
        activation=None,
        use_bias=False,
        kernel_initializer=None,
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        implementation="auto",
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = check_filters(filters)
        if _as_pair(kernel_size, "kernel_size") != (3, 3):
            raise ValueError(
                f"WinogradReLUConv2D supports only kernel_size=3 (F(2x2, 3x3)), "
                f"got kernel_size={kernel_size!r}."
            )
        if _as_pair(strides, "strides") != (1, 1):
            raise ValueError(
                f"WinogradReLUConv2D supports only strides=1, got strides={strides!r}. "
                "Downsample with a pooling layer instead."
            )
        if _as_pair(dilation_rate, "dilation_rate") != (1, 1):
            raise ValueError(
                "WinogradReLUConv2D supports only dilation_rate=1, got "
                f"dilation_rate={dilation_rate!r}."
            )
        if groups != 1:
            raise ValueError(
                f"WinogradReLUConv2D supports only groups=1, got groups={groups!r}."
            )
        self.padding, self.data_format = check_layer_options(
            padding, data_format, winograd_activation
        )
        winograd_ops.check_implementation(implementation)
        self.implementation = implementation
        self.kernel_size = (3, 3)
        self.strides = (1, 1)
        self.dilation_rate = (1, 1)
        self.groups = 1
        self.winograd_activation = winograd_activation
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or DEFAULT_KERNEL_INITIALIZER
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def _check_input_shape(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "WinogradReLUConv2D expects 4D input (batch, height, width, channels) "
                f"or (batch, channels, height, width); got shape {tuple(input_shape)}."
            )
        channels = input_shape[self._channel_axis]
        if channels is None or channels < 1:
            raise ValueError(
                "The channel dimension of the input of WinogradReLUConv2D must be "
                f"known and at least 1; got shape {tuple(input_shape)} ({self.data_format})."
            )
        return channels

    def build(self, input_shape):
        channels = self._check_input_shape(input_shape)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(4, 4, channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={self._channel_axis: channels}
        )

    def call(self, inputs):
        return run_channels_last(
            inputs,
            lambda x: winograd_ops.winograd_conv2d(
                x,
                self.kernel,
                padding=self.padding,
                winograd_activation=self.winograd_activation,
                implementation=self.implementation,
            ),
            self.data_format,
            self.bias,
            self.activation,
        )

    def compute_output_shape(self, input_shape):
        self._check_input_shape(input_shape)
        return conv_output_shape(input_shape, self.filters, self.padding, self.data_format)

    def get_prunable_weights(self):
        """The weights pruning acts on: the Winograd-domain kernel (tfmot's ``PrunableLayer`` API)."""
        return [self.kernel]

    # Kernel conversions -------------------------------------------------

    def set_spatial_kernel(self, kernel):
        """Set the Winograd kernel to ``G g G^T`` for a spatial kernel ``g`` of shape ``(3, 3, C, K)``.

        Example:
            >>> import numpy as np
            >>> layer = WinogradReLUConv2D(4)
            >>> layer.build((None, 8, 8, 2))
            >>> layer.set_spatial_kernel(np.ones((3, 3, 2, 4)))
        """
        if not self.built:
            raise ValueError("Build the layer (call it once) before setting its kernel.")
        kernel = np.asarray(kernel)
        expected = (3, 3) + tuple(self.kernel.shape[2:])
        if kernel.shape != expected:
            raise ValueError(
                f"Expected a spatial kernel of shape {expected}, got {kernel.shape}."
            )
        self.kernel.assign(winograd.spatial_to_winograd(kernel))

    def get_spatial_kernel(self):
        """Least-squares spatial kernel ``(3, 3, C, K)`` of the Winograd kernel (for inspection)."""
        return winograd.winograd_to_spatial(ops.convert_to_numpy(self.kernel))

    @classmethod
    def from_conv2d(cls, conv, winograd_activation=None, **kwargs):
        """A built ``WinogradReLUConv2D`` with the weights of a built 3x3 stride-1 ``Conv2D``.

        With ``winograd_activation=None`` (default) the new layer computes the
        same function as ``conv``; pass ``"relu"`` to start a Winograd-ReLU
        layer from a trained spatial convolution. ``kwargs`` override the
        copied configuration (e.g. ``name``).

        Example:
            >>> import keras
            >>> conv = keras.layers.Conv2D(8, 3, padding="same")
            >>> conv.build((None, 16, 16, 4))
            >>> layer = WinogradReLUConv2D.from_conv2d(conv)
        """
        if not isinstance(conv, keras.layers.Conv2D):
            raise ValueError(f"Expected a keras.layers.Conv2D, got {type(conv).__name__}.")
        if not conv.built:
            raise ValueError("The Conv2D must be built (have weights) to be converted.")
        if tuple(conv.kernel_size) != (3, 3) or tuple(conv.strides) != (1, 1):
            raise ValueError(
                "Only 3x3, stride-1 Conv2D layers can be converted; got "
                f"kernel_size={conv.kernel_size}, strides={conv.strides}."
            )
        if tuple(conv.dilation_rate) != (1, 1) or conv.groups != 1:
            raise ValueError("Only Conv2D layers with dilation_rate=1 and groups=1 convert.")
        config = dict(
            filters=conv.filters,
            padding=conv.padding,
            data_format=conv.data_format,
            activation=keras.activations.serialize(conv.activation),
            use_bias=conv.use_bias,
            winograd_activation=winograd_activation,
        )
        config.update(kwargs)
        layer = cls(**config)
        channels = conv.kernel.shape[2]
        shape = (None, None, None, channels)
        if layer.data_format == "channels_first":
            shape = (None, channels, None, None)
        layer.build(shape)
        layer.set_spatial_kernel(ops.convert_to_numpy(conv.kernel))
        if conv.use_bias:
            layer.bias.assign(ops.convert_to_numpy(conv.bias))
        return layer

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
                "groups": self.groups,
                "winograd_activation": self.winograd_activation,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(
                    self.activity_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "implementation": self.implementation,
            }
        )
        return config
