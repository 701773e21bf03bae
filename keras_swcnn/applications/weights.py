"""The pretrained-weights registry: names -> file, sha256 and the architecture they fit."""

import dataclasses
import os

import keras

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclasses.dataclass(frozen=True)
class WeightsEntry:
    """One set of pretrained weights.

    Attributes:
        name: the registry name (``ResNet18(weights=name)``).
        filename: the weights file's name (a Keras ``.weights.h5``).
        sha256: the file's SHA-256; downloads and cached copies are checked against it.
        origin: where the file comes from: a URL, or ``None`` for package data.
        architecture: the ``ResNet18`` arguments the weights fit.
        class_names: the label of each output class.
        accuracy: the documented test accuracy (and on what).
    """

    name: str
    filename: str
    sha256: str
    origin: str
    architecture: dict
    class_names: tuple
    accuracy: str = ""

    def url(self):
        if self.origin:
            return self.origin
        return "file://" + os.path.join(DATA_DIR, self.filename)


REGISTRY = {}


def register(entry):
    """Add ``entry`` to the registry (names are unique)."""
    if entry.name in REGISTRY:
        raise ValueError(f"Weights {entry.name!r} are already registered.")
    REGISTRY[entry.name] = entry
    return entry


def get_entry(name):
    if name not in REGISTRY:
        raise ValueError(
            f"Unknown weights {name!r}. Registered: {sorted(REGISTRY)}; or pass a path to a "
            "'.weights.h5' file.")
    return REGISTRY[name]


def fetch(entry, cache_dir=None):
    """The local path of ``entry``'s file, downloaded (or copied) and hash-checked by Keras."""
    return keras.utils.get_file(
        fname=entry.filename, origin=entry.url(), file_hash=entry.sha256, hash_algorithm="sha256",
        cache_subdir="keras_swcnn", cache_dir=cache_dir)
