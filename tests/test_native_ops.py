"""The native path (XLA custom calls) against the reference path and the float64 numpy model.

Runs on every backend: where the backend has no native path, it checks that
"auto" falls back to the reference and "native" raises a clear error.
XLA allocates the custom calls' outputs, so they cannot be poisoned here;
the same kernels are checked with NaN-poisoned outputs through the numpy
front door (test_native_transforms.py), and every result here is checked
finite and equal to the float64 model.
"""

import os

import numpy as np
import pytest
import keras
from keras import ops

from conftest import BACKEND, SHAPES, VALID_SHAPES, gradients, random_normal
from keras_swcnn import ops as wops
from keras_swcnn import build_info, winograd
from keras_swcnn.layers import WinogradReLUConv2D
from numpy_reference import clear_of_relu_kinks, conv, conv_grads, rel_error

REASON = wops.native_unavailable_reason()
needs_native = pytest.mark.skipif(REASON is not None, reason=f"no native path: {REASON}")

# Many channels (500+) on top of the shared awkward shapes.
CASES = [(s, "same") for s in SHAPES + [(1, 5, 6, 520, 17), (2, 3, 4, 7, 513)]] + [
    (s, "valid") for s in VALID_SHAPES
]


def test_auto_and_build_info_agree():
    expected = "native" if REASON is None else "reference"
    assert wops.implementation_name("auto") == expected
    assert build_info()["implementation"] == expected


@pytest.mark.skipif(REASON is None, reason="native path available")
def test_native_raises_where_unavailable():
    x = np.ones((1, 4, 4, 1), np.float32)
    u = np.ones((4, 4, 1, 1), np.float32)
    with pytest.raises(RuntimeError, match="native Winograd implementation is not available"):
        wops.winograd_conv2d(x, u, implementation="native")
    with pytest.raises(RuntimeError, match="not available"):
        WinogradReLUConv2D(2, implementation="native")(x)


@needs_native
@pytest.mark.parametrize("shape,padding", CASES)
@pytest.mark.parametrize("activation", ["relu", None])
def test_forward_and_gradients(rng, shape, padding, activation):
    n, h, w, c, k = shape
    x = clear_of_relu_kinks(random_normal(rng, (n, h, w, c)), padding)
    u = random_normal(rng, (4, 4, c, k)) / np.sqrt(c)
    relu = activation == "relu"
    y_native = ops.convert_to_numpy(wops.winograd_conv2d(x, u, padding, activation, "native"))
    y_reference = ops.convert_to_numpy(wops.winograd_conv2d(x, u, padding, activation, "reference"))
    expected = conv(x, u, padding, relu)
    assert rel_error(y_native, expected) < 1e-5
    assert rel_error(y_native, y_reference) < 1e-5

    dy = random_normal(rng, expected.shape)

    def loss(x, u):
        return ops.sum(ops.multiply(wops.winograd_conv2d(x, u, padding, activation, "native"), dy))

    dx, du = gradients(loss, x, u)
    dx_ref, du_ref = conv_grads(x, u, dy, padding, relu)
    assert rel_error(dx, dx_ref) < 1e-5
    assert rel_error(du, du_ref) < 1e-5


@needs_native
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_inputs_keep_their_dtype_and_float32_accumulation(rng, dtype):
    x = random_normal(rng, (2, 5, 6, 3))
    u = random_normal(rng, (4, 4, 3, 4))
    y = wops.winograd_conv2d(ops.cast(x, dtype), ops.cast(u, dtype), implementation="native")
    assert keras.backend.standardize_dtype(y.dtype) == dtype
    x_rounded = ops.convert_to_numpy(ops.cast(ops.cast(x, dtype), "float32"))
    u_rounded = ops.convert_to_numpy(ops.cast(ops.cast(u, dtype), "float32"))
    # CPU: float32 compute, rounded to dtype once; CUDA: the transformed tiles rounded too.
    tolerance = 2e-2 if dtype == "bfloat16" else 3e-3
    assert rel_error(ops.convert_to_numpy(ops.cast(y, "float32")), conv(x_rounded, u_rounded)) < tolerance


@needs_native
def test_integer_inputs_are_refused():
    with pytest.raises(ValueError, match="floating-point"):
        wops.winograd_conv2d(np.ones((1, 4, 4, 1), np.int32), np.ones((4, 4, 1, 1), np.float32),
                             implementation="native")


@needs_native
def test_kernel_that_does_not_fit_is_refused(rng):
    with pytest.raises(ValueError, match="does not fit input channels"):
        wops.winograd_conv2d(random_normal(rng, (1, 4, 4, 3)), random_normal(rng, (4, 4, 2, 1)),
                             implementation="native")


def training_run(implementation, jit_compile, seed, data):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = WinogradReLUConv2D(6, implementation=implementation)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = WinogradReLUConv2D(5, padding="valid", use_bias=True, implementation=implementation)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=jit_compile)
    history = model.fit(*data, batch_size=8, epochs=4, shuffle=False, verbose=0)
    return history.history["loss"], [ops.convert_to_numpy(w) for w in model.weights]


@needs_native
@pytest.mark.parametrize("jit_compile", [True, False])
def test_training_matches_reference(rng, jit_compile):
    data = (random_normal(rng, (16, 7, 6, 3)), random_normal(rng, (16, 2)))
    seed = int(rng.integers(2**31))
    native_loss, native_weights = training_run("native", jit_compile, seed, data)
    reference_loss, reference_weights = training_run("reference", jit_compile, seed, data)
    np.testing.assert_allclose(native_loss, reference_loss, rtol=1e-4)
    for a, b in zip(native_weights, reference_weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    assert native_loss[-1] < native_loss[0]


@pytest.mark.skipif(BACKEND != "jax" or REASON is not None, reason="JAX native path")
class TestJax:
    def test_jit_grad_vmap(self, rng):
        import jax

        x = random_normal(rng, (3, 2, 5, 7, 4))  # a leading vmapped axis
        u = random_normal(rng, (4, 4, 4, 3))
        f = jax.jit(jax.vmap(lambda a: wops.winograd_conv2d(a, u, implementation="native")))
        y = np.asarray(f(x))
        for i in range(3):
            assert rel_error(y[i], conv(x[i], u)) < 1e-5
        g = jax.jit(jax.grad(lambda a: wops.winograd_conv2d(a, u, implementation="native").sum()))
        dx_ref, _ = conv_grads(x[0], u, np.ones((2, 5, 7, 3)))
        assert rel_error(np.asarray(g(x[0])), dx_ref) < 1e-5

    def test_custom_call_refuses_inconsistent_shapes(self, rng):
        from keras_swcnn.ops import jax_native

        x = random_normal(rng, (1, 5, 5, 2))
        with pytest.raises(Exception, match="keras_swcnn: tiles must have shape"):
            np.asarray(jax_native._call("swcnn_input_transform", (16, 8, 2), x, pad_top=1,
                                        pad_left=1, tiles_h=3, tiles_w=3, relu=True))
        with pytest.raises(Exception, match="keras_swcnn: too many tiles"):
            np.asarray(jax_native._call("swcnn_input_transform", (16, 30, 2), x, pad_top=1,
                                        pad_left=1, tiles_h=10, tiles_w=3, relu=True))
        with pytest.raises(Exception, match="keras_swcnn: out_h/out_w"):
            np.asarray(jax_native._call("swcnn_output_transform", (1, 9, 5, 2),
                                        random_normal(rng, (16, 9, 2)), tiles_h=3, tiles_w=3))

    # The handlers lend the kernels XLA's intra-op threads (ffi::ThreadPool); the kernels' blocks
    # and bands come from the shape alone, so the bits are those of the numpy front door on
    # swcnn's own pool. Fixed-width (16, 32 channels) and generic widths, many blocks per call.
    @pytest.mark.parametrize("shape", [(64, 14, 14, 16, 32), (6, 11, 9, 37, 21),
                                       (2, 14, 14, 130, 67)])
    def test_calls_run_on_xla_threads_with_the_numpy_front_doors_bits(self, rng, shape):
        import jax

        if jax.default_backend() != "cpu":
            pytest.skip("the CPU kernels' threads (the JAX backend here is a GPU)")
        import jax.numpy as jnp
        from keras_swcnn import native
        from keras_swcnn.ops import jax_native

        module = native._require()
        n, h, w, c, k = shape
        x = random_normal(rng, (n, h, w, c))
        u = random_normal(rng, (4, 4, c, k)) / np.sqrt(c)
        dy = random_normal(rng, (n, h, w, k))
        g = winograd.tile_geometry(h, w, "same")
        before = module.lent_parallel_calls()
        y = np.asarray(jax.jit(jax_native.winograd_conv2d)(x, u))
        _, pullback = jax.vjp(jax_native.winograd_conv2d, jnp.asarray(x), jnp.asarray(u))
        dx, du = (np.asarray(a) for a in jax.jit(pullback)(jnp.asarray(dy)))
        assert module.lent_parallel_calls() > before  # XLA's threads were lent
        flat = u.reshape(16, c, k)
        assert np.array_equal(y, module.conv_forward(x, flat, g.pad_top, g.pad_left, g.tiles_h,
                                                     g.tiles_w, g.out_h, g.out_w, True))
        dx_door, du_door = module.conv_backward(x, flat, dy, g.pad_top, g.pad_left, g.tiles_h,
                                                g.tiles_w, True)
        assert np.array_equal(dx, dx_door)
        assert np.array_equal(du.reshape(16, c, k), du_door)

    def test_non_float32_buffer_is_refused_by_the_handler(self, rng):
        from keras_swcnn.ops import jax_native

        with pytest.raises(Exception):
            np.asarray(jax_native._call("swcnn_output_transform", (1, 6, 6, 2),
                                        np.ones((16, 9, 2), np.int32), tiles_h=3, tiles_w=3))


@pytest.mark.skipif(BACKEND != "tensorflow" or REASON is not None, reason="TensorFlow native path")
class TestTensorFlow:
    @staticmethod
    def kernel_calls(fn, spec):
        """The native kernel calls in ``fn``'s graph for ``spec``, nested functions included:
        TensorFlow op types, and XLA custom-call targets."""
        graph = fn.get_concrete_function(spec).graph.as_graph_def()
        nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
        return sorted({n.attr["call_target_name"].s.decode() if n.op == "XlaCustomCallV2"
                       else n.op for n in nodes
                       if n.op.startswith("Swcnn") or n.op == "XlaCustomCallV2"})

    @pytest.mark.parametrize("jit_compile", [False, True])
    def test_unknown_batch_runs_as_op_or_in_xla_chunks(self, rng, jit_compile):
        import tensorflow as tf

        u = tf.constant(random_normal(rng, (4, 4, 3, 5)))
        spec = tf.TensorSpec((None, 7, 6, 3))

        @tf.function(input_signature=[spec], jit_compile=jit_compile)
        def fn(x):
            with tf.GradientTape() as tape:
                tape.watch([x, u])
                y = wops.winograd_conv2d(x, u, implementation="native")
                loss = tf.reduce_sum(y * y)
            return (y, *tape.gradient(loss, [x, u]))

        # Outside XLA one TensorFlow op per pass takes any batch; inside XLA the custom
        # calls run on 32-image chunks (7x6 images have 12 tiles), then image by image.
        expected_calls = (["swcnn_tf_conv_backward", "swcnn_tf_conv_forward"] if jit_compile
                          else ["SwcnnConvBackward", "SwcnnConvForward"])
        assert self.kernel_calls(fn, spec) == expected_calls
        for n in (1, 3, 32, 69):
            x = random_normal(rng, (n, 7, 6, 3))
            y, dx, du = fn(x)
            expected = conv(x, u.numpy())
            assert rel_error(y.numpy(), expected) < 1e-5
            dx_ref, du_ref = conv_grads(x, u.numpy(), 2 * expected)
            assert rel_error(dx.numpy(), dx_ref) < 1e-5
            assert rel_error(du.numpy(), du_ref) < 1e-5  # summed over the images

    def test_ops_refuse_what_their_kernels_cannot_take_with_tensorflow_errors(self, rng):
        # Called directly, past the Python checks: the op re-validates at run time.
        import tensorflow as tf

        from keras_swcnn.ops import tensorflow_native as tfn

        x = tf.constant(random_normal(rng, (2, 6, 5, 3)))
        u = tf.constant(random_normal(rng, (16, 3, 4)))
        attrs = tfn._op_attrs(winograd.tile_geometry(6, 5, "same"), True)
        y = tfn._run_op("SwcnnConvForward", {"x": x, "u": u}, attrs, 1)[0]
        assert rel_error(y.numpy(), conv(x.numpy(), u.numpy().reshape(4, 4, 3, 4))) < 1e-5
        refused = [
            ("SwcnnConvForward", {"x": x, "u": u[:, :2]}, attrs, "u must have shape"),
            ("SwcnnConvForward", {"x": x, "u": u}, {**attrs, "tiles_h": 9}, "tiles"),
            ("SwcnnConvBackward", {"x": x, "u": u, "dy": y[:, :5]}, attrs, "dy must have shape"),
            ("SwcnnConvForward", {"x": x[0], "u": u}, attrs, "x must be a 4-D"),
        ]
        for name, inputs, op_attrs, message in refused:
            with pytest.raises(tf.errors.InvalidArgumentError, match=message):
                tfn._run_op(name, inputs, op_attrs, 2 if "Backward" in name else 1)

    def test_without_the_ops_graphs_use_the_custom_calls(self, rng, monkeypatch):
        import tensorflow as tf

        from keras_swcnn.ops import tensorflow_native

        monkeypatch.setitem(tensorflow_native._state, "graph_ops_error", "not registered")
        u = random_normal(rng, (4, 4, 3, 2))
        spec = tf.TensorSpec((None, 5, 6, 3))
        fn = tf.function(lambda x: wops.winograd_conv2d(x, u, implementation="native"),
                         input_signature=[spec])
        assert self.kernel_calls(fn, spec) == ["swcnn_tf_conv_forward"]
        x = random_normal(rng, (3, 5, 6, 3))
        assert rel_error(fn(x).numpy(), conv(x, u)) < 1e-5

    def test_unknown_spatial_dims(self, rng):
        import tensorflow as tf

        u = random_normal(rng, (4, 4, 3, 5))
        spec = [tf.TensorSpec((2, None, None, 3))]
        auto = tf.function(lambda x: wops.winograd_conv2d(x, u), input_signature=spec)
        x = random_normal(rng, (2, 5, 4, 3))
        assert rel_error(auto(x).numpy(), conv(x, u)) < 1e-5  # falls back to the reference
        native_fn = tf.function(lambda x: wops.winograd_conv2d(x, u, implementation="native"),
                                input_signature=spec)
        with pytest.raises(ValueError, match="needs the height, width and channels known"):
            native_fn(x)

    def test_inside_an_xla_function(self, rng):
        import tensorflow as tf

        u = random_normal(rng, (4, 4, 2, 3))
        fn = tf.function(lambda x: wops.winograd_conv2d(x, u, "valid", None, "native"),
                         jit_compile=True)
        x = random_normal(rng, (2, 6, 5, 2))
        assert rel_error(fn(x).numpy(), conv(x, u, "valid", relu=False)) < 1e-5


@pytest.mark.parametrize("backend,blocked", [("jax", "tensorflow"), ("tensorflow", "jax")])
def test_works_without_the_other_framework(backend, blocked):
    """The native path of one backend must not need the other framework installed."""
    import subprocess
    import sys

    code = (
        "import sys, os\n"
        f"sys.modules[{blocked!r}] = None  # as if not installed\n"
        f"os.environ['KERAS_BACKEND'] = {backend!r}\n"
        "import numpy as np, keras_swcnn\n"
        "from keras_swcnn import ops\n"
        "x = np.random.rand(2, 5, 5, 3).astype('float32')\n"
        "u = np.random.rand(4, 4, 3, 2).astype('float32')\n"
        "y = ops.winograd_conv2d(x, u, implementation='native')\n"
        "r = ops.winograd_conv2d(x, u, implementation='reference')\n"
        "assert np.allclose(np.asarray(y), np.asarray(r), rtol=1e-4, atol=1e-5)\n"
        "print(keras_swcnn.build_info()['implementation'])\n"
    )
    try:
        __import__(backend)
    except ImportError:
        pytest.skip(f"{backend} is not installed")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("native")


def available_implementations():
    return ["reference", "portable"] + ([] if REASON else ["native"])


@pytest.mark.parametrize("implementation", available_implementations())
def test_zero_channels_filters_and_empty_batches_agree_on_every_path(rng, implementation):
    for x_shape, u_shape in (((2, 5, 5, 0), (4, 4, 0, 3)), ((2, 5, 5, 2), (4, 4, 2, 0))):
        with pytest.raises(ValueError, match="at least one input channel and one filter"):
            wops.winograd_conv2d(np.zeros(x_shape, "float32"), np.zeros(u_shape, "float32"),
                                 implementation=implementation)
    for padding, out in (("same", (0, 5, 6, 3)), ("valid", (0, 3, 4, 3))):
        y = wops.winograd_conv2d(np.zeros((0, 5, 6, 2), "float32"), random_normal(rng, (4, 4, 2, 3)),
                                 padding, implementation=implementation)
        assert tuple(y.shape) == out
    from keras_swcnn import sparse_format

    mask, values = sparse_format.compress(np.ones((4, 4, 2, 3), "float32"))
    y = wops.sparse_winograd_conv2d(np.zeros((0, 5, 6, 2), "float32"), mask, values,
                                    implementation=implementation)
    assert tuple(y.shape) == (0, 5, 6, 3)


@pytest.mark.parametrize("implementation", available_implementations())
def test_relu_flags_of_any_integer_kind(rng, implementation):
    x = random_normal(rng, (1, 5, 4, 3))
    expected = ops.convert_to_numpy(wops.input_transform(x, relu=True, implementation="reference"))
    if implementation == "portable":
        implementation = "reference"  # the portable lowering has no stand-alone transform
    for flag in (np.True_, 1):
        v = wops.input_transform(x, relu=flag, implementation=implementation)
        assert rel_error(ops.convert_to_numpy(v), expected) < 1e-6
    with pytest.raises(ValueError, match="relu must be True or False"):
        wops.input_transform(x, relu="yes", implementation=implementation)


@pytest.mark.skipif(BACKEND != "tensorflow" or REASON is not None, reason="TensorFlow custom calls")
def test_tensorflow_custom_call_with_an_invalid_shape_writes_nan():
    # TensorFlow gives custom calls no error channel; an opaque that does not validate (here
    # zero input channels, which the Python side refuses before emitting a call) must not
    # leave the output uninitialised.
    import tensorflow as tf
    from tensorflow.compiler.tf2xla.ops import gen_xla_ops

    from keras_swcnn.ops import tensorflow_native

    tensorflow_native._register()

    @tf.function(jit_compile=True)
    def call(x, u):  # emitted directly: the Python-side checks would refuse this shape
        return gen_xla_ops.xla_custom_call_v2(
            operands=[x, u], call_target_name="swcnn_tf_conv_forward",
            backend_config="2 5 5 0 3 1 1 3 3 5 5 1", has_side_effect=False,
            result_dtypes=[tf.float32], result_shapes=[(2, 5, 5, 3)])[0]

    y = call(tf.zeros((2, 5, 5, 0)), tf.zeros((16, 0, 3))).numpy()
    assert np.isnan(y).all()


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow registration")
def test_tensorflow_releases_not_verified_take_the_reference_path(rng, monkeypatch):
    """Finding 4: registering into an unverified TensorFlow's XLA is not attempted."""
    import tensorflow as tf

    from keras_swcnn.ops import tensorflow_native

    assert tensorflow_native.version_unverified_reason(tf.__version__) is None
    reason = tensorflow_native.version_unverified_reason("2.99.1")
    assert "TensorFlow 2.99.1" in reason and "2.21" in reason
    monkeypatch.setattr(tf, "__version__", "2.99.1")
    monkeypatch.setattr(tensorflow_native, "_state",
                        {"registered": False, "error": None, "graph_ops_error": None})
    monkeypatch.setattr(tensorflow_native.native, "_require", None)  # registering would fail here
    assert wops.native_unavailable_reason() == reason
    x, u = random_normal(rng, (1, 5, 6, 2)), random_normal(rng, (4, 4, 2, 3))
    with pytest.raises(RuntimeError, match="2.99.1"):
        wops.winograd_conv2d(x, u, implementation="native")
    with pytest.raises(RuntimeError, match="2.99.1"):
        tensorflow_native.register()
    y = wops.winograd_conv2d(x, u)  # "auto": the reference path
    assert rel_error(ops.convert_to_numpy(y), conv(x, u)) < 1e-5


@pytest.mark.skipif(BACKEND != "jax", reason="JAX GPU selection")
@pytest.mark.parametrize("platform, capability, platform_version, accepted", [
    ("gpu", "9.0", "cuda 13000", True),
    ("gpu", "8.6", "cuda 12080", True),   # sm_80 code runs on every 8.x GPU
    ("gpu", "12.0", "cuda 13000", True),  # compute_90 PTX, compiled by the driver
    ("gpu", "7.5", "cuda 12080", False),  # a T4: no code built for it
    ("gpu", "", "rocm 6.3", False),
    ("rocm", "", "", False),
])
def test_auto_picks_cuda_kernels_only_on_gpus_they_are_built_for(
        platform, capability, platform_version, accepted):
    """Finding 9: "auto" must not pick the CUDA path on an older NVIDIA GPU or an AMD one."""
    from types import SimpleNamespace

    from keras_swcnn.ops import jax_native

    device = SimpleNamespace(platform=platform, compute_capability=capability,
                             device_kind="a GPU", client=SimpleNamespace(
                                 platform_version=platform_version))
    reason = jax_native.gpu_unsupported_reason(device)
    assert (reason is None) == accepted, reason
    if platform_version.startswith("cuda") and not accepted:
        assert capability in reason and "8.0" in reason


def test_tensorflow_front_door_refuses_the_old_string_abi():
    """Finding 4: a build with the pre-C++11 std::string would hand TensorFlow a foreign layout."""
    import shutil
    import subprocess

    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++ to compile with")
    root = os.path.join(os.path.dirname(__file__), os.pardir, "native")
    source = os.path.join(root, "tensorflow", "cpu_custom_calls.cc")
    command = [compiler, "-std=c++17", "-fsyntax-only", f"-I{root}", f"-I{root}/include", source]
    assert subprocess.run(command, capture_output=True).returncode == 0
    refused = subprocess.run(command + ["-D_GLIBCXX_USE_CXX11_ABI=0"], capture_output=True,
                             text=True)
    assert refused.returncode != 0 and "C++11 ABI" in refused.stderr


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow device configuration")
def test_build_info_leaves_tensorflow_devices_configurable():
    import subprocess
    import sys

    script = (
        "import keras_swcnn, tensorflow as tf\n"
        "keras_swcnn.build_info()\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "assert len(tf.config.list_logical_devices('CPU')) == 2\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.mark.skipif(REASON is not None, reason=f"no native path: {REASON}")
def test_four_threads_run_inference_through_one_model(rng):
    import threading
    import time

    from keras_swcnn import benchmark, sparse

    keras.utils.set_random_seed(int(rng.integers(2**31)))
    model = keras.Sequential([keras.Input((12, 10, 8)), WinogradReLUConv2D(16),
                              WinogradReLUConv2D(8, padding="valid")])
    layer = model.layers[1]
    kernel = ops.convert_to_numpy(layer.kernel)
    layer.kernel.assign(np.where(rng.random(kernel.shape) < 0.2, kernel, 0))
    fast = sparse.sparsify(model)  # the sparse kernel too
    inputs = [random_normal(rng, (3, 12, 10, 8)) for _ in range(4)]
    runs = [benchmark.compiled_forward(m, x) for m in (model, fast) for x in inputs]
    expected = [np.asarray(ops.convert_to_numpy(run())) for run in runs]
    failures = []

    def worker(offset):
        deadline = time.monotonic() + 2.0
        i = offset
        while time.monotonic() < deadline and not failures:
            got = np.asarray(ops.convert_to_numpy(runs[i % len(runs)]()))
            if not np.array_equal(got, expected[i % len(runs)]):
                failures.append(i % len(runs))
            i += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, f"results changed under concurrency: runs {failures}"


@pytest.mark.skipif(BACKEND != "tensorflow" or REASON is not None, reason="TensorFlow custom calls")
def test_tensorflow_refuses_a_geometry_the_kernel_would_refuse_while_tracing():
    # The products hold 4 one-tile images, but out_h = 3 is more than one tile row covers:
    # the call used to be emitted and return uninitialised memory.
    from keras_swcnn import winograd
    from keras_swcnn.ops import tensorflow_native

    geometry = winograd.TileGeometry(out_h=3, out_w=2, tiles_h=1, tiles_w=1, pad_top=1, pad_left=1)
    with pytest.raises(ValueError, match="out_h/out_w must satisfy"):
        tensorflow_native.output_transform(np.ones((16, 4, 3), np.float32), geometry)


@pytest.mark.skipif(BACKEND != "tensorflow" or REASON is not None, reason="TensorFlow custom calls")
@pytest.mark.parametrize("jit_compile", [True, False])
def test_tensorflow_operands_are_pinned_to_their_traced_shapes(rng, jit_compile):
    import tensorflow as tf

    u = random_normal(rng, (4, 4, 3, 2))

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3])], jit_compile=jit_compile)
    def lying(x):
        x.set_shape([4, 8, 8, 3])  # a wrong static shape: the batch will be 1
        return wops.winograd_conv2d(x, u, implementation="native")

    one = random_normal(rng, (1, 8, 8, 3))
    if jit_compile:  # the XLA custom call is sized from the traced shape: refused
        with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
            lying(one)
    else:  # the TensorFlow op reads the batch at run time: the image it got, nothing more
        assert rel_error(lying(one).numpy(), conv(one, u)) < 1e-5
    x = random_normal(rng, (4, 8, 8, 3))
    assert rel_error(lying(x).numpy(), conv(x, u)) < 1e-5  # the truth still runs


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("activation", ["relu", None])
def test_non_finite_inputs_reach_exactly_the_outputs_whose_window_holds_them(rng, activation,
                                                                          value):
    # Native: non-finite where the 3x3 window of an output pixel holds a NaN or an infinity,
    # and nowhere else (the transforms add and subtract, never multiply by a zero
    # coefficient). keras.ops (reference) multiplies by the zeros of B^T and A^T too, so it
    # marks at least those pixels (and the rest of their 4x4 tiles). The Winograd ReLU keeps
    # NaN; it turns a transformed -inf into 0, so an infinity may vanish there.
    x = random_normal(rng, (2, 7, 6, 5))
    x[0, 1, 1, 0] = x[1, 4, 5, 3] = value
    u = random_normal(rng, (4, 4, 5, 3))
    window = np.zeros((2, 9, 8), bool)
    for n, r, c in ((0, 1, 1), (1, 4, 5)):
        window[n, r : r + 3, c : c + 3] = True  # padded coordinates: rows r-1..r+1 of y
    expected = window[:, 1:-1, 1:-1]
    exact = np.isnan(value) or activation is None
    reference = ops.convert_to_numpy(wops.winograd_conv2d(x, u, "same", activation, "reference"))
    if exact:
        assert np.all((~np.isfinite(reference)).all(-1)[expected])
    if REASON is None:
        native = ops.convert_to_numpy(wops.winograd_conv2d(x, u, "same", activation, "native"))
        marked = (~np.isfinite(native)).any(-1)
        if exact:
            assert np.array_equal(marked, expected)
        else:
            assert not marked[~expected].any()
