"""tfmot's own pruning on the tf_keras WinogradReLUConv2D, end to end.

Runs tfmot_integration_check.py in a subprocess: importing tfmot switches
TensorFlow to legacy Keras for the whole process, which must not leak into
the other tests.
"""

import os
import subprocess
import sys

import keras
import pytest

pytest.importorskip("tensorflow_model_optimization")
pytest.importorskip("tf_keras")
# The check runs in its own TensorFlow process whatever the backend under test: run it once,
# in the TensorFlow pass of the suite.
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="backend-independent; runs in the tensorflow pass")


def test_tfmot_end_to_end():
    script = os.path.join(os.path.dirname(__file__), "tfmot_integration_check.py")
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    result = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    for line in ("forward matches numpy", "UpdatePruningStep / strip_pruning", "sparsity_m_by_n=(2, 4)",
                 "weights convert", "TFLite interpreter", "the Keras 3 layer's rules"):
        assert line in result.stdout, result.stdout
