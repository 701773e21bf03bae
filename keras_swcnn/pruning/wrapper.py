"""``PruneLowMagnitude``: the Keras 3 wrapper that holds a layer's pruning state."""

import inspect

import keras
from keras import ops

from keras_swcnn.pruning import schedules
from keras_swcnn.pruning.masks import magnitude_mask

# Keras layers pruned in their own (spatial) domain, and the weights pruned.
_BUILTIN_PRUNABLE = {
    keras.layers.Dense: ("kernel",),
    keras.layers.Conv1D: ("kernel",),
    keras.layers.Conv2D: ("kernel",),
    keras.layers.Conv3D: ("kernel",),
}


def prunable_weights(layer):
    """The variables of ``layer`` that pruning masks, or ``None`` if it is not prunable.

    A layer that defines ``get_prunable_weights()`` (like tfmot's
    ``PrunableLayer``; ``WinogradReLUConv2D`` returns its Winograd-domain
    kernel) is pruned there; ``Dense`` and ``Conv1D/2D/3D`` prune their kernel.
    """
    if hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights())
    for cls, names in _BUILTIN_PRUNABLE.items():
        if type(layer) is cls:
            return [getattr(layer, name) for name in names]
    return None


def is_prunable(layer):
    """Whether ``prune_low_magnitude`` can wrap ``layer``."""
    return hasattr(layer, "get_prunable_weights") or type(layer) in _BUILTIN_PRUNABLE


@keras.saving.register_keras_serializable(package="keras_swcnn")
class PruneLowMagnitude(keras.layers.Wrapper):
    """Prunes the wrapped layer's weights by magnitude, following a pruning schedule.

    State (saved with the model): ``pruning_step`` (int32, starts at -1; the
    first training batch is step 1), and per pruned weight a ``mask`` and a
    ``threshold``. Inside every training ``call`` the step advances and, when
    the schedule says so, each mask is recomputed from the masked weights'
    magnitudes (tfmot's state machine, kept inside the traced ``call`` so it
    works on JAX too). The layer always computes with ``weight * mask``, so the
    weights it uses are exactly zero where pruned; ``UpdatePruningStep``
    also re-zeroes the stored weights after every batch, and
    ``strip_pruning`` bakes the masks in.

    Use ``keras_swcnn.pruning.prune_low_magnitude`` rather than this class.

    Example:
        >>> from keras_swcnn.layers import WinogradReLUConv2D
        >>> from keras_swcnn.pruning import ConstantSparsity
        >>> layer = PruneLowMagnitude(WinogradReLUConv2D(8), ConstantSparsity(0.9, 0))
    """

    def __init__(self, layer, pruning_schedule=None, **kwargs):
        if isinstance(layer, PruneLowMagnitude):
            raise ValueError(f"Layer {layer.name!r} is already pruned (a PruneLowMagnitude).")
        if not is_prunable(layer):
            raise ValueError(
                f"Cannot prune layer {layer.name!r} of type {type(layer).__name__}: supported are "
                "layers with get_prunable_weights() (e.g. WinogradReLUConv2D), "
                + ", ".join(cls.__name__ for cls in _BUILTIN_PRUNABLE) + "."
            )
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        super().__init__(layer, **kwargs)
        self.pruning_schedule = schedules.get(
            pruning_schedule if pruning_schedule is not None else schedules.ConstantSparsity(0.5, 0)
        )
        self._inner_takes_training = "training" in inspect.signature(layer.call).parameters

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self._pruned = prunable_weights(self.layer)
        self.pruning_step = self.add_weight(
            name="pruning_step", shape=(), dtype="int32",
            initializer=keras.initializers.Constant(-1), trainable=False,
        )
        self.masks = []
        self.thresholds = []
        for i, weight in enumerate(self._pruned):
            self.masks.append(self.add_weight(
                name=f"mask_{i}", shape=weight.shape, dtype=weight.dtype,
                initializer="ones", trainable=False,
            ))
            self.thresholds.append(self.add_weight(
                name=f"threshold_{i}", shape=(), dtype=weight.dtype,
                initializer="zeros", trainable=False,
            ))
        self.built = True

    def _update_masks(self):
        step = ops.maximum(self.pruning_step, 0) + 1
        self.pruning_step.assign(step)
        should_prune, sparsity = self.pruning_schedule(step)
        for weight, mask, threshold in zip(self._pruned, self.masks, self.thresholds):
            new_mask, new_threshold = ops.cond(
                should_prune,
                lambda w=weight, m=mask: magnitude_mask(w.value * m.value, sparsity),
                lambda m=mask, t=threshold: (m.value, t.value),
            )
            mask.assign(new_mask)
            threshold.assign(new_threshold)

    def masked_weights(self):
        """The pruned weights as the layer uses them (``weight * mask``), in order."""
        return [w.value * m.value for w, m in zip(self._pruned, self.masks)]

    def call(self, inputs, training=False):
        if training:
            self._update_masks()
        pruned = {id(w): m for w, m in zip(self._pruned, self.masks)}

        def value(v):  # masked wherever the weight sits: a frozen layer's are non-trainable
            return v.value * pruned[id(v)].value if id(v) in pruned else v.value

        trainable = [value(v) for v in self.layer.trainable_variables]
        non_trainable = [value(v) for v in self.layer.non_trainable_variables]
        kwargs = {"training": training} if self._inner_takes_training else {}
        outputs, updates = self.layer.stateless_call(trainable, non_trainable, inputs, **kwargs)
        for variable, update in zip(self.layer.non_trainable_variables, updates):
            if id(variable) not in pruned:  # state (e.g. BN statistics), never the weights
                variable.assign(update)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config["pruning_schedule"] = schedules.serialize(self.pruning_schedule)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"),
                                                      custom_objects=custom_objects)
        return cls(layer, **config)
