"""Fashion-MNIST, found offline first.

``load_data()`` mirrors ``keras.datasets.fashion_mnist.load_data()`` but looks
for the four original ``.gz`` files before downloading: in the Keras cache
(``$KERAS_HOME/datasets/fashion-mnist``, default ``~/.keras``), then in the
directory of Debian's ``dataset-fashion-mnist`` package. Only if neither has
them does it fall back to Keras's own download.

Example:
    >>> from keras_swcnn.datasets import fashion_mnist
    >>> (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    >>> x_train.shape, x_test.shape
    ((60000, 28, 28), (10000, 28, 28))
"""

import gzip
import os

import numpy as np

FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def keras_cache_dir():
    """Where ``keras.datasets.fashion_mnist`` caches its files."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "datasets", "fashion-mnist")


def default_search_dirs():
    """The directories searched, in order: the Keras cache, then Debian's package."""
    return [keras_cache_dir(), DEBIAN_DIR]


def _read_idx(path, header_bytes):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=header_bytes)


def _load_from(directory):
    paths = [os.path.join(directory, name) for name in FILES]
    y_train = _read_idx(paths[0], 8)
    x_train = _read_idx(paths[1], 16).reshape(len(y_train), 28, 28)
    y_test = _read_idx(paths[2], 8)
    x_test = _read_idx(paths[3], 16).reshape(len(y_test), 28, 28)
    return (x_train, y_train), (x_test, y_test)


def find_files(search_dirs=None):
    """The first directory holding all four files, or ``None``."""
    for directory in search_dirs or default_search_dirs():
        if all(os.path.isfile(os.path.join(directory, name)) for name in FILES):
            return directory
    return None


def load_data(search_dirs=None, download=True):
    """Load Fashion-MNIST as ``(x_train, y_train), (x_test, y_test)`` uint8 arrays.

    Args:
        search_dirs: directories to look in (default: ``default_search_dirs()``).
        download: fall back to ``keras.datasets.fashion_mnist.load_data()``
            when no directory has the files.

    Raises:
        FileNotFoundError: the files were found nowhere and could not be downloaded.
    """
    dirs = list(search_dirs or default_search_dirs())
    directory = find_files(dirs)
    if directory is not None:
        return _load_from(directory)
    problem = "download disabled"
    if download:
        import keras

        try:
            return keras.datasets.fashion_mnist.load_data()
        except Exception as error:  # network errors come in many types
            problem = f"download failed: {type(error).__name__}: {error}"
    raise FileNotFoundError(
        "Fashion-MNIST was not found in " + ", ".join(dirs) + f" ({problem}). "
        "Install Debian's package (`apt-get install dataset-fashion-mnist`), or put "
        f"the files {', '.join(FILES)} into {keras_cache_dir()}."
    )
