"""Which implementation ``implementation="auto"`` means while a model is exported.

An exported model must run where keras_swcnn is not installed, so while an
exporter traces a model, ``"auto"`` selects the portable lowering
(``keras_swcnn.ops.portable``: standard convolutions, no custom calls) instead of
the native kernels. Exporters are recognised by the code that is tracing:
Keras's ``model.export`` (every format), ``tf.saved_model.save``, TensorFlow's
``TFLiteConverter``, ``jax.export`` and ``jax2tf``, ``tf2onnx``, ``torch.export``
and ``torch.onnx``.

``implementation(name)`` overrides the choice for everything traced inside it:
``implementation("native")`` exports the native kernels (faster, but the
artifact then runs only in a process where keras_swcnn has registered them, on the
same platform: on TensorFlow, call ``keras_swcnn.ops.tensorflow_native.register()``
before loading a SavedModel that holds the ``Swcnn*`` ops); ``implementation("portable")`` forces the portable lowering elsewhere
(e.g. a hand-written ``tf.function`` that is serialised later). A layer created
with an explicit ``implementation=`` keeps it. ``jax.export`` refuses custom calls
without a compatibility guarantee; a native JAX export passes
``disabled_checks=jax_native_checks()``.

Example:
    >>> import keras, keras_swcnn
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras_swcnn.WinogradReLUConv2D(4)])
    >>> model.export("model_dir", format="tf_saved_model")  # doctest: +SKIP
    >>> with keras_swcnn.export.implementation("native"):  # doctest: +SKIP
    ...     model.export("native_dir", format="tf_saved_model")
"""

import contextlib
import contextvars
import gzip
import os
import sys

#: Modules whose code, when on the stack of a layer call, means the call is being exported.
EXPORTER_MODULES = (
    "keras.src.export",
    "tensorflow.python.saved_model",
    "tensorflow.lite",
    "jax._src.export",
    "jax.experimental.jax2tf",
    "tf2onnx",
    "torch.export",
    "torch.onnx",
)
CHOICES = ("native", "reference", "portable")

_scoped = contextvars.ContextVar("keras_swcnn_export_implementation", default=None)


def exporting():
    """Whether the current call comes from an exporter (one of ``EXPORTER_MODULES``)."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith(EXPORTER_MODULES):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def implementation(name):
    """Inside the block, ``implementation="auto"`` means ``name`` (``"native"``, ``"reference"``, ``"portable"``).

    Example:
        >>> with implementation("portable"):
        ...     auto_means()
        'portable'
    """
    if name not in CHOICES:
        raise ValueError(f"implementation must be one of {CHOICES}, got {name!r}.")
    token = _scoped.set(name)
    try:
        yield
    finally:
        _scoped.reset(token)


def auto_means():
    """What ``"auto"`` stands for here: a scoped choice, ``"portable"`` while exporting, else ``"auto"``."""
    scoped = _scoped.get()
    if scoped is not None:
        return scoped
    return "portable" if exporting() else "auto"


def jax_native_checks():
    """``jax.export``'s ``disabled_checks`` that admit the native kernels' FFI targets.

    Such an artifact runs only in a process that has registered the targets (has
    imported keras_swcnn and run a layer), with the same version of the kernels.

    Example:
        >>> with implementation("native"):  # doctest: +SKIP
        ...     exported = jax.export.export(jax.jit(model), disabled_checks=jax_native_checks())(spec)
    """
    import jax

    from keras_swcnn import native

    targets = set(native._require().jax_cpu_targets())
    if native.cuda_module() is not None:
        targets |= set(native.cuda_module().jax_cuda_targets())
    return [jax.export.DisabledSafetyCheck.custom_call(name) for name in sorted(targets)]


#: ``model.export`` formats by the output's extension (anything else: a SavedModel directory).
FORMATS_BY_EXTENSION = {".tflite": "litert", ".onnx": "onnx"}


def export_model(model, path, format=None, native=False, **kwargs):
    """``model.export(path, format)``, portable unless ``native``; the format follows ``path``.

    Args:
        model: a Keras model.
        path: ``.tflite`` (LiteRT), ``.onnx``, or a directory (``tf_saved_model``).
        format: overrides the format the extension implies.
        native: export the native custom calls (see :func:`implementation`).
        **kwargs: passed to ``model.export``.

    Returns:
        ``path``.

    Example:
        >>> export_model(model, "resnet18.tflite")  # doctest: +SKIP
        'resnet18.tflite'
    """
    path = os.fspath(path)
    if format is None:
        format = FORMATS_BY_EXTENSION.get(os.path.splitext(path)[1], "tf_saved_model")
    with implementation("native" if native else "portable"):
        model.export(path, format=format, verbose=False, **kwargs)
    return path


def artifact_size(path):
    """``(bytes, gzipped bytes)`` of an exported file, or of all files of a directory (tar-free sum).

    Example:
        >>> artifact_size("resnet18.tflite")  # doctest: +SKIP
        (2772776, 912410)
    """
    files = [path] if os.path.isfile(path) else [
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
    raw = packed = 0
    for name in files:
        with open(name, "rb") as f:
            data = f.read()
        raw += len(data)
        packed += len(gzip.compress(data, compresslevel=9))
    return raw, packed


def litert_outputs(model, x):
    """Run a LiteRT model (a ``.tflite`` path or its bytes) on the batch ``x`` in TensorFlow's interpreter.

    The input is resized to ``x``'s batch, so a model exported with an unknown batch size
    runs on any. Returns the first output as a numpy array.

    Example:
        >>> litert_outputs("model.tflite", images)  # doctest: +SKIP
    """
    import tensorflow as tf

    if isinstance(model, (bytes, bytearray)):
        interpreter = tf.lite.Interpreter(model_content=bytes(model))
    else:
        interpreter = tf.lite.Interpreter(model_path=os.fspath(model))
    entry = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(entry["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(entry["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
