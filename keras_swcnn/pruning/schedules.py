"""Pruning schedules with tfmot's names and semantics, written with ``keras.ops``.

A schedule is called with the current training step (the first training
batch is step 1) and returns ``(should_prune, sparsity)``: a boolean and a
float32 scalar tensor, exactly as ``tfmot.sparsity.keras`` schedules do, so
they run inside traced training steps on every backend.

Example:
    >>> from keras_swcnn.pruning import PolynomialDecay
    >>> schedule = PolynomialDecay(0.0, 0.9, begin_step=0, end_step=1000, frequency=100)
    >>> should_prune, sparsity = schedule(500)
"""

import keras
from keras import ops


def _validate_steps(begin_step, end_step, frequency, allow_negative_1):
    # The same checks, in the same order, as tfmot's PruningSchedule._validate_step.
    if begin_step < 0:
        raise ValueError(f"begin_step should be >= 0, got {begin_step}.")
    if not allow_negative_1 and end_step == -1:
        raise ValueError("end_step cannot be -1 for this schedule.")
    if end_step != -1:
        if end_step < 0:
            raise ValueError(f"end_step can be -1 or >= 0, got {end_step}.")
        if end_step < begin_step:
            raise ValueError(
                f"begin_step should be <= end_step if end_step != -1, got "
                f"begin_step={begin_step}, end_step={end_step}."
            )
    if frequency <= 0:
        raise ValueError(f"frequency should be > 0, got {frequency}.")


def _validate_sparsity(sparsity, name):
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"{name} must be in range [0, 1), got {sparsity}.")


def _should_prune_in_step(step, begin_step, end_step, frequency):
    """True when ``begin_step <= step <= end_step`` (end -1: forever) and on a ``frequency`` turn."""
    step = ops.cast(step, "int32")
    in_range = ops.logical_and(
        ops.greater_equal(step, begin_step),
        ops.logical_or(ops.less_equal(step, end_step), end_step < 0),
    )
    on_turn = ops.equal(ops.mod(step - begin_step, frequency), 0)
    return ops.logical_and(in_range, on_turn)


class PruningSchedule:
    """Base class: ``schedule(step) -> (should_prune, sparsity)``; subclasses define ``__call__``."""

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_swcnn")
class ConstantSparsity(PruningSchedule):
    """Prune to ``target_sparsity`` every ``frequency`` steps in ``[begin_step, end_step]``.

    ``end_step=-1`` prunes until training ends (tfmot's semantics).

    Example:
        >>> schedule = ConstantSparsity(0.9, begin_step=100, frequency=50)
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        self.target_sparsity = target_sparsity
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency
        _validate_steps(begin_step, end_step, frequency, allow_negative_1=True)
        _validate_sparsity(target_sparsity, "target_sparsity")

    def __call__(self, step):
        return (
            _should_prune_in_step(step, self.begin_step, self.end_step, self.frequency),
            ops.convert_to_tensor(self.target_sparsity, dtype="float32"),
        )

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, "begin_step": self.begin_step,
                "end_step": self.end_step, "frequency": self.frequency}


@keras.saving.register_keras_serializable(package="keras_swcnn")
class PolynomialDecay(PruningSchedule):
    """Sparsity rising from ``initial_sparsity`` to ``final_sparsity`` over ``[begin_step, end_step]``.

    ``sparsity = final + (initial - final) * (1 - (step - begin) / (end - begin)) ** power``
    (Zhu & Gupta 2017), evaluated in float32 as tfmot does.

    Example:
        >>> schedule = PolynomialDecay(0.3, 0.9, begin_step=0, end_step=2000)
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3,
                 frequency=100):
        self.initial_sparsity = initial_sparsity
        self.final_sparsity = final_sparsity
        self.power = power
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency
        _validate_steps(begin_step, end_step, frequency, allow_negative_1=False)
        _validate_sparsity(initial_sparsity, "initial_sparsity")
        _validate_sparsity(final_sparsity, "final_sparsity")

    def __call__(self, step):
        progress = ops.cast(ops.cast(step, "int32") - self.begin_step, "float32") / ops.cast(
            self.end_step - self.begin_step, "float32")
        progress = ops.minimum(1.0, ops.maximum(0.0, progress))
        remaining = ops.power(1.0 - progress, ops.cast(self.power, "float32"))
        sparsity = ops.cast(self.initial_sparsity - self.final_sparsity, "float32") * remaining
        sparsity = sparsity + ops.cast(self.final_sparsity, "float32")
        return (
            _should_prune_in_step(step, self.begin_step, self.end_step, self.frequency),
            sparsity,
        )

    def get_config(self):
        return {"initial_sparsity": self.initial_sparsity, "final_sparsity": self.final_sparsity,
                "begin_step": self.begin_step, "end_step": self.end_step, "power": self.power,
                "frequency": self.frequency}


@keras.saving.register_keras_serializable(package="keras_swcnn")
class StepwiseSparsity(PruningSchedule):
    """The paper's iterative recipe: prune once to each sparsity at its step, retrain in between.

    ``boundaries`` are training steps (the first training batch is step 1),
    strictly increasing; ``sparsities[i]`` applies from ``boundaries[i]`` on.
    Pruning happens exactly at the boundary steps.

    Example (densities 0.7 -> 0.5 -> 0.35 -> 0.2 -> 0.1, 1000 steps per stage):
        >>> schedule = StepwiseSparsity.from_densities([0.7, 0.5, 0.35, 0.2, 0.1], 1000)
        >>> schedule.boundaries
        [1, 1001, 2001, 3001, 4001]
    """

    def __init__(self, boundaries, sparsities):
        boundaries = [int(b) for b in boundaries]
        sparsities = [float(s) for s in sparsities]
        if not boundaries or len(boundaries) != len(sparsities):
            raise ValueError(
                "boundaries and sparsities must be non-empty lists of the same length, got "
                f"{len(boundaries)} and {len(sparsities)}."
            )
        if boundaries[0] < 1:
            raise ValueError(f"boundaries are training steps >= 1, got {boundaries[0]}.")
        if any(b >= a for b, a in zip(boundaries, boundaries[1:])):
            raise ValueError(f"boundaries must be strictly increasing, got {boundaries}.")
        for i, s in enumerate(sparsities):
            _validate_sparsity(s, f"sparsities[{i}]")
        self.boundaries = boundaries
        self.sparsities = sparsities

    @classmethod
    def from_densities(cls, densities, steps_per_stage, begin_step=1):
        """Stages of ``steps_per_stage`` steps at the given weight densities (1 - sparsity)."""
        if steps_per_stage < 1:
            raise ValueError(f"steps_per_stage must be >= 1, got {steps_per_stage}.")
        boundaries = [begin_step + i * steps_per_stage for i in range(len(densities))]
        return cls(boundaries, [round(1.0 - d, 10) for d in densities])

    def __call__(self, step):
        step = ops.cast(step, "int32")
        boundaries = ops.convert_to_tensor(self.boundaries, dtype="int32")
        sparsities = ops.convert_to_tensor([0.0] + self.sparsities, dtype="float32")
        stage = ops.sum(ops.cast(ops.greater_equal(step, boundaries), "int32"))
        should_prune = ops.any(ops.equal(step, boundaries))
        return should_prune, ops.take(sparsities, stage)

    def get_config(self):
        return {"boundaries": list(self.boundaries), "sparsities": list(self.sparsities)}


_CLASSES = {cls.__name__: cls for cls in (ConstantSparsity, PolynomialDecay, StepwiseSparsity)}


def get(identifier):
    """A schedule from one of ours, a tfmot schedule object, or a config dict.

    Config dicts may be tfmot's (``{"class_name": ..., "config": {...}}``) or
    Keras-serialized ones.

    Example:
        >>> get({"class_name": "ConstantSparsity", "config": {"target_sparsity": 0.5, "begin_step": 0}})
        ConstantSparsity(target_sparsity=0.5, begin_step=0, end_step=-1, frequency=100)
    """
    if isinstance(identifier, PruningSchedule):
        return identifier
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        config = identifier.get("config", {})
        if name in _CLASSES:
            return _CLASSES[name].from_config(dict(config))
        # A user's subclass, registered with keras.saving.register_keras_serializable.
        registered = keras.saving.get_registered_object(name) if isinstance(name, str) else None
        if isinstance(registered, type) and issubclass(registered, PruningSchedule):
            return registered.from_config(dict(config))
        raise ValueError(
            f"Unknown pruning schedule {name!r}; supported: {sorted(_CLASSES)}, or a "
            "PruningSchedule subclass registered with keras.saving.register_keras_serializable."
        )
    # tfmot's schedules: their get_config() returns {"class_name", "config"}.
    get_config = getattr(identifier, "get_config", None)
    if get_config is not None and type(identifier).__name__ in _CLASSES:
        return get(get_config())
    raise ValueError(
        f"Expected a pruning schedule ({', '.join(sorted(_CLASSES))}, ours or tfmot's, or a "
        f"config dict), got {identifier!r}."
    )


def serialize(schedule):
    """A config dict (tfmot's ``{"class_name", "config"}`` form) that ``get`` accepts.

    Raises:
        ValueError: a subclass of ours that Keras could not find again when loading.
    """
    cls = type(schedule)
    if cls.__name__ in _CLASSES and _CLASSES[cls.__name__] is cls:
        return {"class_name": cls.__name__, "config": schedule.get_config()}
    name = keras.saving.get_registered_name(cls)
    if keras.saving.get_registered_object(name) is not cls:
        raise ValueError(
            f"The pruning schedule {cls.__name__} cannot be saved: register it with "
            "@keras.saving.register_keras_serializable() so that loading finds it.")
    return {"class_name": name, "config": schedule.get_config()}
