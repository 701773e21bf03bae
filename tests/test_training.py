"""The training recipe: augmentation, resumable phases, curves, the variant comparison."""

import os

import numpy as np
import pytest
import keras

from keras_swcnn.applications import augmentation, comparison, curves, training
from keras_swcnn.datasets import fashion_mnist
from keras_swcnn.layers import WinogradReLUConv2D

needs_fashion_mnist = pytest.mark.skipif(fashion_mnist.find_files() is None,
                                         reason="Fashion-MNIST not installed")


def _distinct_images(rng, n, h=9, w=7):
    # Every pixel value distinct and > 1, so a shifted/mirrored copy is identified exactly and
    # neither the zero fill nor the [0, 1) noise of the erasing can be mistaken for it.
    return (2 + rng.permutation(n * h * w)).reshape(n, h, w, 1).astype(np.float32)


def _explains(original, image, pad):
    """Some shift within ``pad``, mirrored or not, gives ``image`` outside one rectangle of noise."""
    h, w, _ = original.shape
    padded = np.pad(original, ((pad, pad), (pad, pad), (0, 0)))
    for top in range(2 * pad + 1):
        for left in range(2 * pad + 1):
            crop = padded[top:top + h, left:left + w]
            for candidate in (crop, crop[:, ::-1]):
                differs = np.any(candidate != image, axis=-1)
                if not differs.any():
                    return True
                rows, cols = np.nonzero(differs)
                box = image[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
                if np.all((box >= 0) & (box < 1)):  # one rectangle, all noise
                    return True
    return False


@pytest.mark.backend_independent
def test_augmented_images_are_shifted_mirrored_and_erased_copies(rng):
    x = _distinct_images(rng, 64)
    out = augmentation.augment_images(x, np.random.default_rng(3), pad=2, erase_probability=0.5)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert all(_explains(a, b, 2) for a, b in zip(x, out))
    changed = [not np.array_equal(a, b) for a, b in zip(x, out)]
    assert 0.5 < np.mean(changed) <= 1.0
    erased = [np.any((b >= 0) & (b < 1) & (b != 0)) for b in out]
    assert 0.2 < np.mean(erased) < 0.8  # about half the images get an erasing


@pytest.mark.backend_independent
def test_each_transform_alone(rng):
    x = _distinct_images(rng, 32)
    flipped = augmentation.random_flip(x, np.random.default_rng(0))
    mirrored = [np.array_equal(b, a[:, ::-1]) for a, b in zip(x, flipped)]
    kept = [np.array_equal(b, a) for a, b in zip(x, flipped)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 0 < np.mean(mirrored) < 1
    shifted = augmentation.random_crop(x, np.random.default_rng(0), pad=3)
    assert all(_explains(a, b, 3) for a, b in zip(x, shifted))
    # a shift moves zeros in: the pixel sum drops unless the offset is (pad, pad)
    assert np.mean(shifted.sum(axis=(1, 2, 3)) < x.sum(axis=(1, 2, 3))) > 0.7
    np.testing.assert_array_equal(augmentation.augment_images(x, np.random.default_rng(0), pad=0, flip=False,
                                                              erase_probability=0), x)


@pytest.mark.backend_independent
def test_batches_are_reproducible_per_epoch_and_cover_the_data(rng):
    x = _distinct_images(rng, 10)
    y = np.arange(10)
    batches = augmentation.AugmentedBatches(x, y, 4, seed=(7, 1), augment=False)
    assert len(batches) == 3
    seen = np.concatenate([batches[i][1] for i in range(3)])
    assert sorted(seen) == list(range(10))
    for i in range(3):
        xb, yb = batches[i]
        np.testing.assert_array_equal(xb, x[yb])  # labels travel with their images
    first = [batches[i][1] for i in range(3)]
    batches.set_epoch(1)
    assert any(not np.array_equal(a, batches[i][1]) for i, a in enumerate(first))
    batches.set_epoch(0)
    assert all(np.array_equal(a, batches[i][1]) for i, a in enumerate(first))
    augmented = augmentation.AugmentedBatches(x, y, 4, seed=(7, 1))
    again = augmentation.AugmentedBatches(x, y, 4, seed=(7, 1))
    augmented.set_epoch(3)
    again.set_epoch(3)
    np.testing.assert_array_equal(augmented[2][0], again[2][0])  # a fresh dataset, the same draws
    assert len(augmentation.AugmentedBatches(x, y, 4, steps=2)) == 2
    with pytest.raises(IndexError):
        batches[3]


@pytest.mark.backend_independent
@pytest.mark.parametrize("bad", [dict(x=np.zeros((3, 4, 4))), dict(y=np.zeros(2)), dict(batch_size=0),
                                 dict(steps=0)])
def test_batches_refuse_bad_input(bad):
    arguments = dict(x=np.zeros((3, 4, 4, 1)), y=np.zeros(3), batch_size=2)
    arguments.update(bad)
    with pytest.raises(ValueError):
        augmentation.AugmentedBatches(**arguments)


@pytest.mark.backend_independent
def test_recipe_refuses_bad_values():
    with pytest.raises(ValueError, match="optimizer"):
        training.Recipe(optimizer="rmsprop")
    with pytest.raises(ValueError, match="Densities"):
        training.Recipe(prune_densities=(0.5, 0.0))
    with pytest.raises(ValueError):
        training.Recipe(epochs=-1)


@pytest.mark.backend_independent
@pytest.mark.parametrize("hold, warmup", [(0, 0), (7, 0), (0, 5), (30, 0)])
def test_learning_rate_holds_or_warms_up_then_follows_a_cosine(hold, warmup):
    recipe = training.Recipe(final_fraction=0.1)
    steps, rate = 23, 0.4
    schedule = training._schedule(recipe, rate, steps, warmup_steps=warmup, hold_steps=hold)
    hold = min(hold, steps - 1)
    start = hold or warmup
    for step in range(steps + 3):
        if step < warmup and not hold:
            expected = rate * step / warmup
        elif step < hold:
            expected = rate
        else:
            progress = min(step - start, steps - start) / (steps - start)
            expected = rate * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-7), step


@pytest.mark.backend_independent
def test_learning_rate_refuses_a_warm_up_and_a_hold_together():
    with pytest.raises(ValueError, match="warm-up .* and a hold"):
        training._schedule(training.Recipe(), 0.1, 20, warmup_steps=3, hold_steps=5)


class _Interrupt(Exception):
    pass


class _StopAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Interrupt()


def _small_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((9, 7, 1)), keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.BatchNormalization(), WinogradReLUConv2D(6),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.3), keras.layers.Dense(10)])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_resumed_phase_ends_exactly_where_an_uninterrupted_one_does(rng, tmp_path, optimizer):
    data = (_distinct_images(rng, 48) / 400.0, rng.integers(0, 10, 48))
    recipe = training.Recipe(epochs=3, batch_size=16, optimizer=optimizer, learning_rate=0.01,
                             warmup_epochs=1, augment=True)

    def phase(model, run, callbacks=()):
        training.fit_phase(model, "dense", data, recipe, 3, recipe.learning_rate, run,
                           callbacks=list(callbacks), verbose=0)

    whole = _small_model(0)
    phase(whole, training.RunDirectory(tmp_path / "whole", resume=False))
    interrupted = _small_model(0)
    with pytest.raises(_Interrupt):
        phase(interrupted, training.RunDirectory(tmp_path / "parts", resume=False), [_StopAt(2)])
    with pytest.raises(ValueError, match="resume"):
        training.RunDirectory(tmp_path / "parts", resume=False)
    resumed = _small_model(1)  # other initial weights and dropout seed: all must come from the checkpoint
    phase(resumed, training.RunDirectory(tmp_path / "parts", resume=True))
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    logged = curves.read_log(str(tmp_path / "parts" / "dense.csv"))
    assert [row["epoch"] for row in logged] == [0, 1, 2]
    assert logged == curves.read_log(str(tmp_path / "whole" / "dense.csv"))


def test_a_finished_phase_keeps_its_random_state_and_its_settings(rng, tmp_path):
    # Dropout's seed state at the end of a phase is where the next phase starts: a run resumed
    # between phases must start from it too.
    model = _small_model(0)
    dropout = model.layers[-2]
    dropout(np.ones((4, 6), "float32"), training=True)  # advances its seed generator
    state = keras.ops.convert_to_numpy(dropout.seed_generator.state).copy()
    run = training.RunDirectory(tmp_path / "run", resume=False, settings={"width": 4})
    run.finish("dense", model, {"accuracy": 0.5})
    fresh = _small_model(1)
    training.RunDirectory(tmp_path / "run", resume=True, settings={"width": 4}).load("dense", fresh)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fresh.layers[-2].seed_generator.state), state)
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="other settings"):
        training.RunDirectory(tmp_path / "run", resume=True, settings={"width": 8})


@pytest.mark.backend_independent
def test_curves_keep_the_last_line_of_an_epoch_and_plot(tmp_path):
    log = tmp_path / "dense.csv"
    log.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.2,NA,NA\n1,0.6,1.0,0.55,1.1\n"
                   "1,0.7,0.9,0.65,1.0\n")
    rows = curves.read_log(str(log))
    assert [(r["epoch"], r["accuracy"], r["val_loss"]) for r in rows] == [(0, 0.5, None), (1, 0.7, 1.0)]
    png = curves.plot_training_curves([str(log), str(tmp_path / "missing.csv")], str(tmp_path / "c.png"))
    with open(png, "rb") as f:
        assert f.read(4) == b"\x89PNG"


@pytest.mark.once_per_run
@needs_fashion_mnist
def test_training_resumes_after_its_finished_phases(tmp_path):
    recipe = training.Recipe(epochs=1, prune_densities=(0.5, 0.2), prune_epochs=1, augment=True)
    arguments = dict(width=4, recipe=recipe, train_samples=256, test_samples=128,
                     run_dir=str(tmp_path / "run"), verbose=0, log=lambda *a: None)
    first = training.train_fashion_mnist(**arguments)
    assert [os.path.basename(p) for p in first.logs] == ["dense.csv", "prune.csv"]
    weights = [w.copy() for w in first.model.get_weights()]
    again = training.train_fashion_mnist(resume=True, **arguments)  # both phases done: nothing trains
    for a, b in zip(weights, again.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert (again.dense_accuracy, again.accuracy) == (first.dense_accuracy, first.accuracy)
    winograd = [r for r in again.report.layers if r.kind == "winograd"]
    assert all(r.weight_density == pytest.approx(0.2, abs=0.01) for r in winograd)


@pytest.mark.once_per_run
@needs_fashion_mnist
def test_comparison_prunes_every_variant_through_the_densities(tmp_path):
    recipe = training.Recipe(epochs=1, batch_size=64, learning_rate=0.01, optimizer="sgd")
    arguments = dict(width=4, recipe=recipe, densities=(0.2,), stage_epochs=0.5,
                     train_samples=128, test_samples=64, activation_samples=32,
                     run_dir=str(tmp_path / "cmp"), verbose=0, log=lambda *a: None)
    stages = comparison.compare_variants(**arguments)
    assert [(s.variant, s.target_density) for s in stages] == [
        (v, d) for v in comparison.VARIANTS for d in (1.0, 0.2)]
    for s in stages:
        assert s.weight_density == pytest.approx(s.target_density, abs=0.01)
        assert 0 < s.activation_density <= 1 and 0 <= s.accuracy <= 1
        assert s.reduction == pytest.approx(s.dense_spatial / s.multiplications)
    dense = {s.variant: s for s in stages if s.target_density == 1.0}
    # The same layers: one dense spatial count; Winograd-ReLU multiplies the sparsest activations.
    assert len({s.dense_spatial for s in stages}) == 1
    assert dense["winograd_relu"].activation_density < dense["winograd_native"].activation_density
    table = comparison.format_markdown(stages)
    assert table.count("\n") == len(stages) + 1 and "(c) Winograd-ReLU" in table
    png = comparison.plot(stages, str(tmp_path / "cmp.png"))
    assert os.path.getsize(png) > 0
    resumed = comparison.compare_variants(resume=True, **arguments)  # all done: loads every stage
    assert [(s.variant, s.accuracy, s.multiplications) for s in resumed] == [
        (s.variant, s.accuracy, s.multiplications) for s in stages]
    for densities in ((0.1, 0.5), (0.5, 0.5)):
        with pytest.raises(ValueError, match="decrease"):
            comparison.compare_variants(**dict(arguments, densities=densities, run_dir=None))
    with pytest.raises(ValueError, match="Unknown variants"):
        comparison.compare_variants(**dict(arguments, variants=("dense",), run_dir=None))


@pytest.mark.backend_independent
def test_weights_travel_in_float16_parts_and_come_back(tmp_path, monkeypatch, rng):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "applications", "fashion_mnist_resnet18_w64.py")
    spec = importlib.util.spec_from_file_location("recipe_w64", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    monkeypatch.setattr(recipe, "PART_BYTES", 1000)
    weights = [rng.standard_normal((40, 30)).astype(np.float32), np.arange(7, dtype=np.float32)]
    parts = recipe._pack(weights, str(tmp_path / "m"))
    assert len(parts) > 1 and all(os.path.getsize(p) <= 1000 for p in parts)
    back = recipe._unpack(str(tmp_path / "m"))
    for a, b in zip(weights, back):
        assert b.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=2 ** -11, atol=2 ** -24)  # float16's rounding, nothing more
    with pytest.raises(FileNotFoundError):
        recipe._unpack(str(tmp_path / "none"))
