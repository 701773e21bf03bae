"""Exported model sizes: LiteRT and SavedModel files of ResNet-18 (small), raw and gzipped.

Three models with the same architecture as the shipped ``fashion_mnist_small``
weights: freshly initialised (no zeros), the shipped weights (Winograd kernels
pruned to density 0.10, stored dense), and the same sparsified
(``SparseWinogradReLUConv2D``: compressed kernels). tfmot reports pruning's
benefit the same way: the gzipped size, since a dense file full of zeros
compresses. Also checks that each LiteRT file reproduces the Keras outputs.

    KERAS_BACKEND=tensorflow python benchmarks/export_sizes.py [--out DIR] [--json FILE]
"""

import argparse
import json
import os
import tempfile

import numpy as np

from keras_swcnn import export, sparse
from keras_swcnn.applications import ResNet18


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="directory for the files (default: a temporary one)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp()
    shipped = ResNet18(weights="fashion_mnist_small")
    os.makedirs(out, exist_ok=True)
    models = {
        "unpruned (fresh weights)": ResNet18(weights=None, variant="small", input_shape=(28, 28, 1),
                                             classes=10, width=16),
        "density 0.10, dense kernels": shipped,
        "density 0.10, sparse layers": sparse.sparsify(shipped),
    }
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    rows = []
    for number, (label, model) in enumerate(models.items()):
        expected = model.predict(x, verbose=0)
        for extension in (".tflite", ""):
            path = os.path.join(out, f"model{number}{extension or '_saved_model'}")
            export.export_model(model, path)
            raw, packed = export.artifact_size(path)
            row = dict(model=label, format="litert" if extension else "tf_saved_model", bytes=raw,
                       gzipped=packed)
            if extension:
                got = export.litert_outputs(path, x)
                row["max_abs_error"] = float(np.abs(got - expected).max())
            rows.append(row)
            print(f"{label:30s} {row['format']:15s} {raw / 1e6:6.2f} MB  gzipped {packed / 1e6:6.2f} MB"
                  + (f"  LiteRT max |error| {row['max_abs_error']:.1e}" if extension else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
