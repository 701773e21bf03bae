"""The compact form of the shipped Fashion-MNIST weights: the sparsified model as a ``.keras`` file.

Reads the registered ``fashion_mnist_small`` weights (Winograd kernels at density
0.10), turns every Winograd layer into a ``SparseWinogradReLUConv2D`` (a bit per
weight plus the non-zero values) and saves the model. The registry publishes the
file as ``fashion_mnist_small_sparse``; ``ResNet18(weights=...)`` rebuilds the
requested network from it. Prints the file's sha256 and the sizes.

    KERAS_BACKEND=jax python applications/compact_weights.py
"""

import hashlib
import json
import os
import sys

from keras_swcnn import sparse
from keras_swcnn.applications import ResNet18, weights_registry

HERE = os.path.dirname(os.path.abspath(__file__))
OUTPUT = os.path.join(weights_registry.DATA_DIR, "resnet18_small_w16_fashion_mnist_sparse.keras")


def main():
    dense = ResNet18(weights="fashion_mnist_small", classifier_activation=None)
    compact = sparse.sparsify(dense)
    compact.save(OUTPUT)
    with open(OUTPUT, "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    source = weights_registry.fetch(weights_registry.get_entry("fashion_mnist_small"))
    json.dump({"file": os.path.basename(OUTPUT), "sha256": sha256, "bytes": os.path.getsize(OUTPUT),
               "dense_file_bytes": os.path.getsize(source),
               "winograd_layers": len(sparse.sparse_layers(compact))}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
