"""GPU benchmark (JAX): cuDNN conv vs the reference and native Winograd-ReLU paths.

For the ResNet-18-var layer shapes at the given batch sizes, prints the median
time of forward and forward+backward for:
  cudnn       jax.lax.conv_general_dilated, default precision (TF32 on Ampere+)
  cudnn-fp32  the same with Precision.HIGHEST (full float32, the fair baseline
              for the native path, which computes its products in float32)
  reference   keras_swcnn's keras.ops path
  native      keras_swcnn's CUDA custom calls + cuBLAS batched products
with ratios to cudnn-fp32, effective TFLOP/s (direct-conv FLOPs / time), and
each native transform's achieved GB/s against the copy bandwidth measured in
the same run. Benchmarks report; they do not assert.

    KERAS_BACKEND=jax python benchmarks/gpu_benchmark.py --batches 64,256 --json out.json
"""

import argparse
import json
import statistics
import time

import numpy as np
import jax
import jax.numpy as jnp

from keras_swcnn import winograd
from keras_swcnn.benchmark import RESNET18_SHAPES
from keras_swcnn.ops import jax_native, reference

HIGHEST = jax.lax.Precision.HIGHEST


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


def paths():
    native = lambda x, u: jax_native.winograd_conv2d(x, u, "same", "relu")  # noqa: E731
    ref = lambda x, u: reference.winograd_conv2d(x, u, "same", "relu")  # noqa: E731
    return {"cudnn": conv_fn(None), "cudnn-fp32": conv_fn(HIGHEST), "reference": ref,
            "native": native}


def bench_shape(batch, h, w, c, k, repeats):
    key = jax.random.PRNGKey(batch + h + c)
    x = jax.random.normal(key, (batch, h, w, c), jnp.float32)
    g = jax.random.normal(key, (3, 3, c, k), jnp.float32) * 0.05
    u = jnp.asarray(winograd.spatial_to_winograd(np.asarray(g)))
    dy = jax.random.normal(key, (batch, h, w, k), jnp.float32)
    flops = 2 * 9 * batch * h * w * c * k
    row = {"batch": batch, "shape": f"{h}x{w}x{c}->{k}", "direct_conv_GFLOP": flops / 1e9}
    for name, fn in paths().items():
        weights = g if name.startswith("cudnn") else u
        fwd = jax.jit(fn)
        # dy is an argument, not a closure: a captured array becomes an XLA
        # constant, and constant folding it costs seconds of compile time.
        bwd = jax.jit(jax.grad(lambda x, w, dy, fn=fn: jnp.sum(fn(x, w) * dy), argnums=(0, 1)))
        row[f"{name} fwd ms"] = 1e3 * median_seconds(fwd, x, weights, repeats=repeats)
        row[f"{name} fwd+bwd ms"] = 1e3 * median_seconds(bwd, x, weights, dy, repeats=repeats)
    # The native transforms alone, against the bytes they must move.
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
    row["input transform ms"] = 1e3 * t_in
    row["input transform GBps"] = 4 * (x.size + 16 * tiles * c) / t_in / 1e9
    row["output transform ms"] = 1e3 * t_out
    row["output transform GBps"] = 4 * (16 * tiles * k + batch * h * w * k) / t_out / 1e9
    row["batched product ms"] = 1e3 * t_mm
    row["batched product TFLOPs"] = 2 * 16 * tiles * c * k / t_mm / 1e12
    return row


def print_table(rows, ceiling):
    print(f"\nceilings: copy {ceiling['copy_GBps']:.0f} GB/s, matmul fp32 "
          f"{ceiling['matmul_fp32_TFLOPs']:.1f} TFLOP/s, tf32 {ceiling['matmul_tf32_TFLOPs']:.1f} TFLOP/s")
    head = (f"{'batch':>5} {'shape':>16} | {'mode':>7} | {'cudnn':>7} {'cudnn32':>7} "
            f"{'ref':>7} {'native':>7} | {'nat/c32':>7} {'nat/cud':>7} {'ref/c32':>7} | {'nat TF/s':>8}")
    print(head)
    for r in rows:
        for mode, key in (("fwd", "fwd ms"), ("fwd+bwd", "fwd+bwd ms")):
            t = {p: r[f"{p} {key}"] for p in ("cudnn", "cudnn-fp32", "reference", "native")}
            work = r["direct_conv_GFLOP"] * (1 if mode == "fwd" else 3)
            print(f"{r['batch']:>5} {r['shape']:>16} | {mode:>7} | {t['cudnn']:7.3f} "
                  f"{t['cudnn-fp32']:7.3f} {t['reference']:7.3f} {t['native']:7.3f} | "
                  f"{t['native'] / t['cudnn-fp32']:7.2f} {t['native'] / t['cudnn']:7.2f} "
                  f"{t['reference'] / t['cudnn-fp32']:7.2f} | {work / t['native']:8.1f}")
        print(f"{'':>24} transforms: input {r['input transform ms']:.3f} ms "
              f"({r['input transform GBps']:.0f} GB/s = {r['input transform GBps'] / ceiling['copy_GBps']:.0%} of copy), "
              f"output {r['output transform ms']:.3f} ms ({r['output transform GBps']:.0f} GB/s = "
              f"{r['output transform GBps'] / ceiling['copy_GBps']:.0%}), product {r['batched product ms']:.3f} ms "
              f"({r['batched product TFLOPs']:.1f} TFLOP/s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    print("devices:", jax.devices())
    ceiling = ceilings()
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for h, w, c, k in RESNET18_SHAPES:
            rows.append(bench_shape(batch, h, w, c, k, args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    print_table(rows, ceiling)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(jax.devices()[0]), "ceilings": ceiling, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
