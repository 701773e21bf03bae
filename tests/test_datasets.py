"""The offline-first Fashion-MNIST loader."""

import gzip
import os

import numpy as np
import pytest

from keras_swcnn.datasets import fashion_mnist


def write_idx(directory, rng, n_train=5, n_test=3):
    """Write the four files in the original IDX format; return the arrays written."""
    os.makedirs(directory, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        header = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        with gzip.open(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), "wb") as f:
            f.write(header + images.tobytes())
        header = (2049).to_bytes(4, "big") + n.to_bytes(4, "big")
        with gzip.open(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), "wb") as f:
            f.write(header + labels.tobytes())
        arrays[prefix] = (images, labels)
    return arrays


def test_reads_the_first_directory_that_has_all_files(tmp_path, rng):
    incomplete = tmp_path / "incomplete"
    write_idx(str(incomplete), rng)
    os.remove(incomplete / "t10k-labels-idx1-ubyte.gz")
    complete = tmp_path / "complete"
    arrays = write_idx(str(complete), rng)
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data(
        [str(tmp_path / "missing"), str(incomplete), str(complete)], download=False
    )
    np.testing.assert_array_equal(x_train, arrays["train"][0])
    np.testing.assert_array_equal(y_train, arrays["train"][1])
    np.testing.assert_array_equal(x_test, arrays["t10k"][0])
    np.testing.assert_array_equal(y_test, arrays["t10k"][1])


def test_keras_cache_comes_first(tmp_path, rng, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    write_idx(fashion_mnist.keras_cache_dir(), rng, n_train=4)
    (x_train, _), _ = fashion_mnist.load_data()
    assert x_train.shape == (4, 28, 28)


def test_clear_error_when_nothing_is_found(tmp_path, monkeypatch):
    import keras

    def no_network():
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", no_network)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        fashion_mnist.load_data([str(tmp_path)])
    assert "no network" in str(info.value)
    with pytest.raises(FileNotFoundError, match="download disabled"):
        fashion_mnist.load_data([str(tmp_path)], download=False)


@pytest.mark.skipif(
    fashion_mnist.find_files([fashion_mnist.DEBIAN_DIR]) is None,
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_debian_package_files():
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data([fashion_mnist.DEBIAN_DIR])
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8
    assert set(np.unique(y_train)) == set(range(10))
    assert np.bincount(y_test).tolist() == [1000] * 10
