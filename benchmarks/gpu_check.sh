#!/usr/bin/env bash
# GPU check, in one call: build keras-swcnn with CUDA, run the GPU parity and
# training tests, then the GPU benchmark; print a short table last.
#
# For a machine with an NVIDIA GPU, JAX with CUDA, nvcc, cmake, ninja,
# nanobind and pytest, and no network. If Keras is missing, its wheels are
# installed from $SWCNN_WHEELS (default .device/wheels: keras, namex, optree).
# Logs and the benchmark JSON go to $OUT (default /tmp/swcnn-gpu-check).
# Finishes in about 9 minutes on an H100 (each phase has a time limit). For a
# shorter run: CUDA_ARCHS=native (build for this GPU only), BENCH_PATHS=cudnn,
# native,... (a subset of gpu_benchmark.py's paths), FIT_POLICIES="" (no fit
# benchmark), SUITES=0 (no general parity suites), TESTS_LIMIT/BENCH_LIMIT (s).
#
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/swcnn-gpu-check}
source benchmarks/gpu_preamble.sh

source benchmarks/gpu_setup.sh

elapsed "GPU tests"
timeout "${TESTS_LIMIT:-150}" "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 |
  tee "$OUT/tests.log" | tail -15
tests_status=${PIPESTATUS[0]}

elapsed "benchmark"
timeout "${BENCH_LIMIT:-200}" "$PY" benchmarks/gpu_benchmark.py --batches 64,256 \
  --repeats "${REPEATS:-10}" ${BENCH_PATHS:+--paths "$BENCH_PATHS"} \
  --json "$OUT/gpu_benchmark.json" --markdown "$OUT/gpu_table.md" 2>&1 |
  grep -v "^{" | tee "$OUT/benchmark.log"

elapsed "fit: ResNet18 small, width 64, Winograd vs spatial"
for policy in ${FIT_POLICIES-float32 mixed_bfloat16}; do
  timeout 90 "$PY" benchmarks/fit_benchmark.py --widths 64 --samples 16384 --batch 128 \
    --repeats 2 --dtype-policy "$policy" 2>&1 | grep -E "^(backend|width)|Error" | tee -a "$OUT/fit.log"
done

[ "${SUITES:-1}" = 1 ] || { elapsed "done; tests exit status $tests_status"; exit "$tests_status"; }
elapsed "parity suites on the GPU"
# They compare with float32 at 1e-5: float32-accurate products (test_gpu.py
# sets each precision itself).
JAX_DEFAULT_MATMUL_PRECISION=highest timeout 120 "$PY" -m pytest -q -p no:cacheprovider \
  tests/test_native_ops.py tests/test_layer.py 2>&1 | tee -a "$OUT/tests.log" | tail -6
[ "${PIPESTATUS[0]}" = 0 ] || tests_status=1
elapsed "done; tests exit status $tests_status"
exit "$tests_status"
