"""Property-based test: the layer on any shape, padding, activation, data format and float dtype
agrees with the float64 numpy model on every available path, or refuses the shape clearly.

Hypothesis draws the cases (a fixed budget per backend keeps CI fast; a
failure prints the smallest case it found). Shapes: batch, height and width
0..9 plus a few larger sizes, 1..70 channels and filters.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras
from keras import ops

from keras_swcnn import ops as wops
from keras_swcnn.layers import WinogradReLUConv2D
from numpy_reference import conv, rel_error

IMPLEMENTATIONS = ["reference"] + (["native"] if wops.native_unavailable_reason() is None else [])
# Output error (relative, in norm) each dtype allows: float16 and bfloat16 carry 11 and 8 bits.
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 6e-2}
SIZES = st.one_of(st.integers(0, 9), st.sampled_from([16, 31]))


def _as_float64(values, dtype):
    """The values a tensor of ``dtype`` holds, as float64 numpy."""
    return ops.convert_to_numpy(ops.cast(ops.convert_to_tensor(values, dtype), "float32")).astype(
        np.float64)


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    n=st.integers(0, 3), h=SIZES, w=SIZES, c=st.integers(1, 70), k=st.integers(1, 70),
    padding=st.sampled_from(["same", "valid"]), activation=st.sampled_from(["relu", None]),
    data_format=st.sampled_from(["channels_last", "channels_first"]),
    dtype=st.sampled_from(["float32", "float16", "bfloat16"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_path_matches_float64_or_refuses(n, h, w, c, k, padding, activation, data_format,
                                                dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype("float32")
    u = (rng.standard_normal((4, 4, c, k)) / np.sqrt(c)).astype("float32")
    channels_first = data_format == "channels_first"
    inputs = np.transpose(x, (0, 3, 1, 2)) if channels_first else x
    smallest = 1 if padding == "same" else 3
    for implementation in IMPLEMENTATIONS:
        layer = WinogradReLUConv2D(k, padding=padding, winograd_activation=activation,
                                   data_format=data_format, use_bias=False,
                                   implementation=implementation, dtype=dtype)
        if min(h, w) < smallest:  # too small for a 3x3 window: a clear error, on every path
            with pytest.raises(ValueError, match="(?i)too small|at least|height|width"):
                layer(ops.convert_to_tensor(inputs, dtype))
            continue
        layer.build(inputs.shape)
        layer.kernel.assign(ops.cast(u, layer.kernel.dtype))
        y = ops.convert_to_numpy(ops.cast(layer(ops.convert_to_tensor(inputs, dtype)), "float32"))
        if channels_first:
            y = np.transpose(y, (0, 2, 3, 1))
        # The model computes on the values the low-precision tensors actually hold.
        expected = conv(_as_float64(x, dtype), _as_float64(u, dtype), padding,
                        relu=activation == "relu")
        assert y.shape == expected.shape
        if n:
            error = rel_error(y, expected)
            assert error < TOLERANCE[dtype], (implementation, dtype, error)
