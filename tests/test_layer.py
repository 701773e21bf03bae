"""WinogradReLUConv2D: equivalence with Conv2D, gradients, serialization, training, errors."""

import os

import numpy as np
import pytest
import keras
from keras import ops

from conftest import BACKEND, gradients, random_normal
from keras_swcnn import winograd
from keras_swcnn.layers import WinogradReLUConv2D
from numpy_reference import conv, conv_grads, rel_error

FORMATS = ["channels_last", "channels_first"]


def to_format(x, data_format):
    return x if data_format == "channels_last" else np.transpose(x, (0, 3, 1, 2))


def from_format(y, data_format):
    y = np.asarray(y)
    return y if data_format == "channels_last" else np.transpose(y, (0, 2, 3, 1))


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("shape", [(2, 9, 6, 3, 5), (1, 4, 7, 1, 2), (3, 3, 3, 16, 8)])
def test_equals_conv2d_without_winograd_relu(rng, data_format, padding, shape):
    n, h, w, c, k = shape
    x = random_normal(rng, (n, h, w, c))
    g = random_normal(rng, (3, 3, c, k))
    b = random_normal(rng, (k,))
    conv2d = keras.layers.Conv2D(k, 3, padding=padding, data_format=data_format)
    conv2d.build(to_format(x, data_format).shape)
    conv2d.kernel.assign(g)
    conv2d.bias.assign(b)
    layer = WinogradReLUConv2D(
        k, padding=padding, data_format=data_format, winograd_activation=None, use_bias=True
    )
    layer.build(to_format(x, data_format).shape)
    layer.set_spatial_kernel(g)
    layer.bias.assign(b)
    expected = ops.convert_to_numpy(conv2d(to_format(x, data_format)))
    actual = ops.convert_to_numpy(layer(to_format(x, data_format)))
    assert rel_error(actual, expected) < 1e-5
    # from_conv2d gives the same layer.
    converted = WinogradReLUConv2D.from_conv2d(conv2d)
    assert rel_error(ops.convert_to_numpy(converted(to_format(x, data_format))), expected) < 1e-5


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("activation", ["relu", None])
def test_layer_output_and_gradients_match_numpy(rng, data_format, activation):
    n, h, w, c, k = 2, 7, 6, 3, 4
    x = random_normal(rng, (n, h, w, c))
    layer = WinogradReLUConv2D(k, data_format=data_format, winograd_activation=activation)
    layer.build(to_format(x, data_format).shape)
    u = ops.convert_to_numpy(layer.kernel)
    relu = activation == "relu"
    y = from_format(ops.convert_to_numpy(layer(to_format(x, data_format))), data_format)
    assert rel_error(y, conv(x, u, "same", relu)) < 1e-5

    dy = random_normal(rng, (n, h, w, k))

    def loss(x_in, kernel):
        out, _ = layer.stateless_call([kernel], [], x_in)
        return ops.sum(out * ops.convert_to_tensor(to_format(dy, data_format)))

    dx, du = gradients(loss, to_format(x, data_format), u)
    dx_ref, du_ref = conv_grads(x, u, dy, "same", relu)
    assert rel_error(from_format(dx, data_format), dx_ref) < 1e-5
    assert rel_error(du, du_ref) < 1e-5


def test_kernel_variable_and_default_initializer():
    layer = WinogradReLUConv2D(64)
    layer.build((None, 8, 8, 32))
    assert layer.kernel.path.endswith("kernel")
    assert tuple(layer.kernel.shape) == (4, 4, 32, 64)
    assert layer.bias is None
    std = float(np.std(ops.convert_to_numpy(layer.kernel)))
    # Variance scaling 2*9/32 over fan-in 16*32 (truncated normal shrinks the std slightly).
    expected = np.sqrt(0.5625 / (16 * 32))
    assert 0.8 * expected < std < 1.1 * expected


def small_model(data_format="channels_last"):
    shape = (None, None, 2) if data_format == "channels_last" else (2, None, None)
    inputs = keras.Input(shape)
    x = WinogradReLUConv2D(8, data_format=data_format, use_bias=True)(inputs)
    x = WinogradReLUConv2D(4, padding="valid", data_format=data_format)(x)
    x = keras.layers.GlobalAveragePooling2D(data_format=data_format)(x)
    outputs = keras.layers.Dense(3)(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("data_format", FORMATS)
def test_functional_model_with_unknown_batch_and_spatial_dims(rng, data_format):
    model = small_model(data_format)
    for h, w in [(5, 7), (8, 3)]:
        x = random_normal(rng, (3, h, w, 2))
        assert model.predict(to_format(x, data_format), verbose=0).shape == (3, 3)
    assert model.layers[1].compute_output_shape((None, None, None, 2) if data_format ==
                                                "channels_last" else (None, 2, None, None)) == (
        (None, None, None, 8) if data_format == "channels_last" else (None, 8, None, None))


def test_sequential_model_output_shape():
    model = keras.Sequential([keras.Input((9, 7, 3)), WinogradReLUConv2D(5, padding="valid")])
    assert model.output_shape == (None, 7, 5, 5)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="graph mode with unknown shapes is TF-only")
def test_tf_graph_with_unknown_spatial_dims(rng):
    import tensorflow as tf

    layer = WinogradReLUConv2D(4, winograd_activation=None)
    layer.build((None, None, None, 3))
    fn = tf.function(layer.call, input_signature=[tf.TensorSpec((None, None, None, 3))])
    for h, w in [(5, 6), (1, 9)]:
        x = random_normal(rng, (2, h, w, 3))
        expected = conv(x, ops.convert_to_numpy(layer.kernel), "same", relu=False)
        assert rel_error(fn(x).numpy(), expected) < 1e-5


def test_fit_reduces_loss(rng):
    keras.utils.set_random_seed(int(rng.integers(2**31)))
    model = small_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x = random_normal(rng, (32, 6, 6, 2))
    y = random_normal(rng, (32, 3))
    history = model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(rng, policy):
    try:
        layer = WinogradReLUConv2D(4, dtype=policy)
        x = random_normal(rng, (2, 6, 5, 3))
        y = layer(x)
        assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
        assert keras.backend.standardize_dtype(layer.kernel.dtype) == "float32"
        expected = conv(x, ops.convert_to_numpy(layer.kernel), "same", relu=True)
        assert rel_error(ops.convert_to_numpy(ops.cast(y, "float32")), expected) < 3e-2
    finally:
        keras.config.set_dtype_policy("float32")


def test_get_config_round_trip():
    layer = WinogradReLUConv2D(
        7, padding="valid", data_format="channels_first", winograd_activation=None,
        use_bias=True, kernel_regularizer=keras.regularizers.L2(1e-4), name="wconv",
    )
    config = layer.get_config()
    clone = WinogradReLUConv2D.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == "keras_swcnn>WinogradReLUConv2D"
    assert isinstance(keras.saving.deserialize_keras_object(serialized), WinogradReLUConv2D)


def test_keras_file_round_trip(rng, tmp_path):
    model = small_model()
    x = random_normal(rng, (2, 7, 5, 2))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert isinstance(loaded.layers[1], WinogradReLUConv2D)


def test_spatial_kernel_round_trip(rng):
    layer = WinogradReLUConv2D(3)
    layer.build((None, 5, 5, 2))
    g = random_normal(rng, (3, 3, 2, 3))
    layer.set_spatial_kernel(g)
    np.testing.assert_allclose(layer.get_spatial_kernel(), g, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer.kernel), winograd.spatial_to_winograd(g), rtol=1e-6
    )


@pytest.mark.parametrize("kwargs,message", [
    (dict(kernel_size=5), "only kernel_size=3"),
    (dict(kernel_size=(3, 1)), "only kernel_size=3"),
    (dict(strides=2), "only strides=1"),
    (dict(dilation_rate=2), "only dilation_rate=1"),
    (dict(groups=2), "only groups=1"),
    (dict(padding="causal"), "'same' or 'valid'"),
    (dict(winograd_activation="gelu"), "winograd_activation"),
    (dict(filters=0), "positive integer"),
])
def test_unsupported_configurations(kwargs, message):
    args = dict(filters=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        WinogradReLUConv2D(**args)


def test_bad_inputs():
    layer = WinogradReLUConv2D(4)
    with pytest.raises(ValueError, match="expects 4D input"):
        layer(np.ones((2, 5, 3), np.float32))
    layer = WinogradReLUConv2D(4)
    layer(np.ones((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="axis -1 of input shape to have value 3"):
        layer(np.ones((1, 5, 5, 2), np.float32))
    with pytest.raises(ValueError, match="at least 3"):
        WinogradReLUConv2D(4, padding="valid").compute_output_shape((None, 2, 5, 3))
    with pytest.raises(ValueError, match="channel dimension"):
        WinogradReLUConv2D(4).build((None, 5, 5, None))
    unbuilt = WinogradReLUConv2D(4)
    with pytest.raises(ValueError, match="Build the layer"):
        unbuilt.set_spatial_kernel(np.ones((3, 3, 1, 4)))
    layer = WinogradReLUConv2D(4)
    layer.build((None, 5, 5, 2))
    with pytest.raises(ValueError, match=r"\(3, 3, 2, 4\)"):
        layer.set_spatial_kernel(np.ones((3, 3, 4, 2)))


def test_from_conv2d_refuses_other_convolutions():
    conv5 = keras.layers.Conv2D(4, 5)
    conv5.build((None, 8, 8, 2))
    with pytest.raises(ValueError, match="3x3, stride-1"):
        WinogradReLUConv2D.from_conv2d(conv5)
    with pytest.raises(ValueError, match="must be built"):
        WinogradReLUConv2D.from_conv2d(keras.layers.Conv2D(4, 3))
    with pytest.raises(ValueError, match="Expected a keras.layers.Conv2D"):
        WinogradReLUConv2D.from_conv2d(keras.layers.Dense(3))


def test_every_entry_point_applies_the_same_option_rules(rng):
    """One rule for padding and winograd_activation: the layer, the ops and ResNet18 accept
    the same values (padding in any case) and refuse others with the same message."""
    from keras_swcnn import ops as wops
    from keras_swcnn.applications import ResNet18

    x, u = random_normal(rng, (1, 5, 5, 2)), random_normal(rng, (4, 4, 2, 3))
    expected = conv(x, u, "valid")
    layer = WinogradReLUConv2D(3, padding="VALID", use_bias=False)
    layer.build(x.shape)
    layer.kernel.assign(u)
    assert rel_error(ops.convert_to_numpy(layer(x)), expected) < 1e-5
    assert rel_error(ops.convert_to_numpy(wops.winograd_conv2d(x, u, padding="Valid")),
                     expected) < 1e-5
    refusals = {
        "padding must be 'same' or 'valid', got 'full'": [
            lambda: WinogradReLUConv2D(3, padding="full"),
            lambda: wops.winograd_conv2d(x, u, padding="full"),
            lambda: wops.input_transform(x, padding="full"),
        ],
        "winograd_activation must be 'relu' or None, got 'gelu'": [
            lambda: WinogradReLUConv2D(3, winograd_activation="gelu"),
            lambda: wops.winograd_conv2d(x, u, winograd_activation="gelu"),
            lambda: ResNet18(weights=None, winograd_activation="gelu"),
        ],
    }
    for message, calls in refusals.items():
        for call in calls:
            with pytest.raises(ValueError, match=message):
                call()
