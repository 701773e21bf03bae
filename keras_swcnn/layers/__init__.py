"""Keras 3 layers of keras-swcnn."""

from keras_swcnn.layers.winograd_relu_conv2d import WinogradReLUConv2D

__all__ = ["WinogradReLUConv2D"]
