"""Time WinogradReLUConv2D (native and reference paths) against keras.layers.Conv2D.

For the ResNet-18-var layer shapes, prints per path the median time of the
forward pass and of forward+backward (gradients w.r.t. input and kernel),
their ratios to Conv2D measured in the same process, and (JAX) the compiled
program's peak temporary memory. Benchmarks are not tests: they report.

    KERAS_BACKEND=jax python benchmarks/layer_benchmark.py [--batch 32] [--repeats 10]
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
from keras_swcnn.benchmark import RESNET18_SHAPES
from keras_swcnn import ops as wops
from keras_swcnn.layers import WinogradReLUConv2D


def make_layer(kind, channels_out):
    if kind == "conv2d":
        return keras.layers.Conv2D(channels_out, 3, padding="same", use_bias=False)
    return WinogradReLUConv2D(channels_out, implementation=kind)


def compile_jax(layer, x, dy):
    import jax
    import jax.numpy as jnp

    weights = [v.value for v in layer.trainable_variables]
    x = jax.device_put(x)  # once: a numpy input is copied in on every call otherwise

    def forward(weights, x):
        return layer.stateless_call(weights, [], x)[0]

    def loss(weights, x):
        return jnp.sum(forward(weights, x) * dy)

    fwd = jax.jit(forward)
    bwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
    memory = {}
    for name, fn in (("forward", fwd), ("forward+backward", bwd)):
        analysis = fn.lower(weights, x).compile().memory_analysis()
        memory[name] = getattr(analysis, "temp_size_in_bytes", None)
    run = {
        "forward": lambda: jax.block_until_ready(fwd(weights, x)),
        "forward+backward": lambda: jax.block_until_ready(bwd(weights, x)),
    }
    return run, memory


def compile_tensorflow(layer, x, dy):
    import tensorflow as tf

    x = tf.constant(x)

    @tf.function
    def forward():
        return layer(x)

    @tf.function
    def backward():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * dy)
        return tape.gradient(loss, [x] + layer.trainable_variables)

    # On the CPU eager TensorFlow returns once the function has run: `.numpy()` would time a
    # copy of the outputs as well.
    return {"forward": forward, "forward+backward": backward}, {}


def compile_torch(layer, x, dy):
    import torch

    x = torch.tensor(x, requires_grad=True)
    dy = torch.tensor(dy)

    def forward():
        with torch.no_grad():
            return layer(x)

    def backward():
        layer.zero_grad() if hasattr(layer, "zero_grad") else None
        x.grad = None
        (layer(x) * dy).sum().backward()

    return {"forward": forward, "forward+backward": backward}, {}


COMPILERS = {"jax": compile_jax, "tensorflow": compile_tensorflow, "torch": compile_torch}


def median_seconds(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--shapes", default="all", help="comma-separated indices into the shape list")
    parser.add_argument("--skip-reference", action="store_true",
                        help="time only Conv2D and the native path")
    args = parser.parse_args(argv)

    backend = keras.backend.backend()
    compile_fn = COMPILERS[backend]
    kinds = ["conv2d"] + ([] if args.skip_reference else ["reference"])
    kinds += ["native"] if wops.native_unavailable_reason() is None else []
    shapes = RESNET18_SHAPES if args.shapes == "all" else [
        RESNET18_SHAPES[int(i)] for i in args.shapes.split(",")]
    info = build_info()
    print(f"backend={backend} machine={platform.machine()} cpus={os.cpu_count()} "
          f"batch={args.batch} native={info['implementation'] == 'native'}")
    rng = np.random.default_rng(0)
    results = []
    for h, w, c, k in shapes:
        x = rng.standard_normal((args.batch, h, w, c)).astype("float32")
        dy = rng.standard_normal((args.batch, h, w, k)).astype("float32")
        row = {"shape": f"{h}x{w}x{c}->{k}"}
        for kind in kinds:
            layer = make_layer(kind, k)
            layer.build(x.shape)
            run, memory = compile_fn(layer, x, dy)
            for mode, fn in run.items():
                row[f"{kind} {mode} s"] = median_seconds(fn, args.repeats)
                if memory.get(mode) is not None:
                    row[f"{kind} {mode} temp MiB"] = memory[mode] / 2**20
        results.append(row)
        print_row(row, kinds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": backend, "batch": args.batch, "results": results}, f, indent=1)
    return results


def print_row(row, kinds):
    parts = [f"{row['shape']:>18}"]
    for mode in ("forward", "forward+backward"):
        base = row[f"conv2d {mode} s"]
        cells = [f"conv2d {base * 1e3:7.1f} ms"]
        for kind in kinds[1:]:
            t = row[f"{kind} {mode} s"]
            cells.append(f"{kind} {t * 1e3:7.1f} ms ({t / base:4.2f}x)")
        parts.append(f"{mode}: " + ", ".join(cells))
    mem = [f"{kind} {row[k]:.0f}" for kind in kinds for k in [f"{kind} forward+backward temp MiB"]
           if k in row]
    if mem:
        parts.append("fwd+bwd temp MiB: " + ", ".join(mem))
    print(" | ".join(parts), flush=True)


if __name__ == "__main__":
    main()
