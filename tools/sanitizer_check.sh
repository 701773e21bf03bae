#!/usr/bin/env bash
# Build the CPU extension with AddressSanitizer + UndefinedBehaviorSanitizer
# (CMake option SWCNN_SANITIZE=ON) and run the native tests against it.
# Any sanitizer report aborts the run with a non-zero exit status.
#
#   bash tools/sanitizer_check.sh [pytest args]
#   KERAS_BACKEND=tensorflow SANITIZER_TESTS=tests/test_native_ops.py bash tools/sanitizer_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
BUILD=build/sanitize
GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)
cmake -S . -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Debug -DSWCNN_SANITIZE=ON -DSWCNN_CUDA=OFF \
  -DPython_EXECUTABLE="$(command -v "$PYTHON")" > /dev/null
cmake --build "$BUILD" -j "$(nproc)" > /dev/null
library=$(ls "$BUILD"/_native*.so)
export KERAS_SWCNN_NATIVE_LIBRARY="$PWD/$library"
# Python itself is not built with ASan: preload the runtime, skip leak checks
# (the interpreter's own allocations), and stop at the first error.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
TESTS=${SANITIZER_TESTS:-tests/test_native_transforms.py tests/test_native_ops.py \
tests/test_fused_conv.py tests/test_sparse.py}
# shellcheck disable=SC2086  # TESTS is a list of paths
KERAS_BACKEND=${KERAS_BACKEND:-jax} "$PYTHON" -m pytest -q -p no:cacheprovider $TESTS "$@"
