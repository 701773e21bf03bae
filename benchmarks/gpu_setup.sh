# Sourced by the GPU scripts (gpu_check.sh, gpu_train.sh): Keras from carried
# wheels if missing, keras-swcnn built with CUDA into the source tree, the
# environment set for JAX. Needs: cd to the repository root and gpu_preamble.sh ($OUT, $PY,
# `elapsed`) sourced first.
#
# CUDA_ARCHS (default 80-real;90-real;90-virtual; "native": this GPU only).

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
if ! "$PY" -c "import keras" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/swcnn-site \
    "${SWCNN_WHEELS:-.device/wheels}"/*.whl || exit 1
  export PYTHONPATH=/tmp/swcnn-site${PYTHONPATH:+:$PYTHONPATH}
fi

elapsed "building (SWCNN_CUDA=ON)"
if ! { cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSWCNN_CUDA=ON \
         -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-80-real;90-real;90-virtual}" \
         -DPython_EXECUTABLE="$(command -v "$PY")" -DCMAKE_CUDA_FLAGS="-Xptxas=-v" &&
       cmake --build build/gpu -j "$(nproc)"; } > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  exit 1
fi
grep -E "Compiling entry|Used [0-9]+ registers|spill" "$OUT/build.log" | grep -A2 "sm_90" |
  grep -E "Used|spill" | head -24
cp build/gpu/_native*.so keras_swcnn/
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
"$PY" -c "import keras_swcnn, json; print(json.dumps(keras_swcnn.build_info()))"
