"""Data-parallel training throughput: ``fit`` images/s on N virtual CPU devices vs one.

Runs ``examples/data_parallel.py`` (the Fashion-MNIST Winograd-ReLU CNN) in a
fresh process per run, since the device count is fixed when the backend
starts: with one device and with ``--devices N`` (JAX: ``DataParallel``;
TensorFlow: ``MirroredStrategy``), and with two JAX processes of one device
each (``--processes``). Runs are interleaved and repeated; the ratio is of
median images/s against the one-device run. Benchmarks are not tests: they
report.

    KERAS_BACKEND=jax python benchmarks/data_parallel_benchmark.py [--devices 2] [--repeats 3]
"""

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "data_parallel.py")


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(candidate, args):
    """Images/s of one training run of ``candidate`` ("1 device", "N devices", "2 processes")."""
    common = [sys.executable, EXAMPLE, "--json", "--train-samples", str(args.samples),
              "--width", str(args.width), "--batch-size", str(args.batch)]
    if candidate == "2 processes":
        port = _free_port()
        commands = [common + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                              "--process-id", str(i)] for i in range(2)]
    else:
        commands = [common + ["--devices", candidate.split()[0]]]
    workers = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
               for c in commands]
    outputs = [worker.communicate(timeout=1200)[0] for worker in workers]
    if any(worker.returncode for worker in workers):
        raise SystemExit(f"{candidate}: a run failed")
    return json.loads(outputs[0].strip().splitlines()[-1])["images_per_s"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--processes", action="store_true",
                        help="JAX: also two processes of one device each")
    parser.add_argument("--samples", type=int, default=8192, help="images per timed epoch")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    backend = os.environ.get("KERAS_BACKEND", "jax")
    candidates = ["1 device", f"{args.devices} devices"]
    if args.processes:
        candidates.append("2 processes")
    print(f"backend={backend} machine={platform.machine()} cpus={os.cpu_count()} "
          f"batch={args.batch} samples={args.samples} width={args.width}")
    rates = {c: [] for c in candidates}
    for _ in range(args.repeats):
        for candidate in candidates:  # interleaved: drift hits every candidate alike
            rates[candidate].append(run(candidate, args))
    base = statistics.median(rates["1 device"])
    for candidate, values in rates.items():
        median = statistics.median(values)
        print(f"{candidate:>12}: {median:8.1f} images/s ({median / base:.2f}x of 1 device; "
              f"runs {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
