"""ResNet18: architecture, variants, weights API, checkpoint converter."""

import hashlib
import os

import numpy as np
import pytest
import keras
from keras import ops

from conftest import random_normal
from keras_swcnn.applications import ResNet18, decode_predictions, preprocess_input, preprocessing_mode
from keras_swcnn.applications import weights as registry
from keras_swcnn.layers import WinogradReLUConv2D
from numpy_reference import rel_error


def winograd_layers(model):
    return [layer for layer in model.layers if isinstance(layer, WinogradReLUConv2D)]


def test_imagenet_variant_matches_the_paper():
    model = ResNet18()
    layers = winograd_layers(model)
    assert len(layers) == 16
    assert sum(int(np.prod(layer.kernel.shape)) for layer in layers) == 19_529_728
    assert model.output_shape == (None, 1000)
    assert model.get_layer("conv1").strides == (2, 2) and model.get_layer("conv1").kernel_size == (7, 7)
    # Stage 5 runs at 14x14: pooling after stages 2 and 3 only.
    assert model.get_layer("res5b_branch2b").output.shape[1:3] == (14, 14)
    assert model.get_layer("res2a_branch2a").output.shape[1:3] == (56, 56)
    bn = model.get_layer("res3a_bn2a")
    assert bn.momentum == 0.9 and bn.epsilon == 1e-5
    assert model.get_layer("dropout").rate == 0.15
    assert isinstance(model.get_layer("res2a_bn1_pre"), keras.layers.BatchNormalization)
    with pytest.raises(ValueError):
        model.get_layer("res3a_bn1_pre")  # only block 2a's shortcut starts with BN


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (7, 7, 2)])
def test_small_variant_shapes(rng, shape):
    model = ResNet18(variant="small", input_shape=shape, classes=7, width=4)
    assert model.predict(random_normal(rng, (2,) + shape), verbose=0).shape == (2, 7)
    headless = ResNet18(variant="small", input_shape=shape, include_top=False, pooling="avg", width=4)
    assert headless.output_shape == (None, 32)


@pytest.mark.parametrize("conv,activation", [("winograd", "relu"), ("winograd", None), ("spatial", "relu")])
def test_three_variants_train(rng, conv, activation):
    keras.utils.set_random_seed(int(rng.integers(2**31)))
    model = ResNet18(variant="small", input_shape=(12, 12, 1), classes=3, width=4, conv=conv,
                     winograd_activation=activation, classifier_activation=None)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = random_normal(rng, (32, 12, 12, 1))
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int32") + (x[:, 0, 0, 0] > 1)
    losses = model.fit(x, y, batch_size=16, epochs=6, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    kinds = {type(layer).__name__ for layer in model.layers}
    assert ("WinogradReLUConv2D" in kinds) == (conv == "winograd")


def test_bad_arguments():
    with pytest.raises(ValueError, match="224x224"):
        ResNet18(input_shape=(128, 128, 3))
    with pytest.raises(ValueError, match="variant"):
        ResNet18(variant="tiny")
    with pytest.raises(ValueError, match="conv"):
        ResNet18(conv="fft")
    with pytest.raises(ValueError, match="Unknown weights"):
        ResNet18(weights="no-such-weights")


@pytest.fixture
def local_weights(tmp_path, monkeypatch):
    """A registry entry whose file is a local weights file (fetched through keras.utils.get_file)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    keras.utils.set_random_seed(5)
    source = ResNet18(variant="small", input_shape=(12, 12, 1), classes=4, width=4)
    path = str(tmp_path / "w.weights.h5")
    source.save_weights(path)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    entry = registry.WeightsEntry(
        name="test_local", filename="w.weights.h5", sha256=digest, origin="file://" + path,
        architecture=dict(variant="small", conv="winograd", winograd_activation="relu", width=4,
                          classes=4, input_shape=(12, 12, 1)),
        class_names=("a", "b", "c", "d"))
    monkeypatch.setitem(registry.REGISTRY, entry.name, entry)
    return source, entry, path


def test_weights_round_trip_through_the_registry(rng, local_weights):
    source, entry, path = local_weights
    x = random_normal(rng, (3, 12, 12, 1))
    model = ResNet18(weights="test_local", variant="small", input_shape=(12, 12, 1), classes=4, width=4)
    np.testing.assert_allclose(model.predict(x, verbose=0), source.predict(x, verbose=0), rtol=1e-5)
    headless = ResNet18(weights="test_local", variant="small", input_shape=(12, 12, 1), width=4,
                        include_top=False, pooling="avg")
    features = keras.Model(source.inputs, source.get_layer("gap").output)
    np.testing.assert_allclose(headless.predict(x, verbose=0), features.predict(x, verbose=0), rtol=1e-5)
    from_path = ResNet18(weights=path, variant="small", input_shape=(12, 12, 1), classes=4, width=4)
    np.testing.assert_allclose(from_path.predict(x, verbose=0), source.predict(x, verbose=0), rtol=1e-5)
    # Architecture arguments left at their defaults follow the weights.
    by_name = ResNet18(weights="test_local")
    assert by_name.input_shape == (None, 12, 12, 1) and by_name.output_shape == (None, 4)
    np.testing.assert_allclose(by_name.predict(x, verbose=0), source.predict(x, verbose=0), rtol=1e-5)
    assert ResNet18(weights="test_local", include_top=False, pooling="avg").output_shape == (None, 32)
    decoded = decode_predictions(np.array([[0.1, 0.7, 0.2, 0.0]]), top=2, weights="test_local")
    assert decoded == [[(1, "b", 0.7), (2, "c", 0.2)]]


def test_wrong_hash_truncated_file_and_wrong_architecture(local_weights, tmp_path, monkeypatch):
    import dataclasses

    source, entry, path = local_weights
    kwargs = dict(variant="small", input_shape=(12, 12, 1), classes=4, width=4)
    with pytest.raises(ValueError, match="fit width=4"):
        ResNet18(weights="test_local", **dict(kwargs, width=8))
    with pytest.raises(ValueError, match="fit classes=4"):
        ResNet18(weights="test_local", **dict(kwargs, classes=5))
    bad = dataclasses.replace(entry, name="bad_hash", sha256="0" * 64)
    monkeypatch.setitem(registry.REGISTRY, "bad_hash", bad)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "other_home"))
    with pytest.raises(ValueError, match="(?i)corrupt|hash"):
        ResNet18(weights="bad_hash", **kwargs)
    truncated = str(tmp_path / "truncated.weights.h5")
    with open(path, "rb") as f, open(truncated, "wb") as g:
        g.write(f.read()[:5000])
    with pytest.raises(ValueError, match="Could not load weights"):
        ResNet18(weights=truncated, **kwargs)
    with pytest.raises(ValueError, match="Could not load weights"):
        ResNet18(weights=path, **dict(kwargs, width=8))


def test_preprocess_and_decode(rng):
    images = rng.integers(0, 256, (2, 5, 4, 3)).astype(np.float64)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    rgb = preprocess_input(images)
    np.testing.assert_allclose(rgb, (images / 255 - mean) / std, rtol=1e-5, atol=1e-6)
    # The original's input: OpenCV's BGR channels, normalised with the R, G, B statistics.
    bgr = preprocess_input(images, mode="tensorpack")
    np.testing.assert_allclose(bgr, (images[..., ::-1] / 255 - mean) / std, rtol=1e-5, atol=1e-6)
    first = preprocess_input(images.transpose(0, 3, 1, 2), data_format="channels_first", mode="tensorpack")
    np.testing.assert_allclose(first, bgr.transpose(0, 3, 1, 2), rtol=1e-6)
    np.testing.assert_allclose(preprocess_input(images[0]), rgb[0], rtol=1e-6)
    assert preprocess_input(np.full((1, 2, 2, 1), 51.0)).max() == pytest.approx(0.2)
    assert preprocessing_mode("fashion_mnist_small") == "torch"
    with pytest.raises(ValueError, match="mode must be one of"):
        preprocess_input(images, mode="caffe")
    with pytest.raises(ValueError, match="needs RGB images"):
        preprocess_input(np.ones((1, 2, 2, 1)), mode="tensorpack")
    with pytest.raises(ValueError, match="trained with mode='torch', not 'tensorpack'"):
        preprocess_input(images, mode="tensorpack", weights="fashion_mnist_small")
    with pytest.raises(ValueError, match="rank 3 or 4"):
        preprocess_input(np.ones((4, 3)))
    with pytest.raises(ValueError, match="shape"):
        decode_predictions(np.ones((1, 3)), class_names=("a", "b"))


def test_weights_files_record_their_preprocessing(tmp_path):
    from keras_swcnn.applications import preprocessing

    path = str(tmp_path / "m.weights.h5")
    model = ResNet18(variant="small", input_shape=(8, 8, 3), classes=3, width=4)
    model.save_weights(path)
    assert preprocessing_mode(path) == "torch"  # nothing recorded: this package's own training
    preprocessing.record_mode(path, "tensorpack")
    assert preprocessing_mode(path) == "tensorpack"
    ResNet18(weights=path, variant="small", input_shape=(8, 8, 3), classes=3, width=4)  # still loads
    with pytest.raises(ValueError, match="Unknown weights"):
        preprocessing_mode(str(tmp_path / "absent.weights.h5"))


@pytest.mark.skipif(
    "fashion_mnist_small" not in registry.REGISTRY, reason="no shipped Fashion-MNIST weights")
def test_shipped_fashion_mnist_weights_reach_their_accuracy():
    from keras_swcnn.datasets import fashion_mnist

    if fashion_mnist.find_files() is None:
        pytest.skip("Fashion-MNIST not installed")
    from keras_swcnn.applications.training import load_fashion_mnist

    entry = registry.get_entry("fashion_mnist_small")
    model = ResNet18(weights="fashion_mnist_small", **{
        k: v for k, v in entry.architecture.items() if k != "classifier_activation"},
        classifier_activation=None)
    _, (x, y) = load_fashion_mnist(test_samples=registry.SUBSET_SIZE)
    accuracy = float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), -1) == y))
    assert abs(accuracy - registry.SUBSET_ACCURACY) <= 0.005, accuracy
    densities = [np.count_nonzero(ops.convert_to_numpy(l.kernel)) / np.prod(l.kernel.shape)
                 for l in winograd_layers(model)]
    assert max(densities) <= 0.1005  # k = round(n * 0.1) per layer


def test_compact_shipped_weights_match_the_dense_ones(rng):
    from keras_swcnn import sparse

    dense = ResNet18(weights="fashion_mnist_small", classifier_activation=None)
    compact = ResNet18(weights="fashion_mnist_small_sparse", classifier_activation=None)
    layers = sparse.sparse_layers(compact)
    assert len(layers) == 16 and not sparse.winograd_layers(compact)
    for layer in layers:
        np.testing.assert_array_equal(ops.convert_to_numpy(layer.dense_kernel()),
                                      ops.convert_to_numpy(dense.get_layer(layer.name).kernel))
    x = rng.random((3, 28, 28, 1), dtype=np.float32)
    assert rel_error(compact.predict(x, verbose=0), dense.predict(x, verbose=0)) < 1e-5
    # Kernel storage: a bit per weight plus the stored values, >= 5x smaller than dense at density 0.1.
    dense_bytes = sum(4 * int(np.prod(l.kernel.shape)) for l in winograd_layers(dense))
    compact_bytes = sum(4 * (int(np.prod(l.mask.shape)) + int(np.prod(l.values.shape))) for l in layers)
    assert dense_bytes / compact_bytes >= 5
    files = {name: os.path.getsize(registry.fetch(registry.get_entry(name)))
             for name in ("fashion_mnist_small", "fashion_mnist_small_sparse")}
    assert files["fashion_mnist_small"] / files["fashion_mnist_small_sparse"] > 4
    headless = ResNet18(weights="fashion_mnist_small_sparse", include_top=False, pooling="avg")
    assert headless.output_shape == (None, 128) and len(sparse.sparse_layers(headless)) == 16
