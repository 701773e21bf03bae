"""Prune a Winograd-ReLU CNN on Fashion-MNIST to 10% Winograd weight density.

The paper's recipe, compressed: train dense, then prune the Winograd-domain
kernels (only those) iteratively to densities 0.5 -> 0.3 -> 0.2 -> 0.1 with
training in between, fine-tune at 0.1, and print accuracy and the
multiplication accounting (weights and ReLU-sparse activations).

    KERAS_BACKEND=jax python examples/prune_fashion_mnist.py
"""

import argparse
import time

import numpy as np
import keras

from keras_swcnn import analysis, pruning
from keras_swcnn.datasets import fashion_mnist
from keras_swcnn.layers import WinogradReLUConv2D

import fashion_mnist_winograd  # the dense example's model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dense-epochs", type=int, default=1)
    parser.add_argument("--prune-epochs", type=int, default=1, help="epochs over which the stages run")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--densities", default="0.5,0.3,0.2,0.1")
    parser.add_argument("--train-samples", type=int, default=60000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--plot", default="winograd_densities.png")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    x_train = (x_train[: args.train_samples, ..., None] / 255.0).astype("float32")
    y_train = y_train[: args.train_samples]
    x_test = (x_test[..., None] / 255.0).astype("float32")
    steps_per_epoch = int(np.ceil(len(x_train) / args.batch_size))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    start = time.perf_counter()

    model = fashion_mnist_winograd.build_model()
    model.compile(keras.optimizers.Adam(2e-3), loss, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.dense_epochs, verbose=2)
    dense_accuracy = model.evaluate(x_test, y_test, batch_size=500, verbose=0)[1]
    print(f"dense test accuracy: {dense_accuracy:.4f}")

    densities = [float(d) for d in args.densities.split(",")]
    stage_steps = max(1, args.prune_epochs * steps_per_epoch // len(densities))
    schedule = pruning.StepwiseSparsity.from_densities(densities, stage_steps)
    pruned = pruning.prune_low_magnitude(
        model, schedule, filter_fn=lambda layer: isinstance(layer, WinogradReLUConv2D))
    pruned.compile(keras.optimizers.Adam(5e-4), loss, metrics=["accuracy"])
    pruned.fit(x_train, y_train, batch_size=args.batch_size,
               epochs=args.prune_epochs + args.finetune_epochs, verbose=2,
               callbacks=[pruning.UpdatePruningStep(), pruning.PruningSummaries()])
    final = pruning.strip_pruning(pruned)
    final.compile(metrics=["accuracy"], loss=loss)
    pruned_accuracy = final.evaluate(x_test, y_test, batch_size=500, verbose=0)[1]

    report = analysis.multiplication_report(final, x_test[:500])
    print(analysis.format_report(report))
    if args.plot:
        analysis.plot_densities(report, args.plot)
        print(f"density plot: {args.plot}")
    print(f"dense test accuracy:  {dense_accuracy:.4f}")
    print(f"pruned test accuracy: {pruned_accuracy:.4f} (Winograd weight density "
          f"{densities[-1]}; {report.winograd_reduction:.1f}x fewer multiplications in the "
          f"Winograd layers, {report.reduction:.1f}x in the whole model)")
    print(f"total time: {time.perf_counter() - start:.0f} s")
    return dense_accuracy, pruned_accuracy, report


if __name__ == "__main__":
    main()
