"""The native kernels as torch custom operators: registration, torch.compile, torch.export.

Numerical parity with the float64 model (forward and gradients, odd shapes) is in
test_native_ops.py and test_sparse.py, which run on every backend with a native path.
"""

import numpy as np
import pytest
import keras
from keras import ops

from conftest import BACKEND, random_normal
from keras_swcnn import export
from keras_swcnn import ops as wops
from keras_swcnn.layers import WinogradReLUConv2D
from numpy_reference import conv, conv_grads, rel_error

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="torch backend")


@pytest.fixture
def torch_native():
    if wops.native_unavailable_reason():
        pytest.skip(wops.native_unavailable_reason())
    from keras_swcnn.ops import torch_native

    return torch_native


def test_operators_pass_torch_opcheck(rng, torch_native):
    import torch
    from torch.library import opcheck

    from keras_swcnn import sparse_format

    x = torch.tensor(random_normal(rng, (2, 5, 7, 3)))
    u = torch.tensor(random_normal(rng, (16, 3, 4)))
    dy = torch.tensor(random_normal(rng, (2, 5, 7, 4)))
    kernel = np.where(rng.random((4, 4, 3, 4)) < 0.3, random_normal(rng, (4, 4, 3, 4)), 0)
    mask, values = sparse_format.compress(kernel)
    ops_ = torch.ops.keras_swcnn
    cases = [
        (ops_.conv_forward.default, (x, u, 1, 1, 3, 4, 5, 7, True)),
        (ops_.conv_backward.default, (x, u, dy, 1, 1, 3, 4, False)),
        (ops_.sparse_conv_forward.default, (x, torch.tensor(mask), torch.tensor(values), 1, 1, 3, 4, 5,
                                            7, True, 0)),
        (ops_.input_transform.default, (x, 1, 1, 3, 4, True)),
        (ops_.output_transform.default, (torch.tensor(random_normal(rng, (16, 24, 4))), 2, 3, 4, 5, 7)),
    ]
    for op, args in cases:
        results = opcheck(op, args)
        assert set(results.values()) == {"SUCCESS"}, (op, results)


def test_auto_picks_the_operators_on_cpu_tensors(rng, torch_native):
    assert wops.implementation_name("auto") == "native"
    import torch

    x = torch.tensor(random_normal(rng, (1, 4, 4, 2)))
    assert torch_native.can_run(x) and not torch_native.can_run(x.numpy())


def test_torch_compile_of_a_model_with_the_layer(rng, torch_native):
    import torch

    keras.utils.set_random_seed(int(rng.integers(2**31)))
    model = keras.Sequential([keras.Input((9, 6, 3)), WinogradReLUConv2D(5),
                              keras.layers.BatchNormalization(), WinogradReLUConv2D(4, padding="valid")])
    x = random_normal(rng, (3, 9, 6, 3))
    expected = ops.convert_to_numpy(model(x, training=False))
    compiled = torch.compile(lambda images: model(images, training=False), fullgraph=True)
    assert rel_error(ops.convert_to_numpy(compiled(torch.tensor(x))), expected) < 1e-5
    # Training through the compiled function: the gradient comes from the backward operator.
    layer = model.layers[0]
    images = torch.tensor(x, requires_grad=True)
    compiled(images).sum().backward()
    assert images.grad is not None and float(images.grad.abs().sum()) > 0
    assert layer.kernel.value.grad is not None


def test_fit_with_jit_compile(rng, torch_native):
    keras.utils.set_random_seed(int(rng.integers(2**31)))
    model = keras.Sequential([keras.Input((8, 8, 2)), WinogradReLUConv2D(4),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(1e-2), "mse", jit_compile=True)
    x, y = random_normal(rng, (32, 8, 8, 2)), random_normal(rng, (32, 2))
    losses = model.fit(x, y, batch_size=8, epochs=4, verbose=0).history["loss"]
    assert losses[-1] < losses[0]


def test_torch_export_is_portable_unless_native_is_asked_for(rng, torch_native):
    import torch

    layer = WinogradReLUConv2D(4)
    x = torch.tensor(random_normal(rng, (2, 6, 5, 3)))
    layer(x)
    u = ops.convert_to_numpy(layer.kernel)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, images):
            return self.layer(images)

    portable = torch.export.export(Wrapped(), (x,))
    assert "keras_swcnn" not in str(portable.graph)
    assert rel_error(portable.module()(x).detach().numpy(), conv(x.numpy(), u)) < 1e-5
    with export.implementation("native"):
        native = torch.export.export(Wrapped(), (x,))
    assert "keras_swcnn.conv_forward" in str(native.graph)
    assert rel_error(native.module()(x).detach().numpy(), conv(x.numpy(), u)) < 1e-5


def test_native_refuses_tensors_off_the_cpu(torch_native):
    import torch

    x = torch.empty((1, 4, 4, 2), device="meta")  # any non-CPU device takes this path
    assert not torch_native.can_run(x)
    with pytest.raises(ValueError, match="run on CPU tensors; got one on meta"):
        wops.winograd_conv2d(x, np.ones((4, 4, 2, 3), "float32"), implementation="native")


def test_kernels_run_on_torchs_openmp_threads_with_the_pools_bits(rng, torch_native):
    import torch

    from keras_swcnn import native, sparse_format

    kernels = native._require()
    assert kernels.openmp_max_threads() == torch.get_num_threads()  # torch's runtime, in use
    x = torch.tensor(random_normal(rng, (16, 14, 13, 37)), requires_grad=True)
    u = torch.tensor(random_normal(rng, (4, 4, 37, 21)), requires_grad=True)
    dy = torch.tensor(random_normal(rng, (16, 14, 13, 21)))
    pruned = np.where(rng.random((4, 4, 37, 21)) < 0.2, u.detach().numpy(), 0.0)
    mask, values = sparse_format.compress(pruned)

    def run():
        y = torch_native.winograd_conv2d(x, u)
        dx, du = torch.autograd.grad(y, (x, u), dy)
        sparse = torch_native.sparse_winograd_conv2d(
            x.detach(), torch.tensor(mask), torch.tensor(values), mode="sparse")
        return [t.detach().numpy().copy() for t in (y, dx, du, sparse)]

    threads = torch.get_num_threads()
    before = kernels.lent_parallel_calls()
    try:
        torch.set_num_threads(3)  # a team size the pool never has here
        on_openmp = run()
    finally:
        torch.set_num_threads(threads)
    assert kernels.lent_parallel_calls() >= before + 3  # forward, backward, sparse on the team
    kernels.use_openmp_threads(False)
    try:
        on_pool = run()
    finally:
        kernels.use_openmp_threads(True)
    for a, b in zip(on_openmp, on_pool):  # blocks come from the shape, not the threads
        np.testing.assert_array_equal(a, b)
    x64, u64 = x.detach().numpy(), u.detach().numpy()
    dx, du = conv_grads(x64, u64, dy.numpy())
    assert rel_error(on_openmp[0], conv(x64, u64)) < 1e-5
    assert rel_error(on_openmp[1], dx) < 1e-5
    assert rel_error(on_openmp[2], du) < 1e-5
    assert rel_error(on_openmp[3], conv(x64, pruned)) < 1e-5
