"""Density and multiplication accounting against a hand computation."""

import math

import numpy as np
import pytest
import keras

from conftest import random_normal
from keras_swcnn import analysis, pruning
from keras_swcnn.layers import WinogradReLUConv2D
from numpy_reference import input_tiles


def test_counts_match_hand_computation(rng, tmp_path):
    inputs = keras.Input((7, 6, 3))
    w = WinogradReLUConv2D(5, name="w")(inputs)
    # An offset: no exact zeros reach c (its input density is 1; the next test covers zeros).
    shifted = keras.layers.Rescaling(1.0, offset=1000.0)(w)
    c = keras.layers.Conv2D(4, 3, padding="valid", name="c")(shifted)
    f = keras.layers.Flatten()(c)
    d = keras.layers.Dense(2, name="d")(f)
    model = keras.Model(inputs, d)
    kernel = random_normal(rng, (4, 4, 3, 5))
    kernel[rng.random(kernel.shape) < 0.5] = 0  # known weight density
    model.get_layer("w").kernel.assign(kernel)
    x = random_normal(rng, (6, 7, 6, 3))

    report = analysis.multiplication_report(model, x)
    by_name = {r.name: r for r in report.layers}
    wr = by_name["w"]
    rho_w = np.count_nonzero(kernel) / kernel.size
    rho_a = np.count_nonzero(input_tiles(x, "same", relu=True)) / (6 * 4 * 3 * 16 * 3)
    assert wr.weight_density == pytest.approx(rho_w)
    assert wr.activation_density == pytest.approx(rho_a)
    assert wr.dense_spatial == 9 * 7 * 6 * 3 * 5  # 5670
    assert wr.dense_winograd == 16 * (4 * 3) * 3 * 5  # 2880: ceil(7/2) x ceil(6/2) tiles
    assert wr.sparse == pytest.approx(2880 * rho_w * rho_a)
    assert by_name["c"].dense_spatial == 9 * 5 * 4 * 5 * 4  # 3600
    assert by_name["d"].dense_spatial == 5 * 4 * 4 * 2  # 160
    total_sparse = 2880 * rho_w * rho_a + 3600 + 160
    assert report.total_sparse == pytest.approx(total_sparse)
    assert report.reduction == pytest.approx((5670 + 3600 + 160) / total_sparse)
    assert report.winograd_reduction == pytest.approx(5670 / (2880 * rho_w * rho_a))
    table = analysis.format_report(report)
    assert "w" in table and f"{report.reduction:.1f}x" in table
    assert report.as_dict()["layers"][0]["name"] == "w"
    png = analysis.plot_densities(report, str(tmp_path / "d.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_spatial_layers_count_their_input_zeros(rng):
    # A spatial conv after a ReLU: the paper's spatial baseline skips zero activations too.
    inputs = keras.Input((6, 5, 3))
    r = keras.layers.ReLU()(inputs)
    c = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="c")(r)
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(keras.layers.ReLU()(c)))
    kernel = random_normal(rng, (3, 3, 3, 4))
    kernel[rng.random(kernel.shape) < 0.6] = 0
    model.get_layer("c").kernel.assign(kernel)
    x = random_normal(rng, (5, 6, 5, 3))

    rows = {r.name: r for r in analysis.multiplication_report(model, x).layers}
    rho_w = np.count_nonzero(kernel) / kernel.size
    rho_a = np.count_nonzero(np.maximum(x, 0)) / x.size
    assert rows["c"].weight_density == pytest.approx(rho_w)
    assert rows["c"].activation_density == pytest.approx(rho_a)
    assert rows["c"].sparse == pytest.approx(9 * 6 * 5 * 3 * 4 * rho_w * rho_a)
    padded = np.pad(np.maximum(x, 0).astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    hidden = sum(np.einsum("nhwc,ck->nhwk", padded[:, i:i + 6, j:j + 5], kernel[i, j])
                 for i in range(3) for j in range(3))
    hidden = np.maximum(hidden, 0)
    assert rows["d"].activation_density == pytest.approx(np.count_nonzero(hidden) / hidden.size)


def test_pruned_layers_count_their_masks(rng):
    model = keras.Sequential([keras.Input((6, 6, 4)), WinogradReLUConv2D(8, name="w"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, name="d")])
    pruned = pruning.prune_low_magnitude(model, pruning.ConstantSparsity(0.75, 1, frequency=1))
    pruned.compile("sgd", "mse")
    x = random_normal(rng, (8, 6, 6, 4))
    pruned.fit(x, random_normal(rng, (8, 3)), epochs=1, batch_size=8, verbose=0,
               callbacks=[pruning.UpdatePruningStep()])
    report = analysis.multiplication_report(pruned, x)
    n = 4 * 4 * 4 * 8
    rows = {r.kind: r for r in report.layers}
    assert rows["winograd"].weight_density == pytest.approx(round(n * 0.25) / n)
    assert rows["Dense"].weight_density == pytest.approx(round(8 * 3 * 0.25) / 24)
    assert math.isfinite(report.reduction) and report.reduction > 1


def test_stripped_model_with_shared_layers(rng):
    # strip_pruning reuses the original layers, so they are called in several models.
    model = keras.Sequential([keras.Input((6, 6, 2)), WinogradReLUConv2D(4, name="w"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    pruned = pruning.prune_low_magnitude(model, pruning.ConstantSparsity(0.5, 1, frequency=1))
    stripped = pruning.strip_pruning(pruned)
    report = analysis.multiplication_report(stripped, random_normal(rng, (4, 6, 6, 2)))
    assert [r.kind for r in report.layers] == ["winograd", "Dense"]


def test_sparsified_models_count_the_same_and_layers_are_timed(rng):
    from keras_swcnn import sparse

    inputs = keras.Input((9, 7, 12))
    y = WinogradReLUConv2D(8, name="w1")(inputs)
    y = WinogradReLUConv2D(6, padding="valid", name="w2")(y)
    model = keras.Model(inputs, y)
    for name in ("w1", "w2"):
        layer = model.get_layer(name)
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        layer.kernel.assign(np.where(rng.random(kernel.shape) < 0.2, kernel, 0))
    x = random_normal(rng, (4, 9, 7, 12))
    dense_report = analysis.multiplication_report(model, x)
    timed = analysis.multiplication_report(sparse.sparsify(model), x, time_layers=True, repeats=1)
    assert [r.kind for r in timed.layers] == ["winograd", "winograd"]
    for counted, reference in zip(timed.layers, dense_report.layers):
        assert counted.sparse == pytest.approx(reference.sparse)
        assert counted.weight_density == pytest.approx(reference.weight_density)
        assert sorted(counted.seconds) == ["conv2d", "dense", "sparse"]
        assert all(s > 0 for s in counted.seconds.values())
    assert dense_report.layers[0].seconds is None
    table = analysis.format_report(timed)
    assert "Measured time per batch" in table and "w2" in table.split("Measured time")[1]
