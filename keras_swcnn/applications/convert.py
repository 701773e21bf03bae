"""Convert the paper's TF1/tensorpack ResNet-18-var checkpoints to ``ResNet18`` weights.

The paper's training script (``ResNet-18-var/imagenet-resnet-transWino-prune.py``
in its public repository) saves these model variables, and each goes here:

======================================  ==============================================
checkpoint variable                     ``ResNet18(variant="imagenet")`` layer / weight
======================================  ==============================================
``conv1/W`` [7, 7, 3, 64]               ``conv1`` kernel
``Winograd_W{s}{b}_2{x}/W`` [16, C, K]  ``res{s}{b}_branch2{x}`` kernel, reshaped to
  (s in 2..5, b in a, b, x in a, b)       (4, 4, C, K): position t = 4 row + col
``res{s}a_1/W`` [1, 1, C, K]            ``res{s}a_branch1`` kernel (1x1 shortcut)
``res{s}{b}_bn2{x}/...`` (x in a, b, c) ``res{s}{b}_bn2{x}``: ``gamma``, ``beta``,
``res{s}a_bn1/...``                     ``mean/EMA`` (moving mean), ``variance/EMA``
``res2a_1_relu/bn/...``                 ``res2a_bn1_pre`` (the BN of tensorpack's
                                          ``BNReLU('res2a_1_relu')`` on block 2a's shortcut)
``linear/W`` [512, K], ``linear/b``     ``linear`` kernel, bias
======================================  ==============================================

139 weights in all. A training checkpoint also holds ``global_step``,
``learning_rate``, a ``/Momentum`` slot per trainable variable and the ``EMA/...``
moving averages of training summaries; they are skipped. Anything else, and any
missing weight, stops the conversion with the list of what the script writes.

The pruning masks are not in the checkpoint: the script multiplies each Winograd
kernel by a mask from a pickle (``{'Winograd_W2a_2a/W': array[16, C, K], ...}``),
and a checkpoint saved by a retraining run holds the unmasked kernels. Pass the
pickle as ``masks=`` to apply them; it is read with :func:`load_mask_pickle`,
which refuses anything but numpy arrays in plain containers.

The original reads images with OpenCV (BGR) and normalises them with the ImageNet
mean and std listed in RGB order; converted weights record this, and
``preprocess_input(x, mode="tensorpack")`` (or ``weights=`` the converted file)
reproduces it from RGB images.

Example:
    >>> convert_tensorpack_checkpoint("model-100000", "resnet18.weights.h5",
    ...                               masks="prune_mask_0.1.pkl")  # doctest: +SKIP
    'resnet18.weights.h5'
"""

import os
import pickle

import numpy as np
import keras

from keras_swcnn import winograd
from keras_swcnn.layers import WinogradReLUConv2D

#: The preprocessing the converted weights need (see ``preprocess_input``).
PREPROCESSING = "tensorpack"
#: The BN inside tensorpack's ``BNReLU('res2a_1_relu', ...)``, named for Keras.
_SHORTCUT_BN = ("res2a_bn1_pre", "res2a_1_relu/bn")
_BN_WEIGHTS = ("gamma", "beta", "mean/EMA", "variance/EMA")  # Keras order: gamma, beta, mean, var


def checkpoint_names(layer):
    """The checkpoint variable names holding ``layer``'s weights, in ``layer.weights`` order.

    Example:
        >>> model = ResNet18()  # doctest: +SKIP
        >>> checkpoint_names(model.get_layer("res3a_branch2b"))  # doctest: +SKIP
        ['Winograd_W3a_2b/W']
    """
    name = layer.name
    if isinstance(layer, WinogradReLUConv2D):  # res3a_branch2b -> Winograd_W3a_2b/W
        stage_block, branch = name.split("_branch2")
        return [f"Winograd_W{stage_block[len('res'):]}_2{branch}/W"]
    if isinstance(layer, keras.layers.BatchNormalization):
        scope = _SHORTCUT_BN[1] if name == _SHORTCUT_BN[0] else name
        return [f"{scope}/{weight}" for weight in _BN_WEIGHTS]
    if isinstance(layer, keras.layers.Dense):
        return [f"{name}/W", f"{name}/b"]
    if isinstance(layer, keras.layers.Conv2D):
        if name.endswith("_branch1"):  # res3a_branch1 -> res3a_1/W
            return [f"{name[: -len('_branch1')]}_1/W"]
        return [f"{name}/W"]
    raise ValueError(f"No checkpoint mapping for layer {name!r} ({type(layer).__name__}).")


def _checkpoint_shape(layer, weight):
    if isinstance(layer, WinogradReLUConv2D):
        return (16,) + tuple(weight.shape[2:])
    return tuple(weight.shape)


def expected_variables(model):
    """``{checkpoint name: shape}`` of the weights the paper's script saves for ``model``.

    Example:
        >>> len(expected_variables(ResNet18()))  # doctest: +SKIP
        139
    """
    return {name: _checkpoint_shape(layer, weight)
            for layer in model.layers if layer.weights
            for name, weight in zip(checkpoint_names(layer), layer.weights)}


def is_training_state(name):
    """Whether ``name`` is optimizer or summary state of a training checkpoint (not a weight)."""
    return (name in ("global_step", "learning_rate") or name.startswith("EMA/")
            or name.endswith("/Momentum"))


def _reader(checkpoint):
    try:
        import tensorflow as tf
    except ImportError as error:
        raise RuntimeError("Reading the paper's TF checkpoints needs TensorFlow (any Keras backend "
                           "can use the result): pip install 'keras-swcnn[tensorflow]'.") from error

    prefix = os.fspath(checkpoint)
    for suffix in (".index", ".meta"):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
    if ".data-" in prefix:
        prefix = prefix.split(".data-")[0]
    if not os.path.exists(prefix + ".index"):
        raise FileNotFoundError(f"No TF checkpoint at {checkpoint!r} (expected {prefix}.index).")
    return tf.train.load_checkpoint(prefix)


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays, numpy scalars and plain containers; nothing that can run code."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
        ("_codecs", "encode"),  # bytes in Python 3 pickles of protocol 2 and below
        ("collections", "OrderedDict"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise _ForbiddenGlobal(
            f"The mask pickle refers to {module}.{name}; only numpy arrays in dicts, lists and "
            "tuples are accepted (a pickle can run code when loaded, so nothing else is).")


def load_mask_pickle(path):
    """The masks of the paper's ``prune_script.py``: ``{name: float32 array}``, loaded safely.

    The file is unpickled with an unpickler that admits only numpy arrays and plain
    containers (Python 2 pickles included), so a malicious file cannot run code.

    Raises:
        ValueError: the file is not such a pickle, or not a dict of arrays.

    Example:
        >>> masks = load_mask_pickle("prune_mask_0.1.pkl")  # doctest: +SKIP
        >>> masks["Winograd_W2a_2a/W"].shape  # doctest: +SKIP
        (16, 64, 64)
    """
    with open(path, "rb") as f:
        try:
            masks = _ArraysOnlyUnpickler(f, encoding="latin1").load()
        except _ForbiddenGlobal as error:
            raise ValueError(f"Refusing mask file {os.fspath(path)!r}: {error}") from error
        except Exception as error:  # truncated or not a pickle at all
            raise ValueError(f"Could not read mask file {os.fspath(path)!r} as a pickle: "
                             f"{type(error).__name__}: {error}") from error
    if not isinstance(masks, dict) or not all(
            isinstance(k, str) and isinstance(v, np.ndarray) for k, v in masks.items()):
        raise ValueError(f"Mask file {os.fspath(path)!r} must hold a dict of name -> numpy array, "
                         f"as prune_script.py writes; got {type(masks).__name__}.")
    for name, mask in masks.items():
        if mask.dtype.kind not in "biuf":
            raise ValueError(f"Mask file {os.fspath(path)!r}: {name!r} must be a numeric array, "
                             f"got dtype {mask.dtype}.")
    return {name: np.asarray(mask, np.float32) for name, mask in masks.items()}


def _check_masks(masks, expected):
    kernels = sorted(n for n in expected if n.startswith("Winograd_W"))
    problems = [f"unknown mask {n!r}" for n in sorted(set(masks) - set(kernels))]
    problems += [f"no mask for {n!r}" for n in kernels if n not in masks]
    for name in sorted(set(masks) & set(kernels)):
        mask = masks[name]
        if mask.shape != expected[name]:
            problems.append(f"mask {name!r} has shape {mask.shape}, the kernel {expected[name]}")
        elif not np.all((mask == 0) | (mask == 1)):
            problems.append(f"mask {name!r} holds values other than 0 and 1")
    if problems:
        raise ValueError("The masks do not fit ResNet18(variant='imagenet'): " + "; ".join(problems)
                         + f". The paper's masks are one 0/1 array per Winograd kernel: {kernels}.")


def _mismatch_message(missing, unknown, expected):
    listing = ", ".join(f"{name} {list(shape)}" for name, shape in expected.items())
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if unknown:
        parts.append(f"not part of ResNet-18-var: {', '.join(unknown)}")
    return ("The checkpoint does not fit ResNet18(variant='imagenet'): " + "; ".join(parts)
            + f". The paper's script saves these {len(expected)} weights (plus training state): "
            + listing + ".")


def load_tensorpack_checkpoint(model, checkpoint, masks=None):
    """Assign every weight of ``model`` (a ``ResNet18(variant="imagenet")``) from ``checkpoint``.

    ``masks``: ``None``, a mask pickle's path or ``{name: array}``; each Winograd
    kernel is multiplied by its mask. All weights are read and checked before any
    is assigned.

    Raises:
        ValueError: missing, unknown or misshapen variables, or masks that do not fit.

    Example:
        >>> load_tensorpack_checkpoint(ResNet18(), "model-100000")  # doctest: +SKIP
    """
    reader = _reader(checkpoint)
    available = reader.get_variable_to_shape_map()
    expected = expected_variables(model)
    missing = [name for name in expected if name not in available]
    unknown = sorted(n for n in available if n not in expected and not is_training_state(n))
    if missing or unknown:
        raise ValueError(_mismatch_message(missing, unknown, expected))
    misshapen = [f"{name} has shape {list(available[name])}, ResNet18 needs {list(shape)}"
                 for name, shape in expected.items() if tuple(available[name]) != shape]
    if misshapen:
        raise ValueError("The checkpoint does not fit ResNet18(variant='imagenet'): "
                         + "; ".join(misshapen) + ".")
    if masks is not None:
        masks = load_mask_pickle(masks) if isinstance(masks, (str, os.PathLike)) else {
            name: np.asarray(mask, np.float32) for name, mask in masks.items()}
        _check_masks(masks, expected)
    assignments = []
    for layer in model.layers:
        if not layer.weights:
            continue
        names = checkpoint_names(layer)
        values = [reader.get_tensor(name) for name in names]
        if isinstance(layer, WinogradReLUConv2D):
            kernel = values[0] * masks[names[0]] if masks is not None else values[0]
            values = [winograd.from_paper_layout(kernel)]
        assignments.append((layer, values))
    for layer, values in assignments:
        layer.set_weights([np.asarray(v) for v in values])


def convert_tensorpack_checkpoint(checkpoint, output, classes=1000, masks=None):
    """Convert ``checkpoint`` to a ``.weights.h5`` for ``ResNet18(variant="imagenet")``; returns ``output``.

    ``masks``: the pruning-mask pickle of the paper's ``prune_script.py`` (or a
    dict), applied as ``W * mask``. The output file records that it needs
    ``preprocess_input(..., mode="tensorpack")`` (see ``preprocessing_mode``).

    Example:
        >>> convert_tensorpack_checkpoint("model-100000", "r18.weights.h5")  # doctest: +SKIP
        'r18.weights.h5'
        >>> model = ResNet18(weights="r18.weights.h5")  # doctest: +SKIP
    """
    from keras_swcnn.applications import ResNet18, preprocessing

    output = os.fspath(output)
    if not output.endswith(".weights.h5"):
        raise ValueError(f"The output must be a '.weights.h5' file, got {output!r}.")
    model = ResNet18(variant="imagenet", classes=classes)
    load_tensorpack_checkpoint(model, checkpoint, masks=masks)
    model.save_weights(output)
    preprocessing.record_mode(output, PREPROCESSING)
    return output
