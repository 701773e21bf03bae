"""Input preprocessing for ``ResNet18`` weights, and which one a set of weights needs.

Two modes:

- ``"torch"``: RGB pixels in [0, 255] -> ``(x / 255 - mean) / std`` with the ImageNet
  RGB mean and std (Keras's ``"torch"`` mode). Grayscale images are only scaled to
  [0, 1]. Weights trained with this package use it.
- ``"tensorpack"``: what the paper's original code feeds its network. It reads images
  with OpenCV, so channels are in BGR order, and then applies the same mean and std,
  listed in RGB order, to those BGR channels (its source says so). From an RGB image:
  reverse the channels, then normalise. Weights converted from the paper's
  checkpoints need it.

A weights file written by the converter records its mode in an HDF5 attribute, and
a registry entry names its own, so ``preprocess_input(x, weights=...)`` picks the
right one.

Example:
    >>> preprocess_input(np.full((1, 2, 2, 3), 255.0), mode="tensorpack").shape
    (1, 2, 2, 3)
"""

import os

import numpy as np

#: ImageNet normalisation of the original code (mean and std of [0, 1] pixels, listed R, G, B).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
MODES = ("torch", "tensorpack")
DEFAULT_MODE = "torch"
#: The HDF5 attribute of a ``.weights.h5`` file naming the preprocessing its weights need.
ATTRIBUTE = "keras_swcnn_preprocessing"


def _channel_axis(x, data_format):
    import keras

    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}.")
    if x.ndim < 3:
        raise ValueError(f"Expected images of rank 3 or 4, got shape {x.shape}.")
    return -1 if data_format == "channels_last" else -3


def preprocess_input(x, data_format=None, mode=None, weights=None):
    """Images with pixels in [0, 255] (RGB, or grayscale) -> the network's input.

    Args:
        x: images, ``(batch,) + (height, width, channels)`` or one image; numpy or array-like.
        data_format: ``"channels_last"`` / ``"channels_first"``; default Keras's setting.
        mode: ``"torch"`` or ``"tensorpack"`` (see the module docstring). Default: the
            mode ``weights`` need, else ``"torch"``.
        weights: a registered weights name or a ``.weights.h5`` path, whose mode is used.

    Raises:
        ValueError: an unknown mode, ``"tensorpack"`` on non-RGB images, or a mode that
            contradicts the one ``weights`` record.

    Example:
        >>> preprocess_input(np.full((1, 2, 2, 3), 255.0)).shape
        (1, 2, 2, 3)
        >>> float(preprocess_input(np.full((2, 2, 1), 51.0)).max())
        0.2
    """
    if weights is not None:
        needed = preprocessing_mode(weights)
        if mode is not None and mode != needed:
            raise ValueError(f"Weights {weights!r} were trained with mode={needed!r}, not {mode!r}.")
        mode = needed
    mode = DEFAULT_MODE if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    x = np.asarray(x, np.float32)
    axis = _channel_axis(x, data_format)
    channels = x.shape[axis]
    if mode == "tensorpack":
        if channels != 3:
            raise ValueError(f"mode='tensorpack' needs RGB images (3 channels), got shape {x.shape}.")
        x = np.flip(x, axis)  # RGB -> BGR, as OpenCV reads them
    x = x / 255.0
    if channels == 3:
        shape = [1] * x.ndim
        shape[axis] = 3
        # In tensorpack mode these R, G, B statistics meet B, G, R channels: the original's own mismatch.
        x = (x - IMAGENET_MEAN.reshape(shape)) / IMAGENET_STD.reshape(shape)
    return x


def record_mode(path, mode):
    """Write ``mode`` into the ``.weights.h5`` file at ``path`` (read by ``preprocessing_mode``)."""
    import h5py

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    with h5py.File(path, "r+") as f:
        f.attrs[ATTRIBUTE] = mode


def preprocessing_mode(weights):
    """The preprocessing mode ``weights`` (a registered name or a ``.weights.h5`` path) need.

    Files without a recorded mode, e.g. saved by ``model.save_weights``, need ``"torch"``.

    Example:
        >>> preprocessing_mode("fashion_mnist_small")
        'torch'
    """
    from keras_swcnn.applications import weights as registry

    if isinstance(weights, str) and weights in registry.REGISTRY:
        return registry.get_entry(weights).preprocessing
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        import h5py

        try:
            with h5py.File(weights, "r") as f:
                mode = f.attrs.get(ATTRIBUTE, DEFAULT_MODE)
        except OSError as error:
            raise ValueError(f"Could not read {os.fspath(weights)!r} as a .weights.h5 file: {error}") from error
        return mode.decode() if isinstance(mode, bytes) else str(mode)
    registry.get_entry(weights)  # raises: unknown name, and not a file
