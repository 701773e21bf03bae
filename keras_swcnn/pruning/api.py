"""``prune_low_magnitude`` and ``strip_pruning`` for layers, lists of layers and models."""

import keras
from keras import ops

from keras_swcnn.pruning import schedules
from keras_swcnn.pruning.wrapper import PruneLowMagnitude, is_prunable


def _is_model(obj):
    return isinstance(obj, keras.Model)


def _check_not_pruned(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, PruneLowMagnitude):
            raise ValueError(
                f"Model {model.name!r} is already pruned (layer {layer.name!r}); "
                "call strip_pruning first to prune it again."
            )


def _check_cloneable(model):
    if not isinstance(model, keras.Sequential) and not getattr(model, "_is_graph_network", False) \
            and type(model).__name__ != "Functional":
        raise ValueError(
            f"Only Sequential and functional models can be pruned as a whole; {model.name!r} "
            "is a subclassed model: prune its layers instead."
        )


def prune_low_magnitude(to_prune, pruning_schedule=None, filter_fn=None):
    """Wrap prunable layers so their weights are pruned by magnitude during training.

    Mirrors ``tfmot.sparsity.keras.prune_low_magnitude`` for Keras 3 on every
    backend. ``WinogradReLUConv2D`` is pruned in the Winograd domain (its
    ``get_prunable_weights()``); ``Dense`` and ``Conv1D/2D/3D`` in their own.

    Args:
        to_prune: a layer, a list of layers, or a Sequential/functional model.
            For a model, every prunable layer (that ``filter_fn`` accepts) is
            wrapped and the others are left as they are; the returned model
            shares the original's weights.
        pruning_schedule: one of ``keras_swcnn.pruning``'s schedules, a tfmot
            schedule, or a config dict (default ``ConstantSparsity(0.5, 0)``).
        filter_fn: optional ``layer -> bool`` choosing the layers of a model
            to prune, e.g. ``lambda layer: isinstance(layer, WinogradReLUConv2D)``
            (the paper prunes only the Winograd layers).

    Raises:
        ValueError: for a layer that cannot be pruned (named explicitly), an
            already pruned layer or model, or a subclassed model.

    Example:
        >>> import keras
        >>> from keras_swcnn.layers import WinogradReLUConv2D
        >>> from keras_swcnn.pruning import ConstantSparsity, prune_low_magnitude
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), WinogradReLUConv2D(4),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> pruned = prune_low_magnitude(
        ...     model, ConstantSparsity(0.9, begin_step=1, frequency=10),
        ...     filter_fn=lambda layer: isinstance(layer, WinogradReLUConv2D))
    """
    schedule = schedules.get(
        pruning_schedule if pruning_schedule is not None else schedules.ConstantSparsity(0.5, 0)
    )
    if isinstance(to_prune, (list, tuple)):
        return [prune_low_magnitude(layer, schedule) for layer in to_prune]
    if _is_model(to_prune):
        _check_cloneable(to_prune)
        _check_not_pruned(to_prune)

        def wrap(layer):
            if is_prunable(layer) and (filter_fn is None or filter_fn(layer)):
                return PruneLowMagnitude(layer, schedule)
            return layer

        return keras.models.clone_model(to_prune, clone_function=wrap, recursive=True)
    if isinstance(to_prune, keras.layers.Layer):
        return PruneLowMagnitude(to_prune, schedule)
    raise ValueError(
        f"prune_low_magnitude takes a layer, a list of layers or a model, got {type(to_prune).__name__}."
    )


def _strip_layer(layer):
    if not isinstance(layer, PruneLowMagnitude):
        return layer
    if layer.built:
        for weight, masked in zip(layer._pruned, layer.masked_weights()):
            weight.assign(masked)
    return layer.layer


def strip_pruning(model):
    """Remove the pruning wrappers, keeping the pruned weights (masks baked in).

    Takes a model or a single ``PruneLowMagnitude``; returns a model (or layer)
    of plain layers computing the same outputs as the pruned one.

    Example:
        >>> final = strip_pruning(pruned)  # doctest: +SKIP
    """
    if isinstance(model, PruneLowMagnitude):
        return _strip_layer(model)
    if not _is_model(model):
        raise ValueError(f"strip_pruning takes a model or a pruned layer, got {type(model).__name__}.")
    _check_cloneable(model)
    # Recursive, as pruned_layers is: wrappers inside nested models go too.
    return keras.models.clone_model(model, clone_function=_strip_layer, recursive=True)


def pruned_layers(model):
    """All ``PruneLowMagnitude`` layers of a model, nested models included."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, PruneLowMagnitude)]


def weight_sparsity(layer):
    """Fraction of zeros in a pruned layer's masked weights (all its pruned weights together)."""
    zeros = total = 0
    for masked in layer.masked_weights():
        values = ops.convert_to_numpy(masked)
        zeros += int((values == 0).sum())
        total += values.size
    return zeros / max(total, 1)
