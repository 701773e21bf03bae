#!/usr/bin/env bash
# Train the full-width (64) Fashion-MNIST ResNet-18 on a GPU in one call:
# build with CUDA, then applications/fashion_mnist_resnet18_w64.py train
# (dense, then Winograd-ReLU pruning to 0.1), all under TRAIN_LIMIT seconds.
# Writes to $OUT: logs.tar.gz (summary.json, curves.png, the CSV logs) and the
# weights as float16 .npz parts (the lent machine returns files of at most
# 16 MiB); unpack them here with `fashion_mnist_resnet18_w64.py unpack`.
#
# Fashion-MNIST travels in .device/keras/datasets/fashion-mnist (the loader
# looks in $KERAS_HOME/datasets first), Keras's wheels in .device/wheels:
#   mkdir -p .device/keras/datasets/fashion-mnist
#   cp /usr/share/datasets/fashion-mnist/*.gz .device/keras/datasets/fashion-mnist/
#   bash benchmarks/gpu_train.sh          (carry .device)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/swcnn-gpu-train}
source benchmarks/gpu_preamble.sh
export CUDA_ARCHS=${CUDA_ARCHS:-90}
export KERAS_HOME=${KERAS_HOME:-$PWD/.device/keras}
ls "$KERAS_HOME"/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz >/dev/null || {
  echo "Fashion-MNIST missing in $KERAS_HOME/datasets/fashion-mnist (see the header)"; exit 1; }
mkdir -p /tmp/swcnn-run
source benchmarks/gpu_setup.sh

elapsed "training (width 64, full recipe)"
timeout "${TRAIN_LIMIT:-450}" "$PY" applications/fashion_mnist_resnet18_w64.py train --out "$OUT" \
  --run-dir /tmp/swcnn-run 2>&1 | grep -v "^I0000" | tee "$OUT/train.log" | tail -40
status=${PIPESTATUS[0]}
# At most 8 files come back: train.log, logs.tar.gz (the run's logs, summary, curves, the GPU and
# the build log) and the weight parts (dense about 3, pruned 1).
for f in gpu.txt build.log; do [ -e "$OUT/$f" ] && mv "$OUT/$f" /tmp/swcnn-run/; done
tar czf "$OUT/logs.tar.gz" -C /tmp/swcnn-run --exclude='*_checkpoint' --exclude='*.weights.h5' \
  --exclude='*.npz' . 2>/dev/null
elapsed "done; status $status"
exit "$status"
