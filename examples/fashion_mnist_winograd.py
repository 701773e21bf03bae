"""Train a small Winograd-ReLU CNN on Fashion-MNIST and print its test accuracy.

Every 3x3 convolution after the stem is a ``WinogradReLUConv2D``: its weights
live in the Winograd domain and its ReLU is applied after the input transform,
so the layers take pre-activations (batch-norm outputs) as input.

Run (any Keras backend; JAX is the fastest on CPU here):

    KERAS_BACKEND=jax python examples/fashion_mnist_winograd.py --epochs 2
"""

import argparse
import time

import numpy as np
import keras

from keras_swcnn.datasets import fashion_mnist
from keras_swcnn.layers import WinogradReLUConv2D


def build_model(width=32):
    """Stem conv, three Winograd-ReLU convolutions with batch norm and pooling, linear head."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = WinogradReLUConv2D(width)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.MaxPooling2D()(x)  # 14x14
    x = WinogradReLUConv2D(2 * width)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.MaxPooling2D()(x)  # 7x7: odd sizes are fine
    x = WinogradReLUConv2D(4 * width)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10)(x)
    return keras.Model(inputs, outputs, name="winograd_relu_cnn")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-samples", type=int, default=60000,
                        help="use the first N training images (for quick runs)")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    x_train = (x_train[: args.train_samples, ..., None] / 255.0).astype("float32")
    y_train = y_train[: args.train_samples]
    x_test = (x_test[..., None] / 255.0).astype("float32")

    model = build_model(args.width)
    steps = args.epochs * int(np.ceil(len(x_train) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    print(f"Keras backend: {keras.backend.backend()}; "
          f"{len(x_train)} training images, {args.epochs} epochs")
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, verbose=2)
    train_seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    print(f"training time: {train_seconds:.0f} s")
    print(f"test accuracy: {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
