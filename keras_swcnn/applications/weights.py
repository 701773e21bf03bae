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
        preprocessing: the ``preprocess_input`` mode the weights were trained with.
        compact: the file is a ``.keras`` model whose Winograd layers are
            ``SparseWinogradReLUConv2D`` (non-zero weights only); ``ResNet18``
            then returns the network with sparse layers, for inference.
    """

    name: str
    filename: str
    sha256: str
    origin: str
    architecture: dict
    class_names: tuple
    accuracy: str = ""
    preprocessing: str = "torch"
    compact: bool = False

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


#: The first N Fashion-MNIST test images, and the shipped weights' accuracy on them (the test
#: suite checks it within 0.5 points).
SUBSET_SIZE = 2000
SUBSET_ACCURACY = 0.9135

register(WeightsEntry(
    name="fashion_mnist_small",
    filename="resnet18_small_w16_fashion_mnist.weights.h5",
    sha256="f9fd93b634461b341d2d84a0e4a3eb41e0e0a7caa5fb1f0fc198be8f928af59c",
    origin=None,  # package data
    architecture=dict(variant="small", conv="winograd", winograd_activation="relu", width=16,
                      classes=10, input_shape=(28, 28, 1)),
    class_names=FASHION_MNIST_CLASSES,
    accuracy=("90.77% on the Fashion-MNIST test set (91.35% on its first 2000 images); Winograd "
              "weight density 0.10 (pruned in the Winograd domain); recipe: "
              "applications/fashion_mnist_resnet18.py"),
))

register(WeightsEntry(
    name="fashion_mnist_small_sparse",
    filename="resnet18_small_w16_fashion_mnist_sparse.keras",
    sha256="dc3889ae6465ebcc6aa85853403d75fa936781d46696815e99b6c9eac01884da",
    origin=None,  # package data
    architecture=REGISTRY["fashion_mnist_small"].architecture,
    class_names=FASHION_MNIST_CLASSES,
    accuracy=("the fashion_mnist_small weights, compressed: 0.19 of the dense file's size, the same "
              "outputs; recipe: applications/compact_weights.py"),
    compact=True,
))
