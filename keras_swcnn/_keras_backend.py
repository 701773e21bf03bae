"""Choose an installed Keras backend when the user has not chosen one, before Keras is imported.

Keras uses ``KERAS_BACKEND``, else the ``"backend"`` of ``$KERAS_HOME/keras.json``
(``~/.keras/keras.json``), else TensorFlow, and writes that file with
``"tensorflow"`` on its first import. On an install with only JAX or only torch
(``pip install "keras-swcnn[jax]"``) ``import keras`` then fails with "No module
named 'tensorflow'". Here, when the environment variable is unset and the file is
absent or names a backend that is not installed, an installed one is chosen
(TensorFlow, JAX, torch in that order, so nothing changes where TensorFlow is
installed); with none installed the error says how to install one.
"""

import importlib.util
import json
import os
import sys

#: The backends chosen from, in order of preference; each is also the module it needs.
BACKENDS = ("tensorflow", "jax", "torch")


def _installed(backend):
    try:
        return importlib.util.find_spec(backend) is not None
    except (ImportError, ValueError):
        return False


def config_path(environ=os.environ):
    """Where Keras reads ``keras.json``."""
    home = environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "keras.json")


def configured_backend(environ=os.environ):
    """The backend ``keras.json`` names, or ``None`` (no file, unreadable, no entry)."""
    try:
        with open(config_path(environ)) as f:
            return json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        return None


def choose(environ=os.environ, installed=_installed):
    """``(backend, note)``: the backend to set in ``KERAS_BACKEND`` (``None``: leave Keras be).

    ``note`` explains a choice that overrides ``keras.json``.

    Raises:
        ImportError: no backend chosen and none installed.

    Example:
        >>> choose({"KERAS_BACKEND": "jax"})
        (None, None)
    """
    if environ.get("KERAS_BACKEND"):
        return None, None
    configured = configured_backend(environ)
    if configured and (configured not in BACKENDS or installed(configured)):
        return None, None  # Keras's own choice (numpy, openvino, or its own error for a bad name)
    available = [b for b in BACKENDS if installed(b)]
    if not available:
        raise ImportError(
            "keras-swcnn needs a Keras backend and none is installed: pip install "
            "'keras-swcnn[tensorflow]' (or [jax] or [torch]), then set KERAS_BACKEND if more than one.")
    note = None
    if configured:
        note = (f"keras-swcnn: using the {available[0]} backend, because {config_path(environ)} names "
                f"{configured!r}, which is not installed; set KERAS_BACKEND to choose.")
    return available[0], note


def apply(environ=os.environ):
    """Set ``KERAS_BACKEND`` per :func:`choose`, unless Keras is already imported (then it is fixed)."""
    if "keras" in sys.modules:
        return
    backend, note = choose(environ)
    if backend:
        environ["KERAS_BACKEND"] = backend
    if note:
        print(note, file=sys.stderr)
