"""Export: the portable lowering, and models that run where keras_swcnn is not installed.

The fresh-process checks run a subprocess in which importing keras_swcnn fails,
as it would on a serving machine without it.
"""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import keras
from keras import ops

import keras_swcnn
from conftest import BACKEND, as_if_not_installed, gradients, random_normal
from keras_swcnn import export, sparse
from keras_swcnn import ops as wops
from keras_swcnn.layers import SparseWinogradReLUConv2D, WinogradReLUConv2D
from numpy_reference import conv, conv_grads, rel_error

WITHOUT_KERAS_SWCNN = as_if_not_installed("keras_swcnn")


def run_without_keras_swcnn(code, tmp_path, **arrays):
    """Run ``code`` in a fresh Python that cannot import keras_swcnn; it reads ``arrays`` and sets ``result``."""
    data = tmp_path / "io.pkl"
    with open(data, "wb") as f:
        pickle.dump(arrays, f)
    script = WITHOUT_KERAS_SWCNN + f"""
import pickle, numpy as np
arrays = pickle.load(open({str(data)!r}, "rb"))
{code}
assert not any(m.startswith("keras_swcnn") for m in sys.modules)
pickle.dump(np.asarray(result), open({str(data)!r}, "wb"))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=str(tmp_path), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(data, "rb") as f:
        return pickle.load(f)


@pytest.mark.parametrize("shape,filters,padding,activation", [
    ((2, 5, 5, 3), 8, "same", "relu"),
    ((1, 9, 7, 40), 5, "valid", "relu"),
    ((3, 2, 3, 1), 2, "same", None),
    ((1, 1, 1, 2), 3, "same", "relu"),
    ((2, 6, 3, 4), 1, "valid", None),
])
def test_portable_lowering_matches_float64(rng, shape, filters, padding, activation):
    x = random_normal(rng, shape)
    u = random_normal(rng, (4, 4, shape[-1], filters))
    y = wops.winograd_conv2d(x, u, padding, activation, implementation="portable")
    assert rel_error(ops.convert_to_numpy(y), conv(x, u, padding, activation == "relu")) < 1e-5


def test_portable_lowering_gradients(rng):
    x = random_normal(rng, (2, 7, 6, 3))
    u = random_normal(rng, (4, 4, 3, 4))
    dy = random_normal(rng, (2, 7, 6, 4))
    dx, du = gradients(lambda a, b: ops.sum(
        ops.multiply(wops.winograd_conv2d(a, b, implementation="portable"), dy)), x, u)
    dx_ref, du_ref = conv_grads(x, u, dy)
    assert rel_error(dx, dx_ref) < 1e-5 and rel_error(du, du_ref) < 1e-5


def test_portable_lowering_needs_static_shapes():
    if BACKEND != "tensorflow":
        pytest.skip("unknown spatial sizes while tracing: TensorFlow")
    import tensorflow as tf

    fn = tf.function(lambda x: wops.winograd_conv2d(x, np.ones((4, 4, 2, 2), "float32"),
                                                    implementation="portable"))
    with pytest.raises(ValueError, match="needs a known height, width and channel count"):
        fn.get_concrete_function(tf.TensorSpec((None, None, None, 2)))


def test_auto_means_portable_inside_exporters_and_scopes():
    assert export.auto_means() == "auto" and not export.exporting()
    with export.implementation("portable"):
        assert wops.implementation_name("auto") == "portable"
        with export.implementation("reference"):
            assert wops.implementation_name("auto") == "reference"
        assert wops.implementation_name("native" if False else "reference") == "reference"
    assert export.auto_means() == "auto"
    # Code of an exporter's module on the stack: "auto" is the portable lowering.
    exporter = {"__name__": "keras.src.export.saved_model", "export": export}
    exec("def trace():\n    return export.auto_means()", exporter)
    assert exporter["trace"]() == "portable"
    with export.implementation("native"):  # unless the user asks for the native kernels
        assert exporter["trace"]() == "native"
    with pytest.raises(ValueError, match="implementation must be one of"):
        with export.implementation("fast"):
            pass


def small_model(rng, sparse_layer=False):
    """Winograd layers (dense, valid padding, bias) around BN; optionally the last one sparsified."""
    keras.utils.set_random_seed(int(rng.integers(2**31)))
    model = keras.Sequential([
        keras.Input((9, 7, 5)),
        WinogradReLUConv2D(6, name="w1"),
        keras.layers.BatchNormalization(),
        WinogradReLUConv2D(4, padding="valid", use_bias=True, name="w2"),
    ])
    model.get_layer("w2").bias.assign(random_normal(rng, (4,)))
    if sparse_layer:
        layer = model.get_layer("w2")
        kernel = ops.convert_to_numpy(layer.kernel)
        layer.kernel.assign(np.where(rng.random(kernel.shape) < 0.1, kernel, 0))
        model = sparse.sparsify(model)
        assert isinstance(model.get_layer("w2"), SparseWinogradReLUConv2D)
    return model


tensorflow_only = pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow-backend export")


@tensorflow_only
@pytest.mark.parametrize("sparse_layer", [False, True])
def test_litert_export_runs_in_the_interpreter(rng, tmp_path, sparse_layer):
    model = small_model(rng, sparse_layer)
    x = random_normal(rng, (3, 9, 7, 5))
    expected = model.predict(x, verbose=0)
    model.export(str(tmp_path / "m.tflite"), format="litert", verbose=False)
    assert rel_error(export.litert_outputs(tmp_path / "m.tflite", x), expected) < 1e-5


@pytest.mark.skipif(BACKEND not in ("tensorflow", "jax"), reason="tf_saved_model: TensorFlow, JAX (jax2tf)")
def test_saved_model_runs_without_keras_swcnn(rng, tmp_path):
    pytest.importorskip("tensorflow")
    model = small_model(rng, sparse_layer=True)
    x = random_normal(rng, (2, 9, 7, 5))
    expected = ops.convert_to_numpy(model(x))
    path = str(tmp_path / "served")
    model.export(path, format="tf_saved_model", verbose=False)
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        graph = f.read()
    assert b"XlaCustomCallV2" not in graph and b"swcnn_" not in graph  # no TF or JAX custom calls
    result = run_without_keras_swcnn(
        f"import tensorflow as tf\nloaded = tf.saved_model.load({path!r})\n"
        "result = loaded.serve(arrays['x']).numpy()",
        tmp_path, x=x)
    assert rel_error(result, expected) < 1e-5


@tensorflow_only
def test_native_export_is_opt_in_and_runs_where_the_kernels_are_registered(rng, tmp_path):
    if wops.native_unavailable_reason():
        pytest.skip(wops.native_unavailable_reason())
    model = small_model(rng)
    x = random_normal(rng, (3, 9, 7, 5))
    expected = ops.convert_to_numpy(model(x))
    path = str(tmp_path / "native")
    with keras_swcnn.export.implementation("native"):
        model.export(path, format="tf_saved_model", verbose=False)
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        graph = f.read()
    # Serving graphs are not XLA-compiled: the kernels are the TensorFlow ops.
    assert b"SwcnnConvForward" in graph and b"XlaCustomCallV2" not in graph
    np.save(tmp_path / "x.npy", x)
    script = (
        "import numpy as np, tensorflow as tf\n"
        "from keras_swcnn.ops import tensorflow_native\n"
        "tensorflow_native.register()\n"
        f"loaded = tf.saved_model.load({path!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, loaded.serve(np.load({str(tmp_path / 'x.npy')!r})))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert rel_error(np.load(tmp_path / "y.npy"), expected) < 1e-5


def test_onnx_export_runs_in_onnxruntime(rng, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model = small_model(rng, sparse_layer=True)
    x = random_normal(rng, (2, 9, 7, 5))
    expected = ops.convert_to_numpy(model(x))  # a direct call: Keras exports only called models
    if BACKEND == "jax":
        try:
            import jax2onnx  # noqa: F401
        except ImportError:  # Keras names what is missing
            with pytest.raises(ImportError, match="jax2onnx"):
                model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)
            return
    if BACKEND == "tensorflow":
        pytest.importorskip("tf2onnx")
    path = str(tmp_path / "m.onnx")
    model.export(path, format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(path)
    result = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert rel_error(result, expected) < 1e-5


@pytest.mark.skipif(BACKEND != "jax", reason="jax.export")
def test_jax_export_is_portable_and_runs_without_keras_swcnn(rng, tmp_path):
    import jax

    model = small_model(rng, sparse_layer=True)
    x = random_normal(rng, (2, 9, 7, 5))
    expected = np.asarray(model(x))
    spec = jax.ShapeDtypeStruct(x.shape, np.float32)
    exported = jax.export.export(jax.jit(lambda images: model(images)))(spec)
    assert "custom_call @swcnn" not in exported.mlir_module()
    result = run_without_keras_swcnn(
        "import jax\nresult = jax.export.deserialize(arrays['blob']).call(arrays['x'])",
        tmp_path, x=x, blob=exported.serialize())
    assert rel_error(result, expected) < 1e-5
    if wops.native_unavailable_reason() is None:
        with keras_swcnn.export.implementation("native"):
            native = jax.export.export(jax.jit(lambda images: model(images)),
                                       disabled_checks=export.jax_native_checks())(spec)
        assert "custom_call @swcnn" in native.mlir_module()  # runs only where keras_swcnn registered its targets


@tensorflow_only
def test_the_command_exports_the_shipped_model(rng, tmp_path, capsys):
    from keras_swcnn import cli
    from keras_swcnn.applications import ResNet18

    path = tmp_path / "r18.tflite"
    assert cli.main(["export", str(path), "--sparse"]) == 0
    assert "sparse Winograd layers, portable" in capsys.readouterr().out
    x = rng.random((2, 28, 28, 1), dtype=np.float32)
    expected = ResNet18(weights="fashion_mnist_small").predict(x, verbose=0)
    assert rel_error(export.litert_outputs(path, x), expected) < 1e-5
