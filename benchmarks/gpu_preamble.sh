# Sourced first by the GPU scripts: $PY, $OUT created, and `elapsed MESSAGE`
# (seconds since the script started). The caller sets OUT.
PY=${PYTHON:-python3}
mkdir -p "$OUT"
start=$(date +%s)
elapsed() { echo "[$(( $(date +%s) - start )) s] $*"; }
