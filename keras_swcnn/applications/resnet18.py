"""ResNet-18-var, the paper's ImageNet network, with Winograd-ReLU convolutions.

Layer names follow the original tensorpack code (``res2a_...``), which the
checkpoint converter relies on.
"""

import keras
from keras import layers

from keras_swcnn import winograd
from keras_swcnn.layers import WinogradReLUConv2D

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
#: L2 weight decay 1e-4 in the original's convention (0.5 * 1e-4 * ||w||^2) is Keras's L2(5e-5).
WEIGHT_DECAY = 5e-5
STAGES = (2, 3, 4, 5)
STAGE_WIDTHS = (64, 128, 256, 512)
VARIANTS = ("imagenet", "small")
CONVS = ("winograd", "spatial")


def _bn(name):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _l2(weight_decay):
    return keras.regularizers.L2(weight_decay) if weight_decay else None


def _conv3x3(x, filters, name, conv, winograd_activation, weight_decay):
    """One 3x3 convolution of a residual branch, in the chosen variant (docs/design.md, section 1).

    (c) Winograd-ReLU: the ReLU is inside the layer (after the input transform);
    (b) Winograd-native and (a) spatial: a spatial ReLU comes first.
    """
    if conv == "spatial":
        x = layers.ReLU(name=f"{name}_relu")(x)
        return layers.Conv2D(filters, 3, padding="same", use_bias=False,
                             kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_in"),
                             kernel_regularizer=_l2(weight_decay), name=name)(x)
    if winograd_activation is None:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return WinogradReLUConv2D(filters, winograd_activation=winograd_activation,
                              kernel_regularizer=_l2(weight_decay), name=name)(x)


def _block(x, stage, block, filters, first, conv, winograd_activation, weight_decay):
    """A residual block: branch BN -> conv -> BN -> conv -> BN; shortcut relu(x) (+ 1x1 conv + BN)."""
    prefix = f"res{stage}{block}"
    branch = _bn(f"{prefix}_bn2a")(x)
    branch = _conv3x3(branch, filters, f"{prefix}_branch2a", conv, winograd_activation, weight_decay)
    branch = _bn(f"{prefix}_bn2b")(branch)
    branch = _conv3x3(branch, filters, f"{prefix}_branch2b", conv, winograd_activation, weight_decay)
    branch = _bn(f"{prefix}_bn2c")(branch)
    shortcut = x
    if first and stage == 2:
        shortcut = _bn(f"{prefix}_bn1_pre")(shortcut)
    shortcut = layers.ReLU(name=f"{prefix}_relu1")(shortcut)
    if first:
        shortcut = layers.Conv2D(
            filters, 1, use_bias=False, kernel_regularizer=_l2(weight_decay),
            kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out"),
            name=f"{prefix}_branch1")(shortcut)
        shortcut = _bn(f"{prefix}_bn1")(shortcut)
    return layers.Add(name=f"{prefix}_add")([shortcut, branch])


def _validate_input_shape(input_shape, input_tensor, variant, include_top):
    default = (224, 224, 3) if variant == "imagenet" else (32, 32, 3)
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        return default
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}.")
    if input_shape[-1] is None:
        raise ValueError("The number of input channels must be known.")
    if variant == "imagenet" and include_top and input_shape[:2] != (224, 224):
        raise ValueError(
            "variant='imagenet' with include_top=True needs 224x224 inputs, got "
            f"{input_shape}; use include_top=False or variant='small'.")
    minimum = 32 if variant == "imagenet" else 1
    for size in input_shape[:2]:
        if size is not None and size < minimum:
            raise ValueError(f"Inputs must be at least {minimum}x{minimum} for variant={variant!r}, "
                             f"got {input_shape}.")
    return input_shape


def build_resnet18(include_top=True, input_tensor=None, input_shape=None, pooling=None,
                   classes=1000, classifier_activation="softmax", variant="imagenet",
                   winograd_activation="relu", conv="winograd", width=64, dropout=0.15,
                   weight_decay=WEIGHT_DECAY, name=None):
    """The network of ``ResNet18`` without weights (see there for the arguments)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    if conv not in CONVS:
        raise ValueError(f"conv must be one of {CONVS}, got {conv!r}.")
    winograd.check_winograd_activation(winograd_activation)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}.")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}.")
    if keras.config.image_data_format() != "channels_last":
        raise ValueError("ResNet18 is built channels_last; set keras.config.set_image_data_format.")
    input_shape = _validate_input_shape(input_shape, input_tensor, variant, include_top)
    if input_tensor is None:
        inputs = keras.Input(input_shape, name="input")
    elif keras.backend.is_keras_tensor(input_tensor):
        inputs = input_tensor
    else:
        inputs = keras.Input(tensor=input_tensor, shape=input_shape, name="input")
    widths = [width * w // 64 for w in STAGE_WIDTHS]

    if variant == "imagenet":
        x = layers.Conv2D(widths[0], 7, strides=2, padding="same", use_bias=False,
                          kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out"),
                          kernel_regularizer=_l2(weight_decay), name="conv1")(inputs)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    else:  # small images: 3x3 stride-1 stem, no pooling
        x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False,
                          kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out"),
                          kernel_regularizer=_l2(weight_decay), name="conv1")(inputs)
    for stage, filters in zip(STAGES, widths):
        for block in ("a", "b"):
            x = _block(x, stage, block, filters, block == "a", conv, winograd_activation, weight_decay)
        if stage in (2, 3):  # downsampling on the residual stream; none before stage 5
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{stage}")(x)

    x = layers.ReLU(name="relu_final")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="gap")(x)
        x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation,
                         kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_in"),
                         kernel_regularizer=_l2(weight_decay), name="linear")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="gmp")(x)
    default_name = f"resnet18_{variant}" + ("" if conv == "winograd" and winograd_activation
                                            else f"_{conv}" if conv == "spatial" else "_winograd_native")
    model_inputs = keras.utils.get_source_inputs(inputs) if input_tensor is not None else inputs
    return keras.Model(model_inputs, x, name=name or default_name)
