"""The keras.ops reference primitives against the float64 numpy model (run on every backend)."""

import numpy as np
import pytest
from keras import ops

from conftest import CASES, SHAPES, gradients, random_normal
from keras_swcnn import ops as wops
from keras_swcnn import winograd
from numpy_reference import (
    conv,
    conv_grads,
    from_position_layout,
    input_tiles,
    output_from_products,
    rel_error,
    to_position_layout,
)


@pytest.mark.parametrize("shape,padding", CASES)
@pytest.mark.parametrize("relu", [True, False])
def test_input_transform(rng, shape, padding, relu):
    n, h, w, c, _ = shape
    x = random_normal(rng, (n, h, w, c))
    v = ops.convert_to_numpy(wops.input_transform(x, padding, relu))
    assert rel_error(v, to_position_layout(input_tiles(x, padding, relu))) < 1e-6


@pytest.mark.parametrize("shape,padding", CASES)
def test_output_transform(rng, shape, padding):
    n, h, w, _, k = shape
    g = winograd.tile_geometry(h, w, padding)
    m = random_normal(rng, (16, n * g.tiles_h * g.tiles_w, k))
    y = ops.convert_to_numpy(wops.output_transform(m, g))
    expected = output_from_products(
        from_position_layout(m.astype(np.float64), n, g.tiles_h, g.tiles_w), g.out_h, g.out_w
    )
    assert rel_error(y, expected) < 1e-6


@pytest.mark.parametrize("shape,padding", CASES)
@pytest.mark.parametrize("activation", ["relu", None])
def test_winograd_conv2d(rng, shape, padding, activation):
    n, h, w, c, k = shape
    x = random_normal(rng, (n, h, w, c))
    u = random_normal(rng, (4, 4, c, k))
    y = ops.convert_to_numpy(wops.winograd_conv2d(x, u, padding, activation))
    assert rel_error(y, conv(x, u, padding, relu=activation == "relu")) < 1e-5


@pytest.mark.parametrize("shape,padding", [(SHAPES[0], "same"), (SHAPES[1], "valid"),
                                           (SHAPES[4], "same"), (SHAPES[6], "same")])
@pytest.mark.parametrize("activation", ["relu", None])
def test_gradients(rng, shape, padding, activation):
    n, h, w, c, k = shape
    x = random_normal(rng, (n, h, w, c))
    u = random_normal(rng, (4, 4, c, k))
    y_shape = conv(x, u, padding).shape
    dy = random_normal(rng, y_shape)

    def loss(x, u):
        return ops.sum(wops.winograd_conv2d(x, u, padding, activation) * ops.convert_to_tensor(dy))

    dx, du = gradients(loss, x, u)
    dx_ref, du_ref = conv_grads(x, u, dy, padding, relu=activation == "relu")
    assert rel_error(dx, dx_ref) < 1e-5
    assert rel_error(du, du_ref) < 1e-5


def test_bad_arguments():
    x = np.ones((1, 4, 4, 1), np.float32)
    u = np.ones((4, 4, 1, 1), np.float32)
    with pytest.raises(ValueError, match="implementation must be one of"):
        wops.winograd_conv2d(x, u, implementation="cuda")
    with pytest.raises(ValueError, match="winograd_activation"):
        wops.winograd_conv2d(x, u, winograd_activation="gelu")
    with pytest.raises(ValueError, match="padding"):
        wops.winograd_conv2d(x, u, padding="full")


def test_every_implementation_module_honours_the_contract():
    """Each module ``implementation=`` can select provides ``wops.CONTRACT`` with the public
    signatures (less ``implementation``), so the dispatcher needs no special cases."""
    import importlib
    import inspect

    import keras

    names = ["reference", "portable", {"jax": "jax_native", "tensorflow": "tensorflow_native",
                                       "torch": "torch_native"}[keras.backend.backend()]]
    for name in names:
        module = importlib.import_module(f"keras_swcnn.ops.{name}")
        for function in wops.CONTRACT:
            assert callable(getattr(module, function, None)), (name, function)
            if function == "can_run":
                continue
            public = [p for p in inspect.signature(getattr(wops, function)).parameters
                      if p != "implementation"]
            assert list(inspect.signature(getattr(module, function)).parameters) == public, (
                name, function)
    x = np.zeros((1, 6, 6, 2), np.float32)
    for implementation in ("reference", "portable"):  # the primitives exist on every path
        v = wops.input_transform(x, implementation=implementation)
        assert tuple(v.shape) == (16, 9, 2)
