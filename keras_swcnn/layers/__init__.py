"""Keras 3 layers of keras-swcnn."""

from keras_swcnn.layers.winograd_relu_conv2d import WinogradReLUConv2D
from keras_swcnn.layers.sparse_winograd_relu_conv2d import SparseWinogradReLUConv2D

__all__ = ["SparseWinogradReLUConv2D", "WinogradReLUConv2D"]
