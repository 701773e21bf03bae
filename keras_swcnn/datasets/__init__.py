"""Data sets used by the examples and recipes (offline-first loaders)."""

from keras_swcnn.datasets import fashion_mnist

__all__ = ["fashion_mnist"]
