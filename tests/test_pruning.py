"""Keras 3 pruning: schedules (vs tfmot), masks, the wrapper's state machine, save/resume, strip."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import keras
from keras import ops

from conftest import random_normal
from keras_swcnn import pruning
from keras_swcnn.layers import WinogradReLUConv2D

HERE = os.path.dirname(__file__)


def schedule_cases():
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(12):
        begin = int(rng.integers(0, 50))
        end = begin + int(rng.integers(0, 300))
        freq = int(rng.integers(1, 40))
        steps = sorted(set(rng.integers(-5, end + 80, 60).tolist() + [begin, end, end + 1]))
        cases.append(("ConstantSparsity", dict(target_sparsity=float(rng.uniform(0, 0.99)),
                                               begin_step=begin, end_step=end, frequency=freq), steps))
        cases.append(("ConstantSparsity", dict(target_sparsity=0.5, begin_step=begin, end_step=-1,
                                               frequency=freq), steps))
        if end > begin:
            cases.append(("PolynomialDecay", dict(
                initial_sparsity=float(rng.uniform(0, 0.5)), final_sparsity=float(rng.uniform(0.5, 0.99)),
                begin_step=begin, end_step=end, power=int(rng.integers(1, 5)), frequency=freq), steps))
    return cases


@pytest.fixture(scope="module")
def tfmot_results():
    pytest.importorskip("tensorflow_model_optimization")
    cases = schedule_cases()
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "tfmot_schedule_dump.py")],
        input=json.dumps(cases), capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return cases, json.loads(result.stdout)


def test_schedules_match_tfmot(tfmot_results):
    cases, expected = tfmot_results
    mismatches = []
    for (name, kwargs, steps), rows in zip(cases, expected):
        schedule = getattr(pruning, name)(**kwargs)
        for step, (should, sparsity) in zip(steps, rows):
            ours_should, ours_sparsity = schedule(step)
            ours = (bool(ops.convert_to_numpy(ours_should)),
                    float(np.float32(ops.convert_to_numpy(ours_sparsity))))
            if ours != (should, sparsity):
                mismatches.append((name, kwargs, step, ours, (should, sparsity)))
    assert not mismatches, mismatches[:5]


def test_stepwise_schedule():
    schedule = pruning.StepwiseSparsity.from_densities([0.7, 0.5, 0.1], steps_per_stage=10)
    assert schedule.boundaries == [1, 11, 21]
    expected = {1: (True, 0.3), 5: (False, 0.3), 11: (True, 0.5), 20: (False, 0.5),
                21: (True, 0.9), 500: (False, 0.9)}
    for step, (should, sparsity) in expected.items():
        s, p = schedule(step)
        assert bool(ops.convert_to_numpy(s)) == should
        assert abs(float(ops.convert_to_numpy(p)) - sparsity) < 1e-7
    assert float(ops.convert_to_numpy(schedule(0)[1])) == 0.0


def test_schedule_configs_and_tfmot_style_dicts():
    schedule = pruning.PolynomialDecay(0.1, 0.8, 5, 50, power=2, frequency=5)
    assert pruning.schedules.get(pruning.schedules.serialize(schedule)) == schedule
    tfmot_style = {"class_name": "ConstantSparsity",
                   "config": {"target_sparsity": 0.7, "begin_step": 3, "end_step": -1, "frequency": 9}}
    assert pruning.schedules.get(tfmot_style) == pruning.ConstantSparsity(0.7, 3, -1, 9)


@pytest.mark.parametrize("kwargs,message", [
    (dict(target_sparsity=1.0, begin_step=0), r"range \[0, 1\)"),
    (dict(target_sparsity=-0.1, begin_step=0), r"range \[0, 1\)"),
    (dict(target_sparsity=0.5, begin_step=10, end_step=5), "begin_step should be <= end_step"),
    (dict(target_sparsity=0.5, begin_step=0, frequency=0), "frequency should be > 0"),
    (dict(target_sparsity=0.5, begin_step=-1), "begin_step should be >= 0"),
])
def test_bad_schedules(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pruning.ConstantSparsity(**kwargs)


def test_bad_polynomial_and_stepwise_schedules():
    with pytest.raises(ValueError, match="end_step cannot be -1"):
        pruning.PolynomialDecay(0.1, 0.5, 0, -1)
    with pytest.raises(ValueError, match="strictly increasing"):
        pruning.StepwiseSparsity([5, 5], [0.1, 0.2])
    with pytest.raises(ValueError, match="Unknown pruning schedule"):
        pruning.schedules.get({"class_name": "Cubic", "config": {}})


def test_magnitude_mask_matches_numpy(rng):
    for shape, sparsity in [((4, 4, 3, 5), 0.9), ((17,), 0.5), ((3, 3), 0.0), ((7, 11), 0.999)]:
        w = random_normal(rng, shape)
        mask, threshold = pruning.magnitude_mask(w, sparsity)
        mask = ops.convert_to_numpy(mask)
        n = w.size
        k = max(int(np.round(np.float32(n) * np.float32(1 - np.float32(sparsity)))), 1)
        expected = np.zeros(n)
        expected[np.argsort(-np.abs(w).ravel(), kind="stable")[:k]] = 1
        np.testing.assert_array_equal(mask.ravel(), expected)
        assert float(ops.convert_to_numpy(threshold)) == np.sort(np.abs(w).ravel())[n - k]


def winograd_model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((7, 6, 3))
    x = WinogradReLUConv2D(8, name="w1")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = WinogradReLUConv2D(6, name="w2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


def compiled(model):
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def expected_zeros(n, sparsity):
    return n - max(int(np.round(np.float32(n) * (np.float32(1) - np.float32(sparsity)))), 1)


def test_prunes_exactly_and_pruned_weights_stay_zero(rng):
    model = winograd_model(int(rng.integers(2**31)))
    schedule = pruning.ConstantSparsity(0.9, begin_step=2, frequency=3)
    pruned = compiled(pruning.prune_low_magnitude(
        model, schedule, filter_fn=lambda layer: isinstance(layer, WinogradReLUConv2D)))
    assert sorted(type(l.layer).__name__ for l in pruning.pruned_layers(pruned)) == [
        "WinogradReLUConv2D", "WinogradReLUConv2D"]
    x, y = random_normal(rng, (48, 7, 6, 3)), random_normal(rng, (48, 2))
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    masks_before = {}
    for layer in pruning.pruned_layers(pruned):
        kernel = ops.convert_to_numpy(layer.layer.kernel)
        assert int(ops.convert_to_numpy(layer.pruning_step)) == 12
        assert (kernel == 0).sum() == expected_zeros(kernel.size, 0.9)
        masks_before[layer.name] = ops.convert_to_numpy(layer.masks[0])
    # More training with a schedule that no longer prunes: Adam's momentum must
    # not revive pruned weights.
    for layer in pruning.pruned_layers(pruned):
        layer.pruning_schedule = pruning.ConstantSparsity(0.9, begin_step=2, end_step=12, frequency=3)
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    for layer in pruning.pruned_layers(pruned):
        kernel = ops.convert_to_numpy(layer.layer.kernel)
        np.testing.assert_array_equal(ops.convert_to_numpy(layer.masks[0]), masks_before[layer.name])
        assert np.all(kernel[masks_before[layer.name] == 0] == 0)
        assert (kernel == 0).sum() == expected_zeros(kernel.size, 0.9)
    head = ops.convert_to_numpy(pruned.get_layer("head").kernel)
    assert (head == 0).sum() == 0  # not selected, not pruned


def test_dense_and_conv2d_are_pruned_in_their_own_domain(rng):
    keras.utils.set_random_seed(int(rng.integers(2**31)))
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    pruned = compiled(pruning.prune_low_magnitude(model, pruning.ConstantSparsity(0.5, 1, frequency=1)))
    pruned.fit(random_normal(rng, (8, 6, 6, 2)), random_normal(rng, (8, 3)), epochs=1, verbose=0,
               callbacks=[pruning.UpdatePruningStep()])
    for layer in pruning.pruned_layers(pruned):
        kernel = ops.convert_to_numpy(layer.layer.kernel)
        assert (kernel == 0).sum() == expected_zeros(kernel.size, 0.5)


def test_resume_from_checkpoint_continues_the_schedule(rng, tmp_path):
    seed = int(rng.integers(2**31))
    schedule = pruning.PolynomialDecay(0.2, 0.8, begin_step=1, end_step=20, frequency=2)
    x, y = random_normal(rng, (32, 7, 6, 3)), random_normal(rng, (32, 2))

    def fit(model, epochs):
        model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
                  callbacks=[pruning.UpdatePruningStep()])

    def state(model):
        return [(int(ops.convert_to_numpy(layer.pruning_step)), ops.convert_to_numpy(layer.masks[0]))
                for layer in pruning.pruned_layers(model)]

    def assert_same(a, b, step):
        for (step_a, mask_a), (step_b, mask_b) in zip(state(a), state(b)):
            assert step_a == step_b == step
            np.testing.assert_array_equal(mask_a, mask_b)

    reference = compiled(pruning.prune_low_magnitude(winograd_model(seed), schedule))
    fit(reference, 2)
    path = os.path.join(tmp_path, "mid.keras")
    reference.save(path)
    weights_path = os.path.join(tmp_path, "mid.weights.h5")
    reference.save_weights(weights_path)

    # A .keras file holds the optimizer too: training resumes exactly.
    resumed = keras.saving.load_model(path)
    assert isinstance(resumed.get_layer("prune_low_magnitude_w1"), pruning.PruneLowMagnitude)
    assert_same(reference, resumed, 8)
    # A weights file restores the pruning state (masks, step) as well.
    from_weights = compiled(pruning.prune_low_magnitude(winograd_model(seed + 1), schedule))
    from_weights.build((None, 7, 6, 3))
    from_weights.optimizer.build(from_weights.trainable_variables)  # so its state loads too
    from_weights.load_weights(weights_path)
    assert_same(reference, from_weights, 8)

    fit(reference, 2)
    fit(resumed, 2)
    assert_same(reference, resumed, 16)
    np.testing.assert_allclose(reference.predict(x, verbose=0), resumed.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)
    fit(from_weights, 2)
    assert_same(reference, from_weights, 16)


def test_strip_pruning_keeps_outputs(rng):
    pruned = compiled(pruning.prune_low_magnitude(
        winograd_model(int(rng.integers(2**31))), pruning.ConstantSparsity(0.7, 1, frequency=2)))
    x = random_normal(rng, (16, 7, 6, 3))
    pruned.fit(x, random_normal(rng, (16, 2)), batch_size=4, epochs=1, verbose=0,
               callbacks=[pruning.UpdatePruningStep(every_batch=False)])
    before = pruned.predict(x, verbose=0)
    stripped = pruning.strip_pruning(pruned)
    assert not pruning.pruned_layers(stripped)
    assert isinstance(stripped.get_layer("w1"), WinogradReLUConv2D)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), before, rtol=1e-5, atol=1e-6)
    kernel = ops.convert_to_numpy(stripped.get_layer("w1").kernel)
    assert (kernel == 0).sum() == expected_zeros(kernel.size, 0.7)


def test_summaries_callback_logs_sparsity(rng):
    pruned = compiled(pruning.prune_low_magnitude(
        winograd_model(int(rng.integers(2**31))), pruning.ConstantSparsity(0.5, 1, frequency=1)))
    history = pruned.fit(random_normal(rng, (8, 7, 6, 3)), random_normal(rng, (8, 2)), epochs=2,
                         verbose=0, callbacks=[pruning.UpdatePruningStep(), pruning.PruningSummaries()])
    for name in ("w1", "w2", "head"):
        n = int(np.prod(pruned.get_layer(f"prune_low_magnitude_{name}").layer.kernel.shape))
        assert history.history[f"{name}/sparsity"][-1] == pytest.approx(expected_zeros(n, 0.5) / n)


def test_pruning_layers_and_lists():
    layers = pruning.prune_low_magnitude([WinogradReLUConv2D(4), keras.layers.Dense(3)])
    assert all(isinstance(layer, pruning.PruneLowMagnitude) for layer in layers)
    assert pruning.prune_low_magnitude(WinogradReLUConv2D(4)).pruning_schedule == \
        pruning.ConstantSparsity(0.5, 0)


def test_bad_pruning_requests():
    with pytest.raises(ValueError, match="Cannot prune layer .* BatchNormalization"):
        pruning.prune_low_magnitude(keras.layers.BatchNormalization())
    pruned = pruning.prune_low_magnitude(winograd_model(0))
    with pytest.raises(ValueError, match="already pruned"):
        pruning.prune_low_magnitude(pruned)
    with pytest.raises(ValueError, match="already pruned"):
        pruning.prune_low_magnitude(pruned.get_layer("prune_low_magnitude_w1"))
    with pytest.raises(ValueError, match="Expected a pruning schedule"):
        pruning.prune_low_magnitude(WinogradReLUConv2D(2), pruning_schedule=0.5)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed model"):
        pruning.prune_low_magnitude(Subclassed())


def test_a_frozen_pruned_layer_still_computes_with_its_mask(rng):
    from numpy_reference import conv, rel_error

    layer = pruning.prune_low_magnitude(WinogradReLUConv2D(4, name="w"),
                                        pruning.ConstantSparsity(0.8, 0, frequency=1))
    x = random_normal(rng, (2, 6, 5, 3))
    layer(x, training=True)  # builds, and the first step sets the mask
    mask = ops.convert_to_numpy(layer.masks[0])
    assert 0 < mask.sum() < mask.size
    kernel_before = ops.convert_to_numpy(layer.layer.kernel)
    layer.layer.trainable = False  # frozen: the kernel is now a non-trainable variable
    y = ops.convert_to_numpy(layer(x))
    assert rel_error(y, conv(x, kernel_before * mask)) < 1e-5
    # The stored kernel is not overwritten by the masked values as a side effect.
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.layer.kernel), kernel_before)


def test_nested_models_are_pruned_and_stripped_all_the_way_down(rng):
    keras.utils.set_random_seed(int(rng.integers(2**31)))
    inner = keras.Sequential([keras.Input((7, 6, 3)), WinogradReLUConv2D(4, name="inner_w")],
                             name="inner")
    inputs = keras.Input((7, 6, 3))
    y = keras.layers.GlobalAveragePooling2D()(inner(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(y))
    pruned = compiled(pruning.prune_low_magnitude(
        model, pruning.ConstantSparsity(0.75, 0, frequency=1),
        filter_fn=lambda layer: isinstance(layer, WinogradReLUConv2D)))
    assert [l.layer.name for l in pruning.pruned_layers(pruned)] == ["inner_w"]
    x = random_normal(rng, (8, 7, 6, 3))
    pruned.fit(x, random_normal(rng, (8, 2)), batch_size=4, epochs=1, verbose=0,
               callbacks=[pruning.UpdatePruningStep()])
    before = pruned.predict(x, verbose=0)
    stripped = pruning.strip_pruning(pruned)
    assert not pruning.pruned_layers(stripped)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), before, rtol=1e-5, atol=1e-6)
    kernel = ops.convert_to_numpy(stripped.get_layer("inner").get_layer("inner_w").kernel)
    assert (kernel == 0).sum() == expected_zeros(kernel.size, 0.75)


@keras.saving.register_keras_serializable(package="test_pruning")
class EveryOtherStep(pruning.PruningSchedule):
    """A user's schedule: prune to `sparsity` on even steps."""

    def __init__(self, sparsity):
        self.sparsity = sparsity

    def __call__(self, step):
        return ops.equal(ops.mod(step, 2), 0), ops.convert_to_tensor(self.sparsity, "float32")

    def get_config(self):
        return {"sparsity": self.sparsity}


class Unregistered(EveryOtherStep):
    pass


def test_custom_schedules_save_and_load_when_registered(rng, tmp_path):
    model = pruning.prune_low_magnitude(winograd_model(int(rng.integers(2**31))), EveryOtherStep(0.6))
    path = str(tmp_path / "pruned.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    schedules = [layer.pruning_schedule for layer in pruning.pruned_layers(loaded)]
    assert schedules and all(s == EveryOtherStep(0.6) for s in schedules)
    unregistered = pruning.prune_low_magnitude(winograd_model(0), Unregistered(0.5))
    with pytest.raises(ValueError, match="register it with"):
        unregistered.save(str(tmp_path / "unregistered.keras"))
