"""Winograd-domain magnitude pruning for Keras 3, with tfmot's names and semantics.

Example:
    >>> import keras
    >>> from keras_swcnn.layers import WinogradReLUConv2D
    >>> from keras_swcnn import pruning
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), WinogradReLUConv2D(4),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> pruned = pruning.prune_low_magnitude(model, pruning.ConstantSparsity(0.9, 1, frequency=1))
    >>> pruned.compile("adam", "mse")
    >>> # pruned.fit(x, y, callbacks=[pruning.UpdatePruningStep()])
    >>> final = pruning.strip_pruning(pruned)
"""

from keras_swcnn.pruning.api import (
    prune_low_magnitude,
    pruned_layers,
    strip_pruning,
    weight_sparsity,
)
from keras_swcnn.pruning.callbacks import PruningSummaries, UpdatePruningStep
from keras_swcnn.pruning.masks import magnitude_mask
from keras_swcnn.pruning.schedules import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
    StepwiseSparsity,
)
from keras_swcnn.pruning.wrapper import PruneLowMagnitude, is_prunable, prunable_weights

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PruneLowMagnitude",
    "PruningSchedule",
    "PruningSummaries",
    "StepwiseSparsity",
    "UpdatePruningStep",
    "is_prunable",
    "magnitude_mask",
    "prunable_weights",
    "prune_low_magnitude",
    "pruned_layers",
    "strip_pruning",
    "weight_sparsity",
]
