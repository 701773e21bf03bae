"""Shared fixtures and helpers: fresh random data and backend-specific autodiff."""

import os

import numpy as np
import pytest
import keras

# Awkward shapes: (N, H, W, C, K). Odd and even sizes, H or W = 1, batch 1,
# one channel, many channels.
SHAPES = [
    (2, 6, 8, 3, 4),
    (1, 5, 7, 2, 3),
    (3, 1, 9, 4, 2),
    (2, 7, 1, 1, 5),
    (1, 1, 1, 3, 2),
    (1, 4, 3, 1, 1),
    (2, 9, 6, 130, 67),
]
# 'valid' needs H, W >= 3.
VALID_SHAPES = [s for s in SHAPES if s[1] >= 3 and s[2] >= 3] + [(2, 3, 3, 2, 2)]
# (shape, padding) pairs covering both paddings.
CASES = [(s, "same") for s in SHAPES] + [(s, "valid") for s in VALID_SHAPES]

BACKEND = keras.backend.backend()


def with_test_helpers(env):
    """``env`` with this directory on ``PYTHONPATH``: for subprocesses that import the test
    helpers (``numpy_reference``, the check scripts)."""
    path = os.path.dirname(os.path.abspath(__file__))
    return {**env, "PYTHONPATH": path + os.pathsep + env.get("PYTHONPATH", "")}

if BACKEND == "jax":
    import jax

    # Parity tests compare float32 paths with each other: keep GPU matrix
    # products in full float32 (not TF32) for the reference path too.
    jax.config.update("jax_default_matmul_precision", "highest")


#: Set by ``make test`` for every backend after the first: tests marked
#: ``backend_independent`` (the numpy front door to the native kernels, which
#: never touches Keras) then skip, having run once already in the same command.
SKIP_BACKEND_INDEPENDENT = "SWCNN_SKIP_BACKEND_INDEPENDENT"


#: Markers of tests that run under the first backend of ``make test`` only.
ONCE_PER_RUN = ("backend_independent", "once_per_run")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "backend_independent: does not depend on the Keras backend (runs once per "
        "`make test`, under its first backend)")
    config.addinivalue_line(
        "markers", "once_per_run: long orchestration (training runs, the variant comparison) "
        "whose backend-dependent parts other tests check on every backend; runs under the "
        "first backend of `make test` only, to keep CI within its time")


def pytest_collection_modifyitems(config, items):
    if os.environ.get(SKIP_BACKEND_INDEPENDENT) != "1":
        return
    skip = pytest.mark.skip(reason="ran under the first backend of this run")
    for item in items:
        if any(marker in item.keywords for marker in ONCE_PER_RUN):
            item.add_marker(skip)


@pytest.fixture
def rng():
    """A generator with a fresh seed for every test; the seed is printed, so a failure can be replayed."""
    seed = int(np.random.SeedSequence().entropy % (2**63))
    print(f"random seed: {seed}")
    return np.random.default_rng(seed)


def random_normal(rng, shape, dtype="float32"):
    return rng.standard_normal(shape).astype(dtype)


def gradients(fn, *args):
    """Gradients of the scalar ``fn(*args)`` with respect to every argument, as numpy arrays."""
    if BACKEND == "jax":
        import jax

        grads = jax.grad(fn, argnums=tuple(range(len(args))))(*args)
        return [np.asarray(g) for g in grads]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = fn(*tensors)
        return [g.numpy() for g in tape.gradient(value, tensors)]
    if BACKEND == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in args]
        fn(*tensors).backward()
        return [t.grad.numpy() for t in tensors]
    pytest.skip(f"no gradient helper for backend {BACKEND}")


def as_if_not_installed(package):
    """Python source that, run first in a subprocess, makes importing ``package`` fail as it
    would where the package is not installed."""
    return f"""
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {package!r}:
            raise ModuleNotFoundError("No module named {package!r}", name={package!r})
sys.meta_path.insert(0, Absent())
"""
