"""Recipe: full-width (64) ResNet-18 weights for Fashion-MNIST, dense and Winograd-ReLU pruned.

``train`` runs ``swcnn train``'s full recipe (``training.FULL``: SGD with
Nesterov momentum, cosine schedule with warm-up, random crop + flip + erasing,
40 dense epochs, then 8 epochs pruning the Winograd kernels 0.5 -> 0.3 -> 0.2
-> 0.1) in a resumable run folder, and packs both models' weights for the trip
back from a lent GPU machine, whose transfer takes files of at most 16 MiB: the
weights as float16 arrays in compressed ``.npz`` parts of 15 MiB. ``unpack``
rebuilds ``.weights.h5`` files (float32) from the parts and measures their
test accuracy after the float16 rounding.

    KERAS_BACKEND=jax python applications/fashion_mnist_resnet18_w64.py train --out DIR [--run-dir R]
    KERAS_BACKEND=jax python applications/fashion_mnist_resnet18_w64.py unpack DIR --output-dir W

On a GPU in one call: ``benchmarks/gpu_train.sh``. A width-64 epoch takes
seconds there and about 20 minutes on the 2-core CPU machine (resume makes
that possible in several sittings).
"""

import argparse
import glob
import io
import json
import os
import sys

import numpy as np

WIDTH = 64
PART_BYTES = 15 * 2 ** 20
MODELS = ("dense", "pruned")


def _pack(weights, path_prefix):
    """float16 copies of ``weights`` in one compressed .npz, written as parts of PART_BYTES."""
    for stale in glob.glob(f"{path_prefix}.npz.part*"):
        os.remove(stale)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, *[np.asarray(w, np.float16) for w in weights])
    data = buffer.getvalue()
    parts = []
    for i in range(0, len(data), PART_BYTES):
        parts.append(f"{path_prefix}.npz.part{i // PART_BYTES:02d}")
        with open(parts[-1], "wb") as f:
            f.write(data[i:i + PART_BYTES])
    return parts


def _unpack(path_prefix):
    parts = sorted(glob.glob(f"{path_prefix}.npz.part*"))
    if not parts:
        raise FileNotFoundError(f"No parts {path_prefix}.npz.part*")
    data = b""
    for part in parts:
        with open(part, "rb") as f:
            data += f.read()
    with np.load(io.BytesIO(data)) as arrays:
        return [arrays[f"arr_{i}"].astype(np.float32) for i in range(len(arrays.files))]


def train(args):
    from keras_swcnn.applications import curves, training

    run_dir = args.run_dir or os.path.join(args.out, "run")
    result = training.train_fashion_mnist(width=WIDTH, recipe=training.FULL, run_dir=run_dir,
                                          resume=True, validate=True)
    dense = training.build_model(WIDTH)
    training.RunDirectory(run_dir, resume=True).load("dense", dense)
    summary = {
        "width": WIDTH, "recipe": training.FULL.as_dict(),
        "dense_test_accuracy": result.dense_accuracy, "test_accuracy": result.accuracy,
        "winograd_weight_density": [r.weight_density for r in result.report.winograd_layers],
        "winograd_reduction": result.report.winograd_reduction,
        "model_reduction": result.report.reduction, "seconds": result.seconds,
        "parts": {name: [os.path.basename(p) for p in _pack(model.get_weights(), os.path.join(args.out, name))]
                  for name, model in (("dense", dense), ("pruned", result.model))},
    }
    # Next to the logs: gpu_train.sh returns the run folder's small files as one archive.
    curves.plot_training_curves(result.logs, os.path.join(run_dir, "curves.png"),
                                title=f"ResNet-18 (small, width {WIDTH}) on Fashion-MNIST")
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    json.dump(summary, sys.stdout, indent=1)


def unpack(args):
    from keras_swcnn.applications import training

    _, test = training.load_fashion_mnist()
    os.makedirs(args.output_dir, exist_ok=True)
    for name in MODELS:
        model = training.build_model(WIDTH)
        model.set_weights(_unpack(os.path.join(args.folder, name)))
        path = os.path.join(args.output_dir, f"resnet18_small_w{WIDTH}_fashion_mnist_{name}.weights.h5")
        model.save_weights(path)
        print(f"{path}: test accuracy {training.accuracy(model, *test):.4f} after float16 rounding")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    trainer = commands.add_parser("train")
    trainer.add_argument("--out", required=True, help="folder for the packed weights and summary")
    trainer.add_argument("--run-dir", help="resumable run folder (default OUT/run)")
    trainer.set_defaults(func=train)
    unpacker = commands.add_parser("unpack")
    unpacker.add_argument("folder", help="the folder train wrote (its .npz parts)")
    unpacker.add_argument("--output-dir", required=True)
    unpacker.set_defaults(func=unpack)
    args = parser.parse_args(argv)
    os.makedirs(getattr(args, "out", None) or args.output_dir, exist_ok=True)
    args.func(args)


if __name__ == "__main__":
    main()
