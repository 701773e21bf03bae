"""GPU benchmark (JAX): cuDNN conv vs the native Winograd-ReLU layer, in each precision.

For the ResNet-18-var layer shapes at the given batch sizes, prints the median
time of forward and of a training step's forward+backward (the loss's value
and its gradients w.r.t. input and kernel) for:
  cudnn        jax.lax.conv_general_dilated at default precision (TF32 tensor
               cores on Ampere and newer): what a user's Conv2D runs
  native       keras_swcnn's CUDA path as users get it, at default precision
               (TF32 products; float32 forward composed, see cuda_forward)
  fused        the same with SWCNN_CUDA_FORWARD=fused: the fused tensor-core
               forward (TF32)
  cudnn-fp32   cuDNN at Precision.HIGHEST (float32-accurate)
  native-fp32  fused under jax.default_matmul_precision("highest"): the
               forward's three-pass TF32, the backward's dots at HIGHEST
  cudnn-bf16   cuDNN on bfloat16 input and weights (what mixed_bfloat16 runs)
  native-bf16  native on bfloat16 (the fused kernel, bfloat16 tensor-core products)
  composed     native with SWCNN_CUDA_FORWARD=composed: transform kernels
               around an XLA TF32 dot
  reference    keras_swcnn's keras.ops path (with --reference)
with the ratios native/cudnn for each pair. With --transforms, each native
transform's achieved GB/s against the copy bandwidth measured in the same
run. --markdown writes the table for docs/gpu.md. Benchmarks report; they do
not assert.

    KERAS_BACKEND=jax python benchmarks/gpu_benchmark.py --batches 64,256 --json out.json
"""

import argparse
import contextlib
import json
import os
import statistics
import time

import numpy as np
import jax
import jax.numpy as jnp

from keras_swcnn import winograd
from keras_swcnn.benchmark import RESNET18_SHAPES
from keras_swcnn.ops import jax_native, reference

HIGHEST = jax.lax.Precision.HIGHEST

#: (native path, its cuDNN baseline): the ratios the table reports.
PAIRS = (("native", "cudnn"), ("fused", "cudnn"), ("composed", "cudnn"),
         ("native-fp32", "cudnn-fp32"), ("native-bf16", "cudnn-bf16"))


def median_seconds(fn, *args, repeats=20, warmup=3):
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ceilings():
    """Measured device-to-device copy bandwidth and float32/TF32 matmul rates."""
    x = jnp.ones((256 * 2**20,), jnp.float32)  # 1 GiB
    copy = jax.jit(lambda a: a + 1.0)
    bandwidth = 2 * x.nbytes / median_seconds(copy, x, repeats=10)
    a = jax.random.normal(jax.random.PRNGKey(0), (8192, 8192), jnp.float32)
    rates = {}
    for name, precision in (("fp32", HIGHEST), ("tf32", None)):
        mm = jax.jit(lambda p, q, precision=precision: jnp.matmul(p, q, precision=precision))
        rates[name] = 2 * 8192**3 / median_seconds(mm, a, a, repeats=10)
    return {"copy_GBps": bandwidth / 1e9, "matmul_fp32_TFLOPs": rates["fp32"] / 1e12,
            "matmul_tf32_TFLOPs": rates["tf32"] / 1e12}


def conv_fn(precision):
    def forward(x, g):
        return jax.lax.conv_general_dilated(
            x, g, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)
    return forward


def native_fn(x, u):
    return jax_native.winograd_conv2d(x, u, "same", "relu")


def paths(with_reference):
    """{name: (function, dtype, JAX matmul precision, SWCNN_CUDA_FORWARD or None)}."""
    found = {
        "cudnn": (conv_fn(None), jnp.float32, None, None),
        "native": (native_fn, jnp.float32, None, None),
        "fused": (native_fn, jnp.float32, None, "fused"),
        "composed": (native_fn, jnp.float32, None, "composed"),
        "cudnn-fp32": (conv_fn(HIGHEST), jnp.float32, None, None),
        "native-fp32": (native_fn, jnp.float32, "highest", "fused"),
        "cudnn-bf16": (conv_fn(None), jnp.bfloat16, None, None),
        "native-bf16": (native_fn, jnp.bfloat16, None, None),
    }
    if with_reference:
        found["reference"] = (lambda x, u: reference.winograd_conv2d(x, u, "same", "relu"),
                              jnp.float32, "highest", None)
    return found


def bench_shape(batch, h, w, c, k, repeats, with_reference=False, transforms=False,
                names=None):
    key = jax.random.PRNGKey(batch + h + c)
    x = jax.random.normal(key, (batch, h, w, c), jnp.float32)
    g = jax.random.normal(key, (3, 3, c, k), jnp.float32) * 0.05
    u = jnp.asarray(winograd.spatial_to_winograd(np.asarray(g)))
    dy = jax.random.normal(key, (batch, h, w, k), jnp.float32)
    flops = 2 * 9 * batch * h * w * c * k
    row = {"batch": batch, "shape": f"{h}x{w}x{c}->{k}", "direct_conv_GFLOP": flops / 1e9}
    for name, (fn, dtype, precision, forward) in paths(with_reference).items():
        if names and name not in names:
            continue
        weights = (g if name.startswith("cudnn") else u).astype(dtype)
        fwd = jax.jit(fn)
        # A training step's work: the forward's value is used (jax.grad alone
        # would let XLA drop the forward, which a linear loss's gradient does
        # not need). dy is an argument, not a closure: a captured array becomes
        # an XLA constant, and constant folding it costs seconds of compile time.
        bwd = jax.jit(jax.value_and_grad(
            lambda x, w, dy, fn=fn: jnp.sum((fn(x, w) * dy).astype(jnp.float32)), argnums=(0, 1)))
        # The precision is read when the functions are traced (their first call).
        os.environ.pop(jax_native.CUDA_FORWARD_VARIABLE, None)
        if forward:
            os.environ[jax_native.CUDA_FORWARD_VARIABLE] = forward
        with jax.default_matmul_precision(precision) if precision else contextlib.nullcontext():
            row[f"{name} fwd ms"] = 1e3 * median_seconds(fwd, x.astype(dtype), weights,
                                                         repeats=repeats)
            row[f"{name} fwd+bwd ms"] = 1e3 * median_seconds(
                bwd, x.astype(dtype), weights, dy.astype(dtype), repeats=repeats)
    if transforms:
        row.update(transform_times(x, u, batch, h, w, c, k, repeats))
    return row


def transform_times(x, u, batch, h, w, c, k, repeats):
    """The composed path's pieces alone, against the bytes they must move."""
    geo = winograd.tile_geometry(h, w, "same")
    tiles = batch * geo.tiles_h * geo.tiles_w
    it = jax.jit(lambda x: jax_native._input_transform(x, geo, True))
    v = it(x)
    m = jnp.matmul(v, u.reshape(16, c, k), precision=HIGHEST)
    ot = jax.jit(lambda m: jax_native._output_transform(m, batch, geo))
    mm = jax.jit(lambda v, u: jnp.matmul(v, u.reshape(16, c, k), precision=HIGHEST))
    t_in = median_seconds(it, x, repeats=repeats)
    t_out = median_seconds(ot, m, repeats=repeats)
    t_mm = median_seconds(mm, v, u, repeats=repeats)
    return {
        "input transform ms": 1e3 * t_in,
        "input transform GBps": 4 * (x.size + 16 * tiles * c) / t_in / 1e9,
        "output transform ms": 1e3 * t_out,
        "output transform GBps": 4 * (16 * tiles * k + batch * h * w * k) / t_out / 1e9,
        "batched product ms": 1e3 * t_mm,
        "batched product TFLOPs": 2 * 16 * tiles * c * k / t_mm / 1e12,
    }


def table_rows(rows):
    """One line per (batch, shape, mode): the times and each pair's ratio."""
    lines = []
    for r in rows:
        for mode in ("fwd", "fwd+bwd"):
            times = {name: r.get(f"{name} {mode} ms", float("nan")) for name in
                     ("cudnn", "native", "fused", "composed", "cudnn-fp32", "native-fp32",
                      "cudnn-bf16", "native-bf16")}
            ratios = [times[a] / times[b] for a, b in PAIRS]
            lines.append((r["batch"], r["shape"], mode, times, ratios))
    return lines


def print_table(rows, ceiling):
    print(f"\nceilings: copy {ceiling['copy_GBps']:.0f} GB/s, matmul fp32 "
          f"{ceiling['matmul_fp32_TFLOPs']:.1f} TFLOP/s, tf32 {ceiling['matmul_tf32_TFLOPs']:.1f} TFLOP/s")
    print(f"{'batch':>5} {'shape':>16} {'mode':>7} | {'cudnn':>7} {'native':>7} {'fused':>7} "
          f"{'compos':>7} {'c-fp32':>7} {'n-fp32':>7} {'c-bf16':>7} {'n-bf16':>7} | {'nat':>5} "
          f"{'fused':>5} {'comp':>5} {'fp32':>5} {'bf16':>5}")
    for batch, shape, mode, t, ratios in table_rows(rows):
        print(f"{batch:>5} {shape:>16} {mode:>7} | " + " ".join(f"{v:7.3f}" for v in t.values())
              + " | " + " ".join(f"{q:5.2f}" for q in ratios))


def markdown_table(rows):
    """The table of docs/gpu.md: times in ms and the native/cuDNN ratio of each precision."""
    out = ["| batch | shape | mode | cuDNN | native | ratio | fused | ratio | composed | ratio "
           "| cuDNN fp32 | native fp32 | ratio | cuDNN bf16 | native bf16 | ratio |",
           "|" + "---|" * 16]
    for batch, shape, mode, t, (native, fused, composed, fp32, bf16) in table_rows(rows):
        out.append(f"| {batch} | {shape} | {mode} | {t['cudnn']:.3f} | {t['native']:.3f} | "
                   f"**{native:.2f}** | {t['fused']:.3f} | {fused:.2f} | {t['composed']:.3f} | "
                   f"{composed:.2f} | {t['cudnn-fp32']:.3f} | {t['native-fp32']:.3f} | {fp32:.2f} | "
                   f"{t['cudnn-bf16']:.3f} | {t['native-bf16']:.3f} | {bf16:.2f} |")
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--reference", action="store_true", help="also time the keras.ops path")
    parser.add_argument("--transforms", action="store_true",
                        help="also time the composed path's transforms and product alone")
    parser.add_argument("--paths", help="comma-separated subset of the paths to time")
    parser.add_argument("--json")
    parser.add_argument("--markdown", help="write the table (markdown) to this file")
    args = parser.parse_args(argv)
    print("devices:", jax.devices())
    ceiling = ceilings()
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for h, w, c, k in RESNET18_SHAPES:
            rows.append(bench_shape(batch, h, w, c, k, args.repeats, args.reference,
                                    args.transforms, args.paths and args.paths.split(",")))
            print(json.dumps(rows[-1]), flush=True)
    print_table(rows, ceiling)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"{jax.devices()[0].device_kind}\n\n" + markdown_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(jax.devices()[0]), "ceilings": ceiling, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
