"""Train the Fashion-MNIST Winograd-ReLU CNN on several devices, and on several hosts with JAX.

JAX: ``keras.distribution.DataParallel`` splits each batch over the devices
(of every process); each device runs the native Winograd kernels on its own
images, and the kernel gradients are summed across devices. TensorFlow:
``tf.distribute.MirroredStrategy`` runs a replica of the model per device,
each with its own native calls. On a CPU-only machine, ``--devices N`` splits
the CPU into N virtual devices (it must be set before JAX or TensorFlow
starts, which this script does).

One machine, two (virtual) devices:

    KERAS_BACKEND=jax python examples/data_parallel.py --devices 2 --epochs 1
    KERAS_BACKEND=tensorflow python examples/data_parallel.py --devices 2 --epochs 1

Two processes (JAX; on two hosts, use the first host's address and run one
process per host, each with the same arguments but its own ``--process-id``):

    KERAS_BACKEND=jax python examples/data_parallel.py --coordinator 127.0.0.1:12355 \\
        --num-processes 2 --process-id 0 &
    KERAS_BACKEND=jax python examples/data_parallel.py --coordinator 127.0.0.1:12355 \\
        --num-processes 2 --process-id 1

``--batch-size`` is the global batch: each process feeds its own share of
every batch from its own share of the images.
"""

import argparse
import json
import os
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=0,
                        help="split the CPU into this many virtual devices (0: the real ones)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size")
    parser.add_argument("--train-samples", type=int, default=60000)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--coordinator", help="JAX: host:port of process 0")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    return parser.parse_args(argv)


def split_cpu(backend, devices):
    """Expose ``devices`` virtual CPU devices; call before the backend initialises."""
    if backend == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}"
    elif backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    else:
        raise SystemExit(f"--devices: the {backend!r} backend has no data-parallel path here; "
                         "use jax or tensorflow")


def jax_data_parallel(args):
    """Join the processes (if several), then split every batch over all their devices."""
    import jax
    import keras

    if args.num_processes > 1:
        keras.distribution.initialize(args.coordinator, args.num_processes, args.process_id)
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    # Each process passes its own rows (see `process_share`): nothing for Keras to shard.
    distribution.auto_shard_dataset = False
    keras.distribution.set_distribution(distribution)
    return len(jax.devices())


def process_share(x, y, args):
    """This process's images: every ``num_processes``-th one, starting at its id."""
    return x[args.process_id::args.num_processes], y[args.process_id::args.num_processes]


def main(argv=None):
    args = parse_args(argv)
    backend = os.environ.get("KERAS_BACKEND", "jax")
    if args.devices:
        split_cpu(backend, args.devices)

    import contextlib

    import keras
    import numpy as np
    from fashion_mnist_winograd import build_model

    from keras_swcnn.datasets import fashion_mnist

    scope = contextlib.nullcontext()
    if backend == "jax":
        devices = jax_data_parallel(args)
    elif backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(
            [d.name for d in tf.config.list_logical_devices("GPU")
             or tf.config.list_logical_devices("CPU")])
        scope, devices = strategy.scope(), strategy.num_replicas_in_sync
    else:
        raise SystemExit("this example runs on the jax or tensorflow backend")

    keras.utils.set_random_seed(0)  # every process builds the same initial weights
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    x_train = (x_train[: args.train_samples, ..., None] / 255.0).astype("float32")
    y_train = y_train[: args.train_samples]
    x_test = (x_test[..., None] / 255.0).astype("float32")
    x_local, y_local = process_share(x_train, y_train, args)
    with scope:
        model = build_model(args.width)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    local_batch = args.batch_size // args.num_processes
    model.fit(x_local[:local_batch], y_local[:local_batch], batch_size=local_batch,
              epochs=1, verbose=0)  # compiles; not timed
    start = time.perf_counter()
    model.fit(x_local, y_local, batch_size=local_batch, epochs=args.epochs,
              verbose=0 if args.json else 2)
    seconds = time.perf_counter() - start
    result = {"backend": backend, "devices": devices, "processes": args.num_processes,
              "images_per_s": round(args.epochs * len(x_train) / seconds, 1)}
    # Every process evaluates (a step is one program over all devices), each its own share.
    x_test, y_test = process_share(x_test, y_test, args)
    _, result["test_accuracy"] = model.evaluate(
        x_test, y_test, batch_size=1000 // args.num_processes, verbose=0)
    if args.process_id == 0:
        print(json.dumps(result) if args.json else result)
    return result


if __name__ == "__main__":
    main()
