"""GPU checks (JAX on an NVIDIA GPU with the CUDA extension); skipped elsewhere.

The parity tests of test_native_ops.py run on the GPU too when JAX's default
backend is a GPU (benchmarks/gpu_check.sh runs them with float32-accurate
products); these add what only a GPU run can show: that the CUDA custom calls
are the ones executed, the fused tensor-core forward in each precision against
float64 numpy on awkward shapes, and parity at full ResNet-18 layer sizes.
"""

import re

import numpy as np
import pytest
import keras

from conftest import BACKEND, random_normal
from keras_swcnn import native
from keras_swcnn import ops as wops
from numpy_reference import conv, rel_error

if BACKEND == "jax":
    import jax
    import jax.numpy as jnp

    ON_GPU = jax.default_backend() in ("gpu", "cuda")
else:
    ON_GPU = False

pytestmark = pytest.mark.skipif(not ON_GPU, reason="needs JAX on an NVIDIA GPU")


def test_cuda_extension_is_loaded_and_used(rng):
    assert native.cuda_module() is not None, native.cuda_load_error()
    assert wops.implementation_name("auto") == "native"
    x = random_normal(rng, (2, 9, 7, 5))
    u = random_normal(rng, (4, 4, 5, 3))
    fn = jax.jit(lambda x, u: wops.winograd_conv2d(x, u, implementation="native"))
    # float32 composes (transforms around a dot), half precision fuses (jax_native.cuda_forward).
    hlo = fn.lower(x, u).as_text()
    assert "swcnn_input_transform" in hlo and "swcnn_output_transform" in hlo
    half = jnp.asarray(x, jnp.bfloat16), jnp.asarray(u, jnp.bfloat16)
    assert "swcnn_conv_forward_cuda" in fn.lower(*half).as_text()
    grad = jax.jit(jax.grad(
        lambda x, u: wops.winograd_conv2d(x, u, implementation="native").sum(), (0, 1)))
    hlo = grad.lower(x, u).as_text()
    assert "swcnn_input_transform" in hlo and "swcnn_output_transform_backward" in hlo
    with jax.default_matmul_precision("highest"):
        y = fn(x, u)
    assert y.devices().pop().platform == "gpu"
    assert rel_error(np.asarray(y), conv(x, u)) < 1e-5


# Awkward shapes for the fused forward's blocks (32 tiles x 32 filters, 16
# channels per step): channels, filters and tile counts that are not
# multiples, odd image sizes, both paddings (ResNet-18 layer sizes: below).
FUSED_CASES = [
    (2, 9, 7, 5, 3, "same"),
    (3, 15, 13, 40, 24, "same"),
    (1, 8, 8, 16, 32, "valid"),
    (5, 7, 11, 33, 65, "valid"),
    (1, 3, 3, 1, 1, "same"),
    (4, 28, 28, 64, 96, "same"),
]

# (dtype, JAX matmul precision, largest relative error against float64 numpy).
# TF32 rounds each product's operands to 10 mantissa bits; bfloat16/float16
# round x, u and the transformed tiles to their type, and y on the way out.
PRECISIONS = [
    ("float32", None, 2e-3),  # None: JAX's default (conftest's "highest" is overridden)
    ("float32", "highest", 1e-5),
    ("bfloat16", None, 2e-2),
    ("float16", None, 3e-3),
]


@pytest.mark.parametrize("dtype,precision,tolerance", PRECISIONS)
@pytest.mark.parametrize("case", FUSED_CASES)
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("forward", ["fused", "composed"])
def test_forward_matches_float64(rng, monkeypatch, case, dtype, precision, tolerance, relu,
                                 forward):
    if not relu and (dtype, precision) != ("float32", None):
        pytest.skip("the identity activation is checked once per shape")
    if forward == "composed" and dtype != "float32":
        pytest.skip("the composed forward computes half precision in float32")
    monkeypatch.setenv("SWCNN_CUDA_FORWARD", forward)
    n, h, w, c, k, padding = case
    x = jnp.asarray(random_normal(rng, (n, h, w, c)), dtype)
    u = jnp.asarray(random_normal(rng, (4, 4, c, k)) / np.sqrt(16 * c), dtype)
    activation = "relu" if relu else None
    fn = jax.jit(lambda x, u: wops.winograd_conv2d(
        x, u, padding, activation, implementation="native"))
    with jax.default_matmul_precision(precision):
        if forward == "fused" and dtype == "float32":  # the precision the kernel is told
            products = re.findall(r"products\s*=\s*(\d)", fn.lower(x, u).as_text())
            assert products == ["1" if precision == "highest" else "0"]
        y = fn(x, u)
    assert y.dtype == x.dtype
    # The reference sees the same (rounded) inputs, in float64.
    expected = conv(np.asarray(x, np.float64), np.asarray(u, np.float64), padding, relu)
    assert rel_error(np.asarray(y, np.float64), expected) < tolerance


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("forward", ["fused", "composed"])
def test_forward_propagates_nan(rng, monkeypatch, dtype, forward):
    monkeypatch.setenv("SWCNN_CUDA_FORWARD", forward)
    x = random_normal(rng, (1, 6, 6, 3))
    x[0, 2, 3, 1] = np.nan
    u = random_normal(rng, (4, 4, 3, 2))
    y = np.asarray(wops.winograd_conv2d(jnp.asarray(x, dtype), jnp.asarray(u, dtype),
                                        implementation="native"), np.float32)
    assert np.isnan(y[0, 1:5, 2:6]).any() and np.isfinite(y[0, 5, 0]).all()


def test_fused_forward_refuses_mismatched_dtypes(rng):
    from keras_swcnn.ops import jax_native

    x = jnp.asarray(random_normal(rng, (1, 6, 6, 3)), jnp.bfloat16)
    u = jnp.asarray(random_normal(rng, (16, 3, 2)), jnp.float32)
    geometry = jax_native.nhwc_geometry(x.shape, "same")
    with pytest.raises(Exception, match="same dtype"):  # raised when the result is awaited
        jax_native._call("swcnn_conv_forward_cuda", (1, 6, 6, 2), x, u, dtype=x.dtype,
                         products=0, **jax_native._tile_attributes(geometry, True)
                         ).block_until_ready()


@pytest.mark.parametrize("shape", [(8, 56, 56, 64, 64), (4, 14, 14, 512, 512), (3, 15, 13, 40, 24)])
@pytest.mark.parametrize("precision,tolerance", [("highest", 1e-5), (None, 2e-3)])
def test_parity_at_layer_sizes(rng, shape, precision, tolerance):
    n, h, w, c, k = shape
    x = random_normal(rng, (n, h, w, c))
    u = random_normal(rng, (4, 4, c, k)) / np.sqrt(16 * c)
    dy = random_normal(rng, (n, h, w, k))

    def grads(implementation):
        return jax.grad(lambda x, u: (wops.winograd_conv2d(
            x, u, implementation=implementation) * dy).sum(), (0, 1))(x, u)

    with jax.default_matmul_precision(precision):
        y = np.asarray(wops.winograd_conv2d(x, u, implementation="native"))
        dx, du = grads("native")
    with jax.default_matmul_precision("highest"):
        rx, ru = grads("reference")
    assert rel_error(y, conv(x, u)) < tolerance
    assert rel_error(np.asarray(dx), np.asarray(rx)) < tolerance
    assert rel_error(np.asarray(du), np.asarray(ru)) < tolerance


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_gradients(rng, dtype):
    x = random_normal(rng, (2, 10, 9, 24))
    u = random_normal(rng, (4, 4, 24, 40)) / np.sqrt(16 * 24)
    dy = random_normal(rng, (2, 10, 9, 40))

    def loss(x, u):
        y = wops.winograd_conv2d(x.astype(dtype), u.astype(dtype), implementation="native")
        return (y.astype(jnp.float32) * dy).sum()

    dx, du = jax.grad(loss, (0, 1))(x, u)
    with jax.default_matmul_precision("highest"):
        rx, ru = jax.grad(lambda x, u: (wops.winograd_conv2d(
            x, u, implementation="reference") * dy).sum(), (0, 1))(x, u)
    assert dx.dtype == jnp.float32 and du.dtype == jnp.float32
    assert rel_error(np.asarray(dx), np.asarray(rx)) < 3e-2
    assert rel_error(np.asarray(du), np.asarray(ru)) < 3e-2


def test_training_steps_on_gpu(rng):
    from keras_swcnn.layers import WinogradReLUConv2D

    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((12, 12, 3)),
        WinogradReLUConv2D(8, implementation="native"),
        keras.layers.BatchNormalization(),
        WinogradReLUConv2D(8, implementation="native"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4),
    ])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = random_normal(rng, (64, 12, 12, 3)), random_normal(rng, (64, 4))
    losses = model.fit(x, y, batch_size=16, epochs=5, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
