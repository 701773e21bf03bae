"""Applications: the paper's ResNet-18 variant, with pretrained weights by name.

Example:
    >>> from keras_swcnn.applications import ResNet18
    >>> model = ResNet18(weights=None, variant="small", input_shape=(28, 28, 1), classes=10)
"""

import inspect
import os

import numpy as np

from keras_swcnn.applications import weights as weights_registry
from keras_swcnn.applications.preprocessing import (IMAGENET_MEAN, IMAGENET_STD,  # noqa: F401
                                                    preprocess_input, preprocessing_mode)
from keras_swcnn.applications.resnet18 import build_resnet18


def ResNet18(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
             classes=1000, classifier_activation="softmax", name=None, variant="imagenet",
             winograd_activation="relu", conv="winograd", width=64):
    """The ResNet-18 variant of Liu et al. (2018), with Winograd-ReLU convolutions.

    The ``keras.applications`` signature, plus:

    Args:
        variant: ``"imagenet"`` (the paper's ResNet-18-var, 224x224x3: 7x7/2 stem
            and 3x3/2 max-pool) or ``"small"`` (3x3 stride-1 stem, no stem
            pooling: for 28x28 or 32x32 images; any size works).
        winograd_activation: ``"relu"`` (the paper's Winograd-ReLU) or ``None``
            (Winograd-native convolution after a spatial ReLU).
        conv: ``"winograd"`` or ``"spatial"`` (``Conv2D`` + spatial ReLU: the
            baseline), the three variants the paper compares.
        width: the first stage's width (64 in the paper; the stages are
            ``width * (1, 2, 4, 8)``); smaller widths make small, fast models.
        weights: ``None``, a registered name (``keras_swcnn.applications.weights.REGISTRY``;
            the file is fetched through ``keras.utils.get_file`` and its sha256
            checked) or the path of a ``.weights.h5`` file. With
            ``include_top=False`` all but the classifier is loaded. With a
            registered name, architecture arguments left at their defaults take
            the weights' values (``ResNet18(weights="fashion_mnist_small")`` is
            the small width-16 Fashion-MNIST network); others must agree with them.
            Compact entries (``fashion_mnist_small_sparse``) give a model whose
            Winograd layers are ``SparseWinogradReLUConv2D``, for inference.

    Raises:
        ValueError: invalid arguments, unknown weights, weights that do not fit
            the architecture, a wrong hash or an unreadable (e.g. truncated)
            file. No model is returned half-loaded.

    Example:
        >>> model = ResNet18(variant="small", input_shape=(28, 28, 1), classes=10, width=16)
    """
    arguments = dict(include_top=include_top, input_tensor=input_tensor, input_shape=input_shape,
                     pooling=pooling, classes=classes, classifier_activation=classifier_activation,
                     variant=variant, winograd_activation=winograd_activation, conv=conv,
                     width=width, name=name)
    if weights is None:
        return build_resnet18(**arguments)
    if isinstance(weights, str) and weights in weights_registry.REGISTRY:
        entry = weights_registry.get_entry(weights)
        arguments = _defaults_from(entry, arguments)
        _check_architecture(entry, arguments)
        path = weights_registry.fetch(entry)
        source_arguments = dict(entry.architecture)
        compact = entry.compact
    elif isinstance(weights, (str, os.PathLike)) and os.path.exists(weights):
        path = os.fspath(weights)
        source_arguments = {k: v for k, v in arguments.items()
                            if k not in ("include_top", "input_tensor", "pooling", "name")}
        compact = False
    else:
        weights_registry.get_entry(weights)  # raises: unknown name (and not a file)
    try:
        source = _load_source(path, source_arguments, compact)
    except Exception as error:  # h5py/zipfile/Keras raise many types for bad files
        raise ValueError(
            f"Could not load weights from {path}: {type(error).__name__}: {error}. The file is "
            "truncated, not a Keras weights file, or for another architecture.") from error
    model = build_resnet18(**arguments)
    _copy_layers(source, model)
    if compact:
        from keras_swcnn import sparse

        model = sparse.sparsify(model)
    return model


def _load_source(path, architecture, compact):
    """The network the weights file holds, with dense Winograd layers."""
    if compact:  # a .keras model with sparse layers
        import keras

        from keras_swcnn import sparse

        return sparse.densify(keras.saving.load_model(path, compile=False))
    source = build_resnet18(**dict(architecture, include_top=True, input_tensor=None))
    source.load_weights(path)
    return source


def _defaults_from(entry, arguments):
    """``arguments`` with each architecture argument still at its default set as ``entry`` needs."""
    defaults = {name: parameter.default
                for name, parameter in inspect.signature(ResNet18).parameters.items()}
    filled = dict(arguments)
    for key, value in entry.architecture.items():
        if key == "classes" and not arguments["include_top"]:
            continue
        if arguments[key] == defaults[key]:
            filled[key] = value
    return filled


def _check_architecture(entry, arguments):
    for key, value in entry.architecture.items():
        if key == "input_shape":
            requested = arguments["input_shape"]
            if requested is not None and tuple(requested)[-1] != value[-1]:
                raise ValueError(f"Weights {entry.name!r} need {value[-1]} input channels, got "
                                 f"input_shape={tuple(requested)}.")
            continue
        if key == "classes" and not arguments["include_top"]:
            continue
        if arguments.get(key) != value:
            raise ValueError(
                f"Weights {entry.name!r} fit {key}={value!r}, but {key}={arguments.get(key)!r} was "
                f"requested. Their architecture: {entry.architecture}.")


def _copy_layers(source, target):
    """Copy every weighted layer of ``target`` from the same-named layer of ``source``, all or nothing."""
    assignments = []
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            values = source.get_layer(layer.name).get_weights()
        except ValueError as error:
            raise ValueError(f"The weights have no layer {layer.name!r}.") from error
        shapes = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != shapes:
            raise ValueError(f"Layer {layer.name!r}: weights of shapes {[v.shape for v in values]} do "
                             f"not fit the model's {shapes}.")
        assignments.append((layer, values))
    for layer, values in assignments:
        layer.set_weights(values)


def decode_predictions(preds, top=5, weights=None, class_names=None):
    """``[(class_index, class_name, score), ...]`` per sample, best first.

    The class names come from ``class_names``, or from the registry entry of
    ``weights``; with neither, ImageNet's (through ``keras.applications``).

    Example:
        >>> decode_predictions(np.eye(10)[:1], top=1, weights="fashion_mnist_small")  # doctest: +SKIP
        [[(0, 'T-shirt/top', 1.0)]]
    """
    preds = np.asarray(preds)
    if class_names is None and weights is not None:
        class_names = weights_registry.get_entry(weights).class_names
    if class_names is None:
        from keras.applications import imagenet_utils

        return imagenet_utils.decode_predictions(preds, top=top)
    if preds.ndim != 2 or preds.shape[1] != len(class_names):
        raise ValueError(f"Expected predictions of shape (samples, {len(class_names)}), got {preds.shape}.")
    results = []
    for row in preds:
        best = np.argsort(-row)[:top]
        results.append([(int(i), class_names[i], float(row[i])) for i in best])
    return results


__all__ = ["ResNet18", "decode_predictions", "preprocess_input", "preprocessing_mode"]
