"""Inference timing of sparse Winograd-ReLU layers and models against Conv2D (``swcnn benchmark``).

Every number is a median over interleaved runs: the candidates of one row
(Conv2D, the dense Winograd layer, the sparse one) take turns, so a machine
that slows down mid-run slows them all alike, and ratios are measured in one
process. Benchmarks report; they are not tests.

Example:
    >>> from keras_swcnn import benchmark
    >>> rows = benchmark.layer_table([(8, 8, 16, 16)], densities=[0.1], batch=1, repeats=1)
    >>> sorted(rows[0])[:3]
    ['batch', 'conv2d_s', 'dense_s']
"""

import statistics
import time

import numpy as np
import keras

from keras_swcnn._plotting import pyplot

#: (H, W, C_in, C_out) of the Winograd layers of ResNet-18-var.
RESNET18_SHAPES = ((56, 56, 64, 64), (28, 28, 128, 128), (14, 14, 256, 256), (14, 14, 512, 512))
DENSITIES = (1.0, 0.5, 0.3, 0.2, 0.1, 0.05)


def compiled_forward(layer, x):
    """A no-argument function running ``layer`` (or a model) on ``x`` for inference, compiled
    the way this backend runs a model (``jax.jit``, ``tf.function``, torch ``no_grad``)."""
    backend = keras.backend.backend()
    # Models take `training` (batch normalization in inference mode); plain layers may not.
    options = {"training": False} if isinstance(layer, keras.Model) else {}
    if backend == "jax":
        import jax

        # On the device once: a numpy input would be copied in on every call (25 MB per call
        # at 56x56x64, batch 32), timing the copy as well as the layer.
        x = jax.device_put(x)
        trainable = [v.value for v in layer.trainable_variables]
        fixed = [v.value for v in layer.non_trainable_variables]
        run = jax.jit(lambda t, n, x: layer.stateless_call(t, n, x, **options)[0])
        return lambda: jax.block_until_ready(run(trainable, fixed, x))
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        run = tf.function(lambda: layer(x, **options))
        # On the CPU, eager TensorFlow runs a function to its end before returning (synchronous
        # execution, the default), so `.numpy()` would only add a copy of the output (3 ms at
        # 56x56x64, batch 32). A GPU queues its kernels: there one element is fetched to wait.
        if "GPU" not in x.device:
            return run
        return lambda: tf.reshape(run(), [-1])[0].numpy()
    if backend == "torch":
        import torch

        x = torch.as_tensor(x)

        def run():
            with torch.no_grad():
                return layer(x, **options)

        return run
    raise ValueError(f"no benchmark for the {backend!r} backend")


def interleaved_medians(functions, repeats, warmup=2):
    """``{name: median seconds}``: each round runs every function once, in turn."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _pruned_kernel(rng, c, k, density):
    kernel = rng.standard_normal((4, 4, c, k)).astype("float32") / np.sqrt(c)
    return np.where(rng.random(kernel.shape) < density, kernel, 0.0).astype("float32")


def layer_table(shapes=RESNET18_SHAPES, densities=DENSITIES, batch=32, repeats=5, seed=0):
    """One row per (shape, density): median seconds of Conv2D, the dense Winograd layer and the
    sparse one (``sparse_mode="auto"``), all in this process, with the ratios to Conv2D."""
    from keras_swcnn.layers import SparseWinogradReLUConv2D, WinogradReLUConv2D

    rng = np.random.default_rng(seed)
    rows = []
    for h, w, c, k in shapes:
        x = rng.standard_normal((batch, h, w, c)).astype("float32")
        conv = keras.layers.Conv2D(k, 3, padding="same", use_bias=False)
        conv.build(x.shape)
        dense = WinogradReLUConv2D(k)
        dense.build(x.shape)
        conv_run, dense_run = compiled_forward(conv, x), compiled_forward(dense, x)
        for density in densities:
            dense.kernel.assign(_pruned_kernel(rng, c, k, density))
            sparse = SparseWinogradReLUConv2D.from_dense(dense)
            times = interleaved_medians(
                {"conv2d": conv_run, "dense": compiled_forward(dense, x),
                 "sparse": compiled_forward(sparse, x)}, repeats)
            rows.append({
                "shape": f"{h}x{w}x{c}->{k}", "batch": batch, "density": density,
                "conv2d_s": times["conv2d"], "dense_s": times["dense"],
                "sparse_s": times["sparse"],
                "sparse_vs_conv2d": times["sparse"] / times["conv2d"],
                "sparse_vs_dense": times["sparse"] / times["dense"],
            })
        del conv_run, dense_run
    return rows


def model_table(batch=32, repeats=5, weights="fashion_mnist_small", seed=0):
    """Whole-network inference: ``ResNet18(weights=...)`` sparsified, as shipped (dense
    Winograd) and the same network with ``conv="spatial"`` (Conv2D), in this process."""
    from keras_swcnn import sparse
    from keras_swcnn.applications import ResNet18, weights_registry

    entry = weights_registry.get_entry(weights)
    architecture = dict(entry.architecture)
    model = ResNet18(weights=weights, **architecture)
    spatial = ResNet18(weights=None, **{**architecture, "conv": "spatial"})
    fast = sparse.sparsify(model)
    x = np.random.default_rng(seed).random((batch,) + tuple(architecture["input_shape"]))
    x = x.astype("float32")
    times = interleaved_medians(
        {"spatial": compiled_forward(spatial, x), "dense": compiled_forward(model, x),
         "sparse": compiled_forward(fast, x)}, repeats)
    layers = sparse.sparse_layers(fast)
    stored = sum(layer.stored for layer in layers)
    total = sum(16 * layer.in_channels * layer.filters for layer in layers)
    return {"weights": weights, "batch": batch, "winograd_density": stored / max(total, 1),
            "spatial_s": times["spatial"], "dense_s": times["dense"],
            "sparse_s": times["sparse"], "speedup_vs_spatial": times["spatial"] / times["sparse"],
            "speedup_vs_dense": times["dense"] / times["sparse"]}


def format_layer_table(rows):
    """The rows of ``layer_table`` as a Markdown table."""
    lines = ["| shape | batch | density | Conv2D | dense Winograd | sparse | sparse / Conv2D "
             "| sparse / dense |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['batch']} | {r['density']:.2f} | {r['conv2d_s'] * 1e3:.2f} ms "
            f"| {r['dense_s'] * 1e3:.2f} ms | {r['sparse_s'] * 1e3:.2f} ms "
            f"| {r['sparse_vs_conv2d']:.2f}x | {r['sparse_vs_dense']:.2f}x |")
    return "\n".join(lines)


def plot_speedup(rows, path):
    """A PNG of the speedup over Conv2D against weight density, one line per shape and batch."""
    plt = pyplot("plot_speedup")

    figure, axis = plt.subplots(figsize=(6, 4))
    for key in dict.fromkeys((r["shape"], r["batch"]) for r in rows):
        points = sorted((r["density"], 1.0 / r["sparse_vs_conv2d"]) for r in rows
                        if (r["shape"], r["batch"]) == key)
        axis.plot(*zip(*points), marker="o", label=f"{key[0]}, batch {key[1]}")
    axis.axhline(1.0, color="gray", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_xlabel("Winograd weight density")
    axis.set_ylabel("speedup over Conv2D (inference)")
    axis.set_title(f"Sparse Winograd-ReLU layer, {keras.backend.backend()}")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
