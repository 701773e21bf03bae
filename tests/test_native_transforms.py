"""The compiled CPU transforms (numpy front door) against the float64 numpy model."""

import numpy as np
import pytest

from conftest import SHAPES, VALID_SHAPES, random_normal
from keras_swcnn import native, winograd
from numpy_reference import (
    from_position_layout,
    input_tiles,
    output_from_products,
    rel_error,
    to_position_layout,
)

pytestmark = pytest.mark.skipif(not native.available(), reason="native module not built")

CASES = [(s, "same") for s in SHAPES] + [(s, "valid") for s in VALID_SHAPES]


@pytest.mark.parametrize("shape,padding", CASES)
@pytest.mark.parametrize("relu", [True, False])
def test_input_transform(rng, shape, padding, relu):
    n, h, w, c, _ = shape
    x = random_normal(rng, (n, h, w, c))
    g = winograd.tile_geometry(h, w, padding)
    out = np.full((16, n * g.tiles_h * g.tiles_w, c), np.nan, np.float32)  # poisoned
    result = native.input_transform(x, padding, relu, out=out)
    assert result is out or np.shares_memory(result, out)
    expected = to_position_layout(input_tiles(x, padding, relu))
    assert rel_error(out, expected) < 1e-6


@pytest.mark.parametrize("shape,padding", CASES)
def test_output_transform(rng, shape, padding):
    n, h, w, _, k = shape
    g = winograd.tile_geometry(h, w, padding)
    m = random_normal(rng, (16, n * g.tiles_h * g.tiles_w, k))
    out = np.full((n, g.out_h, g.out_w, k), np.nan, np.float32)
    native.output_transform(m, n, g, out=out)
    products = from_position_layout(m.astype(np.float64), n, g.tiles_h, g.tiles_w)
    expected = output_from_products(products, g.out_h, g.out_w)
    assert rel_error(out, expected) < 1e-6


def test_allocates_output_when_none_given(rng):
    x = random_normal(rng, (2, 5, 5, 3))
    v = native.input_transform(x, "same", True)
    assert v.shape == (16, 2 * 3 * 3, 3) and v.dtype == np.float32


def test_empty_batch(rng):
    v = native.input_transform(np.zeros((0, 5, 5, 3), np.float32))
    assert v.shape == (16, 0, 3)


def test_bad_inputs_raise_clear_errors(rng):
    x = random_normal(rng, (1, 5, 5, 2))
    with pytest.raises(ValueError, match="float32"):
        native.input_transform(x.astype(np.float64))
    with pytest.raises(ValueError, match="4D"):
        native.input_transform(x[0])
    with pytest.raises(ValueError, match="wrong shape"):
        native.input_transform(x, out=np.zeros((16, 1, 2), np.float32))
    with pytest.raises(ValueError, match="at least 3x3"):
        native.input_transform(x[:, :2], "valid")
    g = winograd.tile_geometry(5, 5, "same")
    with pytest.raises(ValueError, match="16, batch"):
        native.output_transform(random_normal(rng, (16, 5, 2)), 1, g)
    # The C++ validation itself (bypassing the Python wrapper) refuses bad geometry.
    from keras_swcnn import _native

    with pytest.raises(ValueError, match="pad_top"):
        _native.input_transform(x, 3, 1, 3, 3, True)
    with pytest.raises(ValueError, match="too many tiles"):
        _native.input_transform(x, 1, 1, 9, 3, True)
    with pytest.raises(ValueError, match="out_h/out_w"):
        _native.output_transform(random_normal(rng, (16, 9, 2)), 1, 3, 3, 9, 5)


def test_non_contiguous_input_is_copied_not_misread(rng):
    x = random_normal(rng, (2, 5, 6, 3))
    strided = np.asfortranarray(x)
    np.testing.assert_array_equal(native.input_transform(strided), native.input_transform(x))
