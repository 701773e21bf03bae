"""Recipe: the published ``fashion_mnist_small`` weights.

ResNet18(variant="small", width=16) on Fashion-MNIST: 2 dense epochs (Adam,
cosine decay), then the Winograd kernels pruned in one epoch through
densities 0.5 -> 0.3 -> 0.2 -> 0.1 (the paper's iterative recipe, shortened)
with fine-tuning at 0.1. Writes the weights into the package's data folder
and prints the sha256 and accuracy for the registry.

    KERAS_BACKEND=jax python applications/fashion_mnist_resnet18.py
"""

import hashlib
import json
import os
import sys

from keras_swcnn.applications import ResNet18
from keras_swcnn.applications.training import SMALL, train_fashion_mnist

HERE = os.path.dirname(os.path.abspath(__file__))
OUTPUT = os.path.join(HERE, "..", "keras_swcnn", "applications", "data",
                      "resnet18_small_w16_fashion_mnist.weights.h5")


def main():
    result = train_fashion_mnist(width=16, recipe=SMALL)  # 2 dense epochs, then 0.5 -> 0.1 in one
    # Save from a fresh, uncompiled model: the model weights only, no optimizer state.
    model = ResNet18(variant="small", input_shape=(28, 28, 1), classes=10, width=16,
                     classifier_activation=None)
    model.set_weights(result.model.get_weights())
    model.save_weights(OUTPUT)
    with open(OUTPUT, "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    summary = {
        "file": os.path.basename(OUTPUT), "sha256": sha256, "bytes": os.path.getsize(OUTPUT),
        "dense_test_accuracy": result.dense_accuracy, "test_accuracy": result.accuracy,
        "winograd_weight_density": [r.weight_density for r in result.report.winograd_layers],
        "winograd_reduction": result.report.winograd_reduction,
        "model_reduction": result.report.reduction, "seconds": result.seconds,
    }
    with open(os.path.join(HERE, "fashion_mnist_resnet18.json"), "w") as f:
        json.dump(summary, f, indent=1)
    json.dump(summary, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
