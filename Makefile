# The two commands of the README: `make demo` (main job) and `make test`.
# Both set up a fresh machine first (tools/setup.sh).
PYTHON ?= python3
BACKENDS ?= tensorflow jax torch
PYTEST_ARGS ?=

.PHONY: setup demo test

setup:
	PYTHON=$(PYTHON) bash tools/setup.sh

# Train + prune a small Winograd-ReLU ResNet-18 on Fashion-MNIST; report accuracy,
# densities and multiplications; write swcnn_densities.png (about 10 minutes on 2 cores).
demo: setup
	KERAS_BACKEND=jax swcnn demo

# One pytest run per Keras backend; stop at the first failing backend. Tests
# marked backend_independent (the numpy front door) or once_per_run (long training
# orchestration) run under the first only.
test: setup
	@set -e; skip=0; for backend in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$backend"; \
	  SWCNN_SKIP_BACKEND_INDEPENDENT=$$skip KERAS_BACKEND=$$backend $(PYTHON) -m pytest -q $(PYTEST_ARGS); \
	  skip=1; \
	done
