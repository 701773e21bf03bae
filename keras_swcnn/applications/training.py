"""Training ResNet-18 (small variant) on Fashion-MNIST, with optional Winograd-domain pruning.

Shared by the ``swcnn demo`` / ``swcnn train`` commands and the recipe in
``applications/`` that produces the published weights.
"""

import dataclasses
import time

import numpy as np
import keras

from keras_swcnn import analysis, pruning
from keras_swcnn.applications import ResNet18
from keras_swcnn.datasets import fashion_mnist
from keras_swcnn.layers import WinogradReLUConv2D


@dataclasses.dataclass
class TrainingResult:
    model: keras.Model
    dense_accuracy: float
    accuracy: float
    report: analysis.Report
    seconds: float


def load_fashion_mnist(train_samples=None, test_samples=None):
    """Fashion-MNIST as float32 in [0, 1], shape (N, 28, 28, 1)."""
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    x_train = (x_train[:train_samples, ..., None] / 255.0).astype("float32")
    x_test = (x_test[:test_samples, ..., None] / 255.0).astype("float32")
    return (x_train, y_train[:train_samples]), (x_test, y_test[:test_samples])


def _compile(model, learning_rate):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _accuracy(model, x, y):
    logits = model.predict(x, batch_size=500, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == y))


def train_fashion_mnist(width=16, epochs=2, prune_densities=(0.5, 0.3, 0.2, 0.1), prune_epochs=1,
                        train_samples=None, test_samples=None, batch_size=128, seed=0,
                        learning_rate=2e-3, verbose=2, log=print):
    """Train ``ResNet18(variant="small")`` on Fashion-MNIST; then prune its Winograd kernels.

    Args:
        width: first-stage width (stages are width x 1, 2, 4, 8).
        epochs: dense training epochs (cosine-decayed Adam).
        prune_densities: Winograd weight densities to prune to, one stage each
            over ``prune_epochs`` epochs (the paper's iterative recipe); empty
            for no pruning.
        prune_epochs: epochs of pruning plus fine-tuning at the final density.
        train_samples, test_samples: use the first N images (quick runs).

    Returns:
        A ``TrainingResult`` with the (stripped) model, dense and final test
        accuracy, and the multiplication report.
    """
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(train_samples, test_samples)
    model = ResNet18(variant="small", input_shape=(28, 28, 1), classes=10, width=width,
                     classifier_activation=None)
    steps = int(np.ceil(len(x_train) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, epochs * steps), alpha=0.05)
    _compile(model, schedule).fit(x_train, y_train, batch_size=batch_size, epochs=epochs,
                                  verbose=verbose)
    dense_accuracy = _accuracy(model, x_test, y_test)
    log(f"dense test accuracy: {dense_accuracy:.4f}")
    if prune_densities:
        stage_steps = max(1, prune_epochs * steps // (len(prune_densities) + 1))
        pruned = pruning.prune_low_magnitude(
            model, pruning.StepwiseSparsity.from_densities(list(prune_densities), stage_steps),
            filter_fn=lambda layer: isinstance(layer, WinogradReLUConv2D))
        _compile(pruned, learning_rate / 4).fit(
            x_train, y_train, batch_size=batch_size, epochs=prune_epochs, verbose=verbose,
            callbacks=[pruning.UpdatePruningStep(), pruning.PruningSummaries()])
        model = pruning.strip_pruning(pruned)
    accuracy = _accuracy(model, x_test, y_test)
    report = analysis.multiplication_report(model, x_test[:256])
    return TrainingResult(model, dense_accuracy, accuracy, report, time.perf_counter() - start)
