"""GPU checks (JAX on an NVIDIA GPU with the CUDA extension); skipped elsewhere.

The parity tests of test_native_ops.py run on the GPU too when JAX's default
backend is a GPU; these add what only a GPU run can show: that the CUDA
custom calls are the ones executed, and parity at full ResNet-18 layer sizes.
"""

import numpy as np
import pytest
import keras

from conftest import BACKEND, random_normal
from keras_swcnn import native
from keras_swcnn import ops as wops
from numpy_reference import conv, rel_error

if BACKEND == "jax":
    import jax

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
    hlo = fn.lower(x, u).as_text()
    assert "swcnn_input_transform" in hlo and "swcnn_output_transform" in hlo
    y = fn(x, u)
    assert y.devices().pop().platform == "gpu"
    assert rel_error(np.asarray(y), conv(x, u)) < 1e-5


@pytest.mark.parametrize("shape", [(8, 56, 56, 64, 64), (4, 14, 14, 512, 512), (3, 15, 13, 40, 24)])
def test_parity_at_layer_sizes(rng, shape):
    n, h, w, c, k = shape
    x = random_normal(rng, (n, h, w, c))
    u = random_normal(rng, (4, 4, c, k)) / np.sqrt(16 * c)
    y = np.asarray(wops.winograd_conv2d(x, u, implementation="native"))
    assert rel_error(y, conv(x, u)) < 1e-5
    dy = random_normal(rng, y.shape)
    dx, du = jax.grad(
        lambda x, u: (wops.winograd_conv2d(x, u, implementation="native") * dy).sum(), (0, 1)
    )(x, u)
    rx, ru = jax.grad(
        lambda x, u: (wops.winograd_conv2d(x, u, implementation="reference") * dy).sum(), (0, 1)
    )(x, u)
    assert rel_error(np.asarray(dx), np.asarray(rx)) < 1e-5
    assert rel_error(np.asarray(du), np.asarray(ru)) < 1e-5


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
