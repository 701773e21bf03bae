"""The compiled CPU transforms (numpy front door) against the float64 numpy model."""

import numpy as np
import pytest

from conftest import CASES, random_normal
from keras_swcnn import native, winograd
from numpy_reference import (
    input_transform_adjoint,
    output_transform_adjoint,
    from_position_layout,
    input_tiles,
    output_from_products,
    rel_error,
    to_position_layout,
)

pytestmark = [
    pytest.mark.skipif(not native.available(), reason="native module not built"),
    pytest.mark.backend_independent,  # the numpy front door only
]


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


@pytest.mark.parametrize("shape,padding", CASES)
@pytest.mark.parametrize("relu", [True, False])
def test_input_transform_backward(rng, shape, padding, relu):
    n, h, w, c, _ = shape
    x = random_normal(rng, (n, h, w, c))
    g = winograd.tile_geometry(h, w, padding)
    v_pre = input_tiles(x, padding, relu=False)
    v = to_position_layout(np.maximum(v_pre, 0) if relu else v_pre).astype(np.float32)
    dv = random_normal(rng, v.shape)
    out = np.full(x.shape, np.nan, np.float32)
    native.input_transform_backward(dv, v, x.shape, padding, relu, out=out)
    dv_tiles = from_position_layout(dv.astype(np.float64), n, g.tiles_h, g.tiles_w)
    expected = input_transform_adjoint(dv_tiles, v_pre, x.shape, padding, relu)
    assert rel_error(out, expected) < 1e-6


@pytest.mark.parametrize("shape,padding", CASES)
def test_output_transform_backward(rng, shape, padding):
    n, h, w, _, k = shape
    g = winograd.tile_geometry(h, w, padding)
    dy = random_normal(rng, (n, g.out_h, g.out_w, k))
    out = np.full((16, n * g.tiles_h * g.tiles_w, k), np.nan, np.float32)
    native.output_transform_backward(dy, g, out=out)
    expected = to_position_layout(output_transform_adjoint(dy.astype(np.float64), g.tiles_h, g.tiles_w))
    assert rel_error(out, expected) < 1e-6


def test_backward_bad_inputs(rng):
    from keras_swcnn import _native

    dv = random_normal(rng, (16, 9, 2))
    with pytest.raises(ValueError, match="needs the forward tiles"):
        _native.input_transform_backward(dv, None, 1, 5, 5, 1, 1, 3, 3, True)
    with pytest.raises(ValueError, match="shape of dv"):
        _native.input_transform_backward(dv, dv[:, :, :1].copy(), 1, 5, 5, 1, 1, 3, 3, True)
    with pytest.raises(ValueError, match="dv must have shape"):
        _native.input_transform_backward(dv, None, 2, 5, 5, 1, 1, 3, 3, False)
    with pytest.raises(ValueError, match="out_h/out_w"):
        _native.output_transform_backward(random_normal(rng, (1, 7, 5, 2)), 3, 3)


def test_results_do_not_depend_on_thread_count():
    # Thread count is read once per process, so compare in a subprocess.
    import subprocess
    import sys

    code = (
        "import numpy as np, sys\n"
        "from keras_swcnn import native, winograd\n"
        "rng = np.random.default_rng(7)\n"
        "x = rng.standard_normal((3, 33, 17, 40)).astype('float32')\n"
        "v = native.input_transform(x)\n"
        "dx = native.input_transform_backward(v, v, x.shape)\n"
        "g = winograd.tile_geometry(33, 17, 'same')\n"
        "y = native.output_transform(v, 3, g)\n"
        "dm = native.output_transform_backward(y, g)\n"
        "sys.stdout.write(str(float(np.sum(dx ** 2) + np.sum(dm ** 2))))\n"
    )
    run = lambda env: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    import os

    results = {n: run(dict(os.environ, SWCNN_NUM_THREADS=n)) for n in ("1", "2", "3")}
    assert len(set(results.values())) == 1, results


def test_out_is_written_in_place_or_refused(rng):
    x = random_normal(rng, (1, 5, 5, 2))
    g = winograd.tile_geometry(5, 5, "same")
    shape = (16, 9, 2)
    refused = {
        "float64": np.zeros(shape),
        "Fortran order": np.zeros(shape, np.float32, order="F"),
        "strided": np.zeros((16, 9, 4), np.float32)[:, :, ::2],
        "read-only": np.zeros(shape, np.float32),
    }
    refused["read-only"].flags.writeable = False
    for name, out in refused.items():
        with pytest.raises(ValueError, match="writable C-contiguous float32"):
            native.input_transform(x, out=out)
        assert not np.any(out), name  # never half-written either
        with pytest.raises(TypeError):  # the extension itself converts nothing
            native._require().input_transform(x, 1, 1, 3, 3, True, out)
    # An `out` that shares memory with an input would be read while written.
    buffer = np.zeros(16 * 9 * 2 + 50, np.float32)
    m = buffer[: 16 * 9 * 2].reshape(16, 9, 2)
    m[:] = random_normal(rng, m.shape)
    with pytest.raises(ValueError, match="overlaps an input"):
        native.output_transform(m, 1, g, out=buffer[10:60].reshape(1, 5, 5, 2))
    shared = np.zeros(16 * 9 * 2, np.float32)
    image = shared[:50].reshape(1, 5, 5, 2)
    image[:] = x
    with pytest.raises(ValueError, match="overlaps an input"):
        native.input_transform(image, out=shared.reshape(shape))


def test_huge_sizes_are_refused_before_any_arithmetic_overflows():
    # Under UBSan (tools/sanitizer_check.sh) these used to report signed overflow in validate.
    module = native._require()
    x = np.zeros((1, 5, 5, 2), np.float32)
    for tiles in ((2**62, 1), (1, 2**62), (2**63 - 1, 1)):
        with pytest.raises(ValueError, match="too large"):
            module.input_transform(x, 1, 1, *tiles, True)
    with pytest.raises(ValueError, match="too large"):
        module.output_transform(np.zeros((16, 1, 2), np.float32), 1, 2**62, 1, 2**62, 1)
