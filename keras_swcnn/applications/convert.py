"""Convert the paper's TF1/tensorpack ResNet-18-var checkpoints to ``ResNet18`` weights.

Variable names in the original checkpoints (tensorpack), and where they go:

===================================  ==========================================
checkpoint variable                  ResNet18(variant="imagenet") layer / weight
===================================  ==========================================
``conv1/W`` [7, 7, 3, 64]            ``conv1`` kernel
``Winograd_W{s}{b}_{s}{x}/W``        ``res{s}{b}_branch2{x}`` kernel: [16, C, K]
  (x in a, b), [16, C_in, C_out]       reshaped to (4, 4, C, K), t = 4 i + j
``res{s}a_1/W`` [1, 1, C, K]         ``res{s}a_branch1`` kernel (shortcut 1x1)
``res{s}{b}_bn{n}/gamma, beta``      ``res{s}{b}_bn{n}`` gamma, beta
``res{s}{b}_bn{n}/mean/EMA``,        ``res{s}{b}_bn{n}`` moving mean, moving
``.../variance/EMA``                   variance (n in 2a, 2b, 2c, 1, 1_pre)
``linear/W``, ``linear/b``           ``linear`` kernel, bias
===================================  ==========================================

Example:
    >>> convert_tensorpack_checkpoint("model-100000", "resnet18.weights.h5")  # doctest: +SKIP
"""

import os

import numpy as np
import keras

from keras_swcnn import winograd
from keras_swcnn.layers import WinogradReLUConv2D


def checkpoint_names(layer):
    """The checkpoint variable names holding ``layer``'s weights, in ``layer.weights`` order."""
    name = layer.name
    if isinstance(layer, WinogradReLUConv2D):  # res2a_branch2b -> Winograd_W2a_2b/W
        stage_block, branch = name.split("_branch2")
        return [f"Winograd_W{stage_block[3:]}_{stage_block[3]}{branch}/W"]
    if isinstance(layer, keras.layers.BatchNormalization):
        return [f"{name}/gamma", f"{name}/beta", f"{name}/mean/EMA", f"{name}/variance/EMA"]
    if isinstance(layer, keras.layers.Dense):
        return [f"{name}/W", f"{name}/b"]
    if isinstance(layer, keras.layers.Conv2D):
        if name.endswith("_branch1"):  # res3a_branch1 -> res3a_1/W
            return [f"{name[: -len('_branch1')]}_1/W"]
        return [f"{name}/W"]
    raise ValueError(f"No checkpoint mapping for layer {name!r} ({type(layer).__name__}).")


def _reader(checkpoint):
    import tensorflow as tf

    prefix = checkpoint
    for suffix in (".index", ".meta"):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
    if ".data-" in prefix:
        prefix = prefix.split(".data-")[0]
    if not os.path.exists(prefix + ".index"):
        raise FileNotFoundError(f"No TF checkpoint at {checkpoint!r} (expected {prefix}.index).")
    return tf.train.load_checkpoint(prefix)


def load_tensorpack_checkpoint(model, checkpoint):
    """Assign every weight of ``model`` (a ``ResNet18(variant="imagenet")``) from ``checkpoint``.

    All weights are read and checked before any is assigned. Raises
    ``ValueError`` naming missing or misshapen variables.
    """
    reader = _reader(checkpoint)
    available = reader.get_variable_to_shape_map()
    assignments, problems, used = [], [], set()
    for layer in model.layers:
        if not layer.weights:
            continue
        values = []
        for name, weight in zip(checkpoint_names(layer), layer.weights):
            if name not in available:
                problems.append(f"missing {name} (for {layer.name})")
                continue
            value = reader.get_tensor(name)
            used.add(name)
            if isinstance(layer, WinogradReLUConv2D):
                value = winograd.from_paper_layout(value)
            if tuple(value.shape) != tuple(weight.shape):
                problems.append(f"{name}: shape {value.shape}, {layer.name} needs {tuple(weight.shape)}")
            values.append(value)
        assignments.append((layer, values))
    if problems:
        raise ValueError("The checkpoint does not fit ResNet18(variant='imagenet'): "
                         + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))
    for layer, values in assignments:
        layer.set_weights([np.asarray(v) for v in values])
    ignored = sorted(n for n in available if n not in used and not _is_training_state(n))
    return ignored


def _is_training_state(name):
    # Optimizer slots, step counters and EMA copies of summaries are not model weights.
    return any(part in name for part in ("Momentum", "global_step", "learning_rate", "Adam",
                                         "EMA/", "-summary"))


def convert_tensorpack_checkpoint(checkpoint, output, classes=1000):
    """Convert ``checkpoint`` to a ``.weights.h5`` for ``ResNet18(variant="imagenet")``; returns ``output``."""
    from keras_swcnn.applications import ResNet18

    if not output.endswith(".weights.h5"):
        raise ValueError(f"The output must be a '.weights.h5' file, got {output!r}.")
    model = ResNet18(variant="imagenet", classes=classes)
    load_tensorpack_checkpoint(model, checkpoint)
    model.save_weights(output)
    return output
