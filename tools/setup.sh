#!/usr/bin/env bash
# Set up a fresh machine for the demo and the tests: Fashion-MNIST from Debian's
# package, and this package (editable, with the TensorFlow, JAX and torch
# backends and the test tools). Safe to run again: every step is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

# PIP_CONSTRAINT also pins the isolated build environment (jax, whose FFI
# headers the native library compiles against).
PIP_CONSTRAINT="$PWD/tools/constraints.txt" \
  "$PYTHON" -m pip install -q --disable-pip-version-check -c tools/constraints.txt \
  -e ".[tensorflow,jax,torch,tfmot,dev]"
"$PYTHON" -c "import keras_swcnn, json; print(json.dumps(keras_swcnn.build_info()))"
