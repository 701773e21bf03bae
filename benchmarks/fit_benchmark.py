"""Training throughput: ``model.fit`` images/s of ResNet-18 (small), Winograd-ReLU vs spatial.

Builds ``ResNet18(variant="small", input_shape=(28, 28, 1), classes=10, width=W)``
with ``conv="winograd"`` (the layer as users get it: ``implementation="auto"``)
and with ``conv="spatial"`` (``keras.layers.Conv2D``), compiles both the same way
(Adam, sparse cross-entropy, Keras's default ``jit_compile``), and times
``fit`` epochs on the same random images (an epoch is timed by a callback, from its start
to its end, so a ``fit`` call's fixed set-up and tear-down are left out). After a warm-up epoch each, the
candidates are timed in turns (interleaved), so drift on a shared machine
hits both; the ratio is of median images/s. Benchmarks are not tests: they
report.

    KERAS_BACKEND=tensorflow python benchmarks/fit_benchmark.py [--widths 16,32] [--repeats 3]
        [--dtype-policy mixed_bfloat16]
"""

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import keras

from keras_swcnn import build_info
from keras_swcnn.applications import ResNet18

CONVS = ("winograd", "spatial")


def build(conv, width, seed):
    keras.utils.set_random_seed(seed)
    model = ResNet18(variant="small", input_shape=(28, 28, 1), classes=10, width=width,
                     weights=None, conv=conv, classifier_activation=None)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class _EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def images_per_second(model, x, y, batch_size):
    """Images/s of one epoch, timed from its first to its last step: what ``fit`` costs per
    image. The fixed cost of a ``fit`` call (on TensorFlow, tearing down the previous call's
    data pipeline sometimes takes seconds, whatever the model) is left out."""
    timer = _EpochTimer()
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
    return len(x) / timer.seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="16,32")
    parser.add_argument("--samples", type=int, default=2048, help="images per timed epoch")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype-policy", default="float32",
                        help="Keras dtype policy for both models, e.g. mixed_bfloat16")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    keras.config.set_dtype_policy(args.dtype_policy)

    backend = keras.backend.backend()
    print(f"backend={backend} machine={platform.machine()} cpus={os.cpu_count()} "
          f"batch={args.batch} samples={args.samples} policy={args.dtype_policy} "
          f"winograd implementation={build_info()['implementation']}")
    rng = np.random.default_rng(0)
    x = rng.random((args.samples, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.samples)
    results = []
    for width in (int(w) for w in args.widths.split(",")):
        models = {conv: build(conv, width, seed=0) for conv in CONVS}
        for model in models.values():  # warm-up: tracing and compilation
            images_per_second(model, x[: 2 * args.batch], y[: 2 * args.batch], args.batch)
        rates = {conv: [] for conv in CONVS}
        for _ in range(args.repeats):
            for conv, model in models.items():
                rates[conv].append(images_per_second(model, x, y, args.batch))
        row = {"width": width, **{f"{c} images/s": statistics.median(rates[c]) for c in CONVS}}
        row["ratio"] = row["winograd images/s"] / row["spatial images/s"]
        results.append(row)
        print(f"width {width:3d}: winograd {row['winograd images/s']:7.1f} images/s, "
              f"spatial {row['spatial images/s']:7.1f} images/s, ratio {row['ratio']:.2f}x",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": backend, "batch": args.batch, "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
