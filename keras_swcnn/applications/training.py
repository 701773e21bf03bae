"""Training ResNet-18 (small variant) on Fashion-MNIST, with Winograd-domain pruning; resumable.

Shared by the ``swcnn demo`` / ``swcnn train`` / ``swcnn compare`` commands and
the recipes in ``applications/`` that produce the published weights.

A run is a sequence of *phases* (dense training, then pruning), each one
``fit`` call. Given a ``run_dir``, every phase keeps a checkpoint there after
each epoch (Keras's ``BackupAndRestore``: weights, optimizer state and epoch)
and a CSV log of its epochs; a finished phase leaves its weights and a JSON
record. ``resume=True`` skips finished phases and continues the unfinished one
from its last epoch, with the same batches (``augmentation.AugmentedBatches``)
and learning rate an uninterrupted run would have had.

Example:
    >>> from keras_swcnn.applications.training import Recipe, train_fashion_mnist
    >>> recipe = Recipe(epochs=1, prune_densities=(0.5, 0.1))
    >>> result = train_fashion_mnist(width=16, recipe=recipe, run_dir="run")  # doctest: +SKIP
    >>> result = train_fashion_mnist(width=16, recipe=recipe, run_dir="run", resume=True)  # doctest: +SKIP
"""

import dataclasses
import json
import math
import os
import shutil
import time
import zlib

import numpy as np
import keras

from keras_swcnn import analysis, pruning
from keras_swcnn.applications import ResNet18
from keras_swcnn.applications.augmentation import AugmentedBatches
from keras_swcnn.datasets import fashion_mnist

OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a network is trained and pruned.

    Attributes:
        epochs: dense training epochs.
        batch_size: images per step.
        optimizer: ``"sgd"`` (Nesterov momentum 0.9) or ``"adam"``.
        learning_rate: peak learning rate; cosine-decayed to
            ``learning_rate * final_fraction`` over dense training.
        warmup_epochs: linear warm-up from 0 at the start of dense training.
        final_fraction: the cosine's floor, as a fraction of its start.
        augment: random crop (pad 2), horizontal flip and random erasing.
        prune_densities: Winograd weight densities to prune to, in order
            (empty: no pruning).
        prune_epochs: epochs of pruning and fine-tuning, all stages together.
        prune_learning_rate: learning rate of the pruning phase, as a
            fraction of ``learning_rate`` (constant while it prunes step by step,
            then cosine-decayed like the dense phase's over the steps at the
            final density; ``swcnn compare``'s stages, pruned at their start,
            decay it throughout).
        seed: initial weights, batch order and augmentation.
    """

    epochs: int = 2
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 2e-3
    warmup_epochs: float = 0.0
    final_fraction: float = 0.05
    augment: bool = False
    prune_densities: tuple = (0.5, 0.3, 0.2, 0.1)
    prune_epochs: float = 1.0
    prune_learning_rate: float = 0.25
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        if self.epochs < 0 or self.prune_epochs < 0 or self.warmup_epochs < 0:
            raise ValueError("epochs, prune_epochs and warmup_epochs must be >= 0, got "
                             f"{self.epochs}, {self.prune_epochs}, {self.warmup_epochs}.")
        if self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(f"batch_size must be >= 1 and learning_rate > 0, got {self.batch_size} "
                             f"and {self.learning_rate}.")
        for density in self.prune_densities:
            if not 0 < density <= 1:
                raise ValueError(f"Densities must be in (0, 1], got {density}.")
        object.__setattr__(self, "prune_densities", tuple(float(d) for d in self.prune_densities))

    def as_dict(self):
        return dataclasses.asdict(self)


#: The recipe of the shipped width-16 weights (``fashion_mnist_small``): 2 + 1 epochs, Adam. (They
#: were trained with Keras's own shuffling and a constant rate while pruning; a run of it now draws
#: other batches and other weights.)
SMALL = Recipe()
#: ``swcnn demo``: one dense epoch, then one pruning epoch at the dense phase's peak rate (from
#: one dense epoch the network is still learning: a quarter of the rate ended 1.0 point below
#: the dense accuracy, the full rate 0.3 above it; docs/results.md).
DEMO = Recipe(epochs=1, prune_learning_rate=1.0)
#: The full recipe of ``swcnn train`` (docs/results.md: how it was chosen).
FULL = Recipe(epochs=40, optimizer="sgd", learning_rate=0.05, warmup_epochs=1.0, final_fraction=0.0,
              augment=True, prune_epochs=8, prune_learning_rate=0.1)


@dataclasses.dataclass
class TrainingResult:
    model: keras.Model
    dense_accuracy: float
    accuracy: float
    report: analysis.Report
    seconds: float
    logs: list = dataclasses.field(default_factory=list)  # CSV logs of the phases, in order


def load_fashion_mnist(train_samples=None, test_samples=None):
    """Fashion-MNIST as float32 in [0, 1], shape (N, 28, 28, 1)."""
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    x_train = (x_train[:train_samples, ..., None] / 255.0).astype("float32")
    x_test = (x_test[:test_samples, ..., None] / 255.0).astype("float32")
    return (x_train, y_train[:train_samples]), (x_test, y_test[:test_samples])


def accuracy(model, x, y):
    """Top-1 accuracy of ``model`` (logits or probabilities) on ``(x, y)``."""
    logits = model.predict(x, batch_size=500, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == y))


def is_pruned_conv(layer):
    """The layers the paper prunes: the 3x3 convolutions of the residual branches, in any variant."""
    return layer.name.endswith(("_branch2a", "_branch2b"))


class RunDirectory:
    """A training run's folder: per phase a checkpoint, a CSV log and, once done, weights + a record.

    Example:
        >>> run = RunDirectory("run", resume=False)  # doctest: +SKIP
        >>> run.record("dense")  # None until the phase is finished  # doctest: +SKIP
    """

    def __init__(self, directory, resume, settings=None):
        self.directory = os.fspath(directory)
        if os.path.isdir(self.directory) and os.listdir(self.directory) and not resume:
            raise ValueError(f"{self.directory} already holds a run: resume it (--resume) or choose "
                             "an empty folder.")
        os.makedirs(self.directory, exist_ok=True)
        if settings is not None:
            self._check_settings(json.loads(json.dumps(settings)))

    def _check_settings(self, settings):
        """A resumed run must be the same run: same recipe, width and data."""
        path = os.path.join(self.directory, "run.json")
        if os.path.exists(path):
            with open(path) as f:
                recorded = json.load(f)
            if recorded != settings:
                changed = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))
                raise ValueError(f"{self.directory} holds a run with other settings ({', '.join(changed)}: "
                                 f"{[recorded.get(k) for k in changed]} there, "
                                 f"{[settings.get(k) for k in changed]} now).")
        else:
            with open(path, "w") as f:
                json.dump(settings, f, indent=1)

    def _path(self, phase, suffix):
        return os.path.join(self.directory, phase + suffix)

    def log(self, phase):
        return self._path(phase, ".csv")

    def record(self, phase):
        """The record of a finished phase, or None."""
        path = self._path(phase, ".json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def load(self, phase, model):
        """The weights (and random state) ``model`` had when ``phase`` finished."""
        model.load_weights(self._path(phase, ".weights.h5"))
        restore_random_state(model, self._path(phase, ".random.npz"))

    def callbacks(self, phase):
        return [EpochCheckpoint(self._path(phase, "_checkpoint")),
                keras.callbacks.CSVLogger(self.log(phase), append=True)]

    def finish(self, phase, model, record):
        """Keep the phase's weights and record; its checkpoint is no longer needed."""
        model.save_weights(self._path(phase, ".weights.h5"))
        save_random_state(model, self._path(phase, ".random.npz"))
        with open(self._path(phase, ".json"), "w") as f:
            json.dump(record, f, indent=1)
        shutil.rmtree(self._path(phase, "_checkpoint"), ignore_errors=True)


def _unsaved_variables(model):
    # By position: a rebuilt model's variables get new paths (seed_generator_1, ...).
    saved = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in saved]


def save_random_state(model, path):
    """What Keras's weights files leave out and a resumed run needs: seed-generator states
    (dropout's) and, on torch, the global generator an unseeded ``Dropout`` draws from.

    Example:
        >>> save_random_state(model, "run/dense.random.npz")  # doctest: +SKIP
        >>> restore_random_state(model, "run/dense.random.npz")  # doctest: +SKIP
    """
    states = {f"v{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(_unsaved_variables(model))}
    if keras.backend.backend() == "torch":
        import torch

        states["torch"] = torch.random.get_rng_state().numpy()
        if torch.cuda.is_available():
            states["torch_cuda"] = np.stack([s.numpy() for s in torch.cuda.get_rng_state_all()])
    np.savez(path + ".tmp.npz", **states)
    os.replace(path + ".tmp.npz", path)


def restore_random_state(model, path):
    """Undo ``save_random_state`` (nothing if ``path`` does not exist)."""
    if not os.path.exists(path):
        return
    with np.load(path) as state:
        variables = _unsaved_variables(model)
        if len([name for name in state.files if name.startswith("v")]) != len(variables):
            raise ValueError(f"{path} holds the random state of another model.")
        for i, variable in enumerate(variables):
            variable.assign(state[f"v{i}"])
        if keras.backend.backend() == "torch" and "torch" in state.files:
            import torch

            torch.random.set_rng_state(torch.from_numpy(state["torch"]))
            if "torch_cuda" in state.files and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([torch.from_numpy(s) for s in state["torch_cuda"]])


class EpochCheckpoint(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` after every epoch, random-number state included.

    Keras's weights files leave out the layers' seed generators (dropout's),
    so a run resumed from them would draw other dropout masks than an
    uninterrupted one; their states are kept next to the weights
    (``save_random_state``).

    Example:
        >>> model.fit(batches, epochs=3, callbacks=[EpochCheckpoint("run/dense_checkpoint")])  # doctest: +SKIP
    """

    def __init__(self, backup_dir):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self._state_path = os.path.join(backup_dir, "random_state.npz")

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        restore_random_state(self.model, self._state_path)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        save_random_state(self.model, self._state_path)


def _optimizer(recipe, schedule):
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    return keras.optimizers.Adam(schedule)


def _schedule(recipe, learning_rate, steps, warmup_steps=0, hold_steps=0):
    """Cosine decay over ``steps``, after either a linear warm-up from 0 over ``warmup_steps``
    or ``hold_steps`` at the rate itself (CosineDecay's warm-up from the rate to the rate)."""
    if warmup_steps > 0 and hold_steps > 0:
        raise ValueError(f"A warm-up ({warmup_steps} steps) and a hold ({hold_steps} steps) "
                         "cannot both come before the cosine; give one.")
    before = min(hold_steps or warmup_steps, steps - 1)
    if before > 0:
        return keras.optimizers.schedules.CosineDecay(
            learning_rate if hold_steps else 0.0, steps - before, alpha=recipe.final_fraction,
            warmup_target=learning_rate, warmup_steps=before)
    return keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=recipe.final_fraction)


def fit_phase(model, phase, data, recipe, epochs, learning_rate, run=None, validation=None,
              warmup_epochs=0.0, hold_steps=0, callbacks=(), verbose=2):
    """One resumable ``fit``: ``epochs`` (may be fractional) of augmented batches, cosine schedule.

    ``hold_steps`` keeps the learning rate constant for that many steps before
    the cosine starts (a phase that prunes step by step needs it as high at
    its last stage as at its first; the steps at the final density then
    fine-tune with it decaying).
    A fractional epoch count is run as ``ceil(epochs)`` shorter epochs of
    ``epochs * batches / ceil(epochs)`` batches each (each a fresh shuffle).
    ``phase`` names the checkpoint and log in ``run`` and seeds the batches.
    """
    if epochs <= 0:
        return
    x, y = data
    full = math.ceil(len(x) / recipe.batch_size)
    fit_epochs = math.ceil(epochs)
    batches = AugmentedBatches(x, y, recipe.batch_size, seed=(recipe.seed, _phase_seed(phase)),
                               augment=recipe.augment,
                               steps=max(1, round(epochs * full / fit_epochs)))
    steps = fit_epochs * len(batches)
    schedule = _schedule(recipe, learning_rate, steps, round(warmup_epochs * len(batches)),
                         hold_steps)
    model.compile(_optimizer(recipe, schedule),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    all_callbacks = [batches.epoch_callback(), *callbacks] + (run.callbacks(phase) if run else [])
    # shuffle=False: the batches are shuffled by their own seeded generator; Keras's shuffle of
    # their order would draw from the global generator, which a checkpoint does not hold.
    model.fit(batches, epochs=fit_epochs, validation_data=validation, callbacks=all_callbacks,
              shuffle=False, verbose=verbose)


def _phase_seed(phase):
    return zlib.crc32(phase.encode())


def build_model(width, **architecture):
    return ResNet18(variant="small", input_shape=(28, 28, 1), classes=10, width=width,
                    classifier_activation=None, **architecture)


def dense_phase(model, recipe, data, test, run, validate, verbose, log):
    record = run.record("dense") if run else None
    if record is not None:
        run.load("dense", model)
        log(f"dense training: done before (test accuracy {record['accuracy']:.4f})")
        return record["accuracy"]
    fit_phase(model, "dense", data, recipe, recipe.epochs, recipe.learning_rate, run,
              test if validate else None, recipe.warmup_epochs, verbose=verbose)
    dense_accuracy = accuracy(model, *test)
    if run:
        run.finish("dense", model, {"accuracy": dense_accuracy})
    log(f"dense test accuracy: {dense_accuracy:.4f}")
    return dense_accuracy


def train_fashion_mnist(width=16, recipe=SMALL, train_samples=None, test_samples=None, run_dir=None,
                        resume=False, validate=False, verbose=2, log=print, **architecture):
    """Train ``ResNet18(variant="small")`` on Fashion-MNIST; then prune its Winograd kernels.

    Args:
        width: first-stage width (stages are width x 1, 2, 4, 8).
        recipe: a ``Recipe`` (``DEMO``, ``SMALL``: the shipped weights', ``FULL``: the long one).
            The pruning phase takes the Winograd kernels through
            ``recipe.prune_densities`` in equal stages (stepwise, the paper's
            iterative recipe in one ``fit``), fine-tuning at the last one.
        train_samples, test_samples: use the first N images (quick runs).
        run_dir: folder for checkpoints, logs and finished phases (None: none).
        resume: continue the run in ``run_dir``.
        validate: test accuracy after every epoch (in the logs; nothing is
            chosen by it).
        **architecture: more ``ResNet18`` arguments (``conv``, ``winograd_activation``).

    Returns:
        A ``TrainingResult`` with the (stripped) model, dense and final test
        accuracy, the multiplication report and the phases' CSV logs.
    """
    start = time.perf_counter()
    settings = dict(recipe=recipe.as_dict(), width=width, train_samples=train_samples,
                    test_samples=test_samples, architecture=architecture)
    run = RunDirectory(run_dir, resume, settings) if run_dir else None
    keras.utils.set_random_seed(recipe.seed)
    data, test = load_fashion_mnist(train_samples, test_samples)
    model = build_model(width, **architecture)
    dense_accuracy = dense_phase(model, recipe, data, test, run, validate, verbose, log)
    final_accuracy = dense_accuracy
    phases = ["dense"]
    if recipe.prune_densities:
        phases.append("prune")
        record = run.record("prune") if run else None
        if record is not None:
            run.load("prune", model)
            final_accuracy = record["accuracy"]
        else:
            batches_per_epoch = math.ceil(len(data[0]) / recipe.batch_size)
            stage_steps = max(1, int(recipe.prune_epochs * batches_per_epoch)
                              // (len(recipe.prune_densities) + 1))
            pruned = pruning.prune_low_magnitude(
                model, pruning.StepwiseSparsity.from_densities(list(recipe.prune_densities), stage_steps),
                filter_fn=is_pruned_conv)
            # Constant until the final density is in place, then decayed while it fine-tunes.
            final_density_step = 1 + (len(recipe.prune_densities) - 1) * stage_steps
            fit_phase(pruned, "prune", data, recipe, recipe.prune_epochs,
                      recipe.learning_rate * recipe.prune_learning_rate, run, test if validate else None,
                      hold_steps=final_density_step,
                      callbacks=[pruning.UpdatePruningStep(), pruning.PruningSummaries()],
                      verbose=verbose)
            model = pruning.strip_pruning(pruned)
            final_accuracy = accuracy(model, *test)
            if run:
                run.finish("prune", model, {"accuracy": final_accuracy})
    report = analysis.multiplication_report(model, test[0][:256])
    logs = [run.log(phase) for phase in phases] if run else []
    return TrainingResult(model, dense_accuracy, final_accuracy, report, time.perf_counter() - start, logs)
