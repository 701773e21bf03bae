"""Native Winograd primitives for the TensorFlow backend, on the CPU.

The fused kernels reach TensorFlow two ways, both registered at run time into
the TensorFlow already loaded by Python (TensorFlow is not a build dependency):

- **TensorFlow ops** (``SwcnnConvForward``, ``SwcnnConvBackward``,
  ``SwcnnSparseConvForward``), registered through TensorFlow's stable C API
  (``native/tensorflow/graph_ops.cc``). They run in eager code and in graphs
  (``model.fit`` with TensorFlow's default ``jit_compile=False``), on a batch of
  any size (``fit`` traces with an unknown one), and report bad shapes and
  exhausted memory as TensorFlow errors.
- **XLA custom calls** (``swcnn_tf_conv_forward`` ...), registered in XLA's
  custom-call registry and emitted with ``XlaCustomCallV2`` inside
  ``tf.function(jit_compile=True)``. They serve code that XLA compiles
  (``jit_compile=True``), where an ordinary op cannot run. XLA needs static
  shapes: with the batch unknown while tracing, the layer runs the fused calls
  on chunks of a static number of images in an XLA loop, then image by image.
  TensorFlow gives custom calls no error channel, so every shape is validated
  here, while tracing.

Gradients come from ``tf.custom_gradient``; the backward pass recomputes the
transformed tiles from the input instead of keeping them (4x the input's size).
The height, width and channels must be known when the function is traced (the
tile geometry is computed here, once per call site).

Dtype rule: the kernels compute in float32; other floating inputs are cast
to float32 and the result is cast back to the input's dtype.

Example:
    >>> import numpy as np
    >>> from keras_swcnn.ops import tensorflow_native
    >>> x = np.random.rand(1, 6, 6, 2).astype("float32")
    >>> u = np.random.rand(4, 4, 2, 3).astype("float32")
    >>> tuple(tensorflow_native.winograd_conv2d(x, u).shape)
    (1, 6, 6, 3)
"""

import os

import tensorflow as tf
from tensorflow.compiler.tf2xla.ops import gen_xla_ops
from tensorflow.python.eager import context, execute
from tensorflow.python.framework import op_def_library
from tensorflow.python.ops import control_flow_util

from keras_swcnn import native, winograd
from keras_swcnn.ops import SPARSE_MODES
from keras_swcnn.ops._shapes import check_kernel_fits, images_in

_state = {"registered": False, "error": None, "graph_ops_error": None}

#: TensorFlow releases (major.minor) whose XLA the custom calls are verified with: the
#: registry's mangled ``Register`` signature and the legacy custom-call ABI. With any
#: other release "auto" takes the reference path (and "native" says why).
VERIFIED_TENSORFLOW = ("2.21",)


def version_unverified_reason(version):
    """Why TensorFlow ``version`` cannot host the custom calls, or ``None`` if it can."""
    release = ".".join(version.split(".")[:2])
    if release in VERIFIED_TENSORFLOW:
        return None
    return (f"TensorFlow {version} is not a release the custom calls are verified with "
            f"({', '.join(VERIFIED_TENSORFLOW)}); registering into its XLA is not attempted")


def _register():
    """Register the XLA custom calls and the TensorFlow ops; the custom calls' error, if any.

    The ops are optional: where they cannot be registered (reason in
    ``_state["graph_ops_error"]``), the layer runs the custom calls everywhere.
    """
    if not _state["registered"] and _state["error"] is None:
        directory = os.path.dirname(tf.__file__)
        try:
            native._require().register_tensorflow_cpu_targets(
                os.path.join(directory, "libtensorflow_cc.so.2"))
            _state["registered"] = True
        except (RuntimeError, OSError) as error:
            _state["error"] = str(error)
            return _state["error"]
        try:
            native._require().register_tensorflow_graph_ops(
                os.path.join(directory, "libtensorflow_framework.so.2"))
        except (RuntimeError, OSError) as error:
            _state["graph_ops_error"] = str(error)
    return _state["error"]


def _use_ops():
    """Whether to run the TensorFlow ops here: registered, and not inside code that XLA
    compiles (``jit_compile=True``), where only the custom calls can run."""
    return (_state["registered"] and _state["graph_ops_error"] is None
            and not control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def _run_op(name, inputs, attrs, num_outputs):
    """Run (eagerly) or add (to the graph being traced) one of the registered ops.

    ``inputs`` and ``attrs`` are dicts in the op's declared order. This is what the
    wrappers TensorFlow generates for its own ops do; the ops are registered at run
    time, so there is no generated wrapper.
    """
    if context.executing_eagerly():
        flat_attrs = tuple(item for pair in attrs.items() for item in pair)
        return execute.execute(name, num_outputs, list(inputs.values()), flat_attrs,
                               context.context())
    _, _, _, outputs = op_def_library._apply_op_helper(name, **inputs, **attrs)
    return outputs


def unavailable_reason():
    """``None`` when the native TensorFlow path can run here, else why it cannot.

    The first call registers the kernels into the loaded TensorFlow (``register`` is the
    public way to do only that). Computed once per process (the answer cannot change once TensorFlow has
    initialised its devices); every layer call asks.
    """
    if "reason" not in _state:
        _state["reason"] = _find_unavailable_reason()
    return _state["reason"]


def _find_unavailable_reason():
    if not native.available():
        return f"the native extension did not load ({native.load_error})"
    unverified = version_unverified_reason(tf.__version__)
    if unverified:
        return unverified
    # Physical, not logical, devices: listing logical ones initialises TensorFlow's
    # runtime, after which the user can no longer configure devices.
    if tf.config.list_physical_devices("GPU"):
        return ("TensorFlow sees a GPU; the TensorFlow custom calls are CPU-only "
                "(GPU custom calls are not verified with TensorFlow)")
    error = _register()
    if error:
        return f"registering the TensorFlow custom calls failed: {error}"
    return None


def _require_available():
    """Register the kernels, or ``RuntimeError`` saying why the native path cannot run here."""
    error = unavailable_reason()
    if error:
        raise RuntimeError(f"The native TensorFlow path is not available: {error}.")


def register():
    """Register the native kernels (TensorFlow ops and XLA custom calls) in the loaded TensorFlow.

    Layers do this themselves on their first native call. A process that loads a
    SavedModel exported with ``keras_swcnn.export.implementation("native")`` calls it
    first, since the model's graph names the ``Swcnn*`` ops. Raises ``RuntimeError``
    saying why where the native path cannot run here.

    Example:
        >>> from keras_swcnn.ops import tensorflow_native
        >>> tensorflow_native.register()  # doctest: +SKIP
        >>> # loaded = tf.saved_model.load("native_dir")
    """
    _require_available()
    if _state["graph_ops_error"]:
        raise RuntimeError(f"The TensorFlow ops could not be registered: "
                           f"{_state['graph_ops_error']}.")


def can_run(x):
    """Whether ``x``'s static shape allows the native path (H, W, C known while tracing)."""
    shape = tf.TensorShape(getattr(x, "shape", None))
    return shape.rank == 4 and all(d is not None for d in shape.as_list()[1:])


# Which of the kernels' own checks (in the native module) a target's configuration
# passes, and how many of its leading values it takes.
_CHECKS = {
    "swcnn_tf_input_transform": ("check_input_transform", 8),
    "swcnn_tf_input_transform_backward": ("check_input_transform", 8),
    "swcnn_tf_output_transform": ("check_output_transform", 6),
    "swcnn_tf_output_transform_backward": ("check_output_transform", 6),
    "swcnn_tf_conv_forward": ("check_conv", 11),
    "swcnn_tf_conv_backward": ("check_conv", 11),
    "swcnn_tf_sparse_conv_forward": ("check_conv", 11),
}


def _check(target, config):
    """Raise ``ValueError`` now, while tracing, for a shape the kernel would refuse at run time
    (where TensorFlow gives it no way to report an error): the kernels' own check, not a copy."""
    name, count = _CHECKS[target]
    error = getattr(native._require(), name)(*(int(v) for v in config[:count]))
    if error:
        raise ValueError(f"keras_swcnn: {error} (shape {tuple(int(v) for v in config[:count])}).")


def _custom_call(target, operands, shape, *config):
    """One custom call; ``shape`` is a shape, or a list of shapes for a tuple of results."""
    _check(target, config)
    shapes = shape if isinstance(shape, list) else [shape]
    # The kernel sizes its reads from the traced shapes: pin them, so that a tensor
    # whose static shape was asserted wrongly (set_shape) fails instead of being overrun.
    operands = [tf.ensure_shape(operand, operand.shape) for operand in operands]
    results = gen_xla_ops.xla_custom_call_v2(
        operands=operands, call_target_name=target,
        backend_config=" ".join(str(int(v)) for v in config), has_side_effect=False,
        result_dtypes=[tf.float32] * len(shapes), result_shapes=shapes,
    )
    return results if isinstance(shape, list) else results[0]


def _input_config(x_shape, g, relu):
    n, h, w, c = x_shape
    return (n, h, w, c, g.pad_top, g.pad_left, g.tiles_h, g.tiles_w, relu)


def _input_transform(x, g, relu):
    n, _, _, c = x.shape
    return _custom_call("swcnn_tf_input_transform", [x], (16, n * g.tiles_h * g.tiles_w, c),
                        *_input_config(x.shape, g, relu))


def _input_transform_backward(dv, v, x_shape, g, relu):
    return _custom_call("swcnn_tf_input_transform_backward", [dv, v], tuple(x_shape),
                        *_input_config(x_shape, g, relu))


def _output_config(n, g, k):
    return (n, g.tiles_h, g.tiles_w, k, g.out_h, g.out_w)


def _output_transform(m, n, g):
    k = m.shape[-1]
    return _custom_call("swcnn_tf_output_transform", [m], (n, g.out_h, g.out_w, k),
                        *_output_config(n, g, k))


def _output_transform_backward(dy, g):
    n, k = dy.shape[0], dy.shape[-1]
    return _custom_call("swcnn_tf_output_transform_backward", [dy],
                        (16, n * g.tiles_h * g.tiles_w, k), *_output_config(n, g, k))


def _positions(kernel):
    return tf.reshape(kernel, (16, kernel.shape[2], kernel.shape[3]))


def _conv_config(x_shape, kernel_shape, g, relu):
    n, h, w, c = x_shape
    return (n, h, w, c, kernel_shape[-1], g.pad_top, g.pad_left, g.tiles_h, g.tiles_w,
            g.out_h, g.out_w, relu)


def _forward_static(x, kernel, padding, relu):
    """Forward for a batch of static size: one fused call."""
    g = winograd.tile_geometry(x.shape[1], x.shape[2], padding)
    y_shape = (x.shape[0], g.out_h, g.out_w, kernel.shape[-1])
    return _custom_call("swcnn_tf_conv_forward", [x, _positions(kernel)], y_shape,
                        *_conv_config(x.shape, kernel.shape, g, relu))


def _backward_static(x, kernel, dy, padding, relu):
    """(dx, dkernel) for a batch of static size: one fused call."""
    g = winograd.tile_geometry(x.shape[1], x.shape[2], padding)
    u = _positions(kernel)
    dx, du = _custom_call("swcnn_tf_conv_backward", [x, u, dy], [tuple(x.shape), tuple(u.shape)],
                          *_conv_config(x.shape, kernel.shape, g, relu))
    return dx, tf.reshape(du, kernel.shape)


def _op_attrs(g, relu):
    return {"pad_top": g.pad_top, "pad_left": g.pad_left, "tiles_h": g.tiles_h,
            "tiles_w": g.tiles_w, "out_h": g.out_h, "out_w": g.out_w, "relu": int(relu)}


def _with_shape(y, shape):
    """``y`` with the static ``shape`` the op's shape function cannot derive."""
    if not context.executing_eagerly():
        y.set_shape(shape)
    return y


def _op_forward(x, kernel, g, relu):
    """Forward as a TensorFlow op (any batch size); ``g``: the call's tile geometry."""
    (y,) = _run_op("SwcnnConvForward", {"x": x, "u": _positions(kernel)}, _op_attrs(g, relu), 1)
    return _with_shape(y, (x.shape[0], g.out_h, g.out_w, kernel.shape[-1]))


def _op_backward(x, kernel, dy, g, relu):
    """(dx, dkernel) as a TensorFlow op (any batch size); ``g``: the call's tile geometry."""
    dx, du = _run_op("SwcnnConvBackward", {"x": x, "u": _positions(kernel), "dy": dy},
                     _op_attrs(g, relu), 2)
    return dx, tf.reshape(du, kernel.shape)


# With the batch unknown while tracing (model.fit), the layer runs on chunks
# of a static size, then image by image on what is left: each call still
# has enough tiles to keep the threads busy, and no image is padded.
_CHUNK_TILES = 2048
_MAX_CHUNK = 32


def _chunk_size(x, padding):
    g = winograd.tile_geometry(x.shape[1], x.shape[2], padding)
    chunk = 1
    while chunk < _MAX_CHUNK and chunk * g.tiles_h * g.tiles_w < _CHUNK_TILES:
        chunk *= 2
    return chunk


def _over_batch(call, batched, chunk, image_shape, summed_shapes):
    """``call`` over an unknown batch, ``chunk`` images at a time, then one at a time.

    ``call(*parts)`` takes the static-size slices of the ``batched`` tensors and
    returns ``(per_image, summed)``: a tensor with the batch as its first axis
    (each image of ``image_shape``), and a list of tensors (of
    ``summed_shapes``) summed over the whole batch.
    """
    batch = tf.shape(batched[0])[0]
    full = batch // chunk * chunk

    def run(size, start, stop):
        # XLA checks slice sizes when compiling, for every batch size: `size`
        # zero images at the end keep a `size`-image slice valid even for a
        # batch smaller than that (the loop then runs no step).
        sources = [tf.concat([t, tf.zeros((size, *t.shape[1:]), t.dtype)], 0) for t in batched]

        def step(i, sums, outputs):
            parts = [tf.slice(t, tf.concat([[i], tf.zeros(t.shape.rank - 1, tf.int32)], 0),
                              [size, *t.shape[1:]]) for t in sources]
            per_image, summed = call(*parts)
            sums = [total + part for total, part in zip(sums, summed)]
            return i + size, sums, outputs.write((i - start) // size, per_image)

        outputs = tf.TensorArray(tf.float32, size=(stop - start) // size,
                                 element_shape=(size, *image_shape))
        _, sums, outputs = tf.while_loop(
            lambda i, *_: i < stop, step,
            (start, [tf.zeros(shape, tf.float32) for shape in summed_shapes], outputs))
        return outputs.concat(), sums

    chunked, chunk_sums = run(chunk, 0, full)
    rest, rest_sums = run(1, full, batch)
    sums = [a + b for a, b in zip(chunk_sums, rest_sums)]
    return tf.concat([chunked, rest], 0), sums


@tf.function(jit_compile=True, reduce_retracing=False)
def _forward(x, kernel, padding, relu):
    if x.shape[0] is not None:
        return _forward_static(x, kernel, padding, relu)
    g = winograd.tile_geometry(x.shape[1], x.shape[2], padding)
    y, _ = _over_batch(lambda xs: (_forward_static(xs, kernel, padding, relu), []), [x],
                       _chunk_size(x, padding), (g.out_h, g.out_w, kernel.shape[-1]), [])
    return y


@tf.function(jit_compile=True, reduce_retracing=False)
def _backward(x, kernel, dy, padding, relu):
    # The incoming gradient may have lost static dimensions the output had.
    g = winograd.tile_geometry(x.shape[1], x.shape[2], padding)
    dy = tf.ensure_shape(dy, (x.shape[0], g.out_h, g.out_w, kernel.shape[-1]))
    if x.shape[0] is not None:
        return _backward_static(x, kernel, dy, padding, relu)

    def call(xs, dys):
        dx, du = _backward_static(xs, kernel, dys, padding, relu)
        return dx, [du]

    dx, (du,) = _over_batch(call, [x, dy], _chunk_size(x, padding), x.shape[1:],
                            [kernel.shape])
    return dx, du


def _sparse_forward_static(x, mask, values, padding, relu, mode):
    g = winograd.tile_geometry(x.shape[1], x.shape[2], padding)
    n, h, w, c = x.shape
    k = mask.shape[1]
    return _custom_call(
        "swcnn_tf_sparse_conv_forward", [x, mask, values], (n, g.out_h, g.out_w, k),
        n, h, w, c, k, g.pad_top, g.pad_left, g.tiles_h, g.tiles_w, g.out_h, g.out_w, relu,
        values.shape[0], SPARSE_MODES.index(mode))


@tf.function(jit_compile=True, reduce_retracing=False)
def _sparse_forward(x, mask, values, padding, relu, mode):
    if x.shape[0] is not None:
        return _sparse_forward_static(x, mask, values, padding, relu, mode)
    g = winograd.tile_geometry(x.shape[1], x.shape[2], padding)
    y, _ = _over_batch(
        lambda xs: (_sparse_forward_static(xs, mask, values, padding, relu, mode), []), [x],
        _chunk_size(x, padding), (g.out_h, g.out_w, mask.shape[1]), [])
    return y


def sparse_winograd_conv2d(x, mask, values, padding="same", winograd_activation="relu",
                           mode="auto"):
    """Native sparse convolution (see ``keras_swcnn.ops.sparse_winograd_conv2d``).

    Inference only (no gradient). A mask whose set bits do not match the
    number of values raises ``tf.errors.InvalidArgumentError`` when it runs as a
    TensorFlow op; inside code that XLA compiles (a custom call, which TensorFlow
    gives no error channel) the output is NaN instead.
    """
    _require_available()
    x, dtype = _as_float32(x)
    if not can_run(x):
        raise ValueError(
            "The native TensorFlow path needs a 4D NHWC input with height, width and channels "
            f"known while tracing; got shape {x.shape}.")
    g = winograd.tile_geometry(x.shape[1], x.shape[2], padding)
    mask = tf.convert_to_tensor(mask, tf.int32)
    values = tf.convert_to_tensor(values, tf.float32)
    if not mask.shape.is_fully_defined() or not values.shape.is_fully_defined():
        raise ValueError("The mask and values must have static shapes.")
    relu = winograd_activation == "relu"
    x, mask, values = (tf.stop_gradient(t) for t in (x, mask, values))
    if _use_ops():
        (y,) = _run_op("SwcnnSparseConvForward", {"x": x, "mask": mask, "values": values},
                       {**_op_attrs(g, relu), "mode": SPARSE_MODES.index(mode)}, 1)
        y = _with_shape(y, (x.shape[0], g.out_h, g.out_w, mask.shape[1]))
    else:
        y = _sparse_forward(x, mask, values, padding, relu, mode)
    return tf.cast(y, dtype)


def _validate(x, kernel, padding):
    """The call's tile geometry; ``ValueError`` for an input or kernel the kernels cannot take."""
    if x.shape.rank != 4:
        raise ValueError(f"Expected a 4D NHWC input, got shape {x.shape}.")
    if not can_run(x):
        raise ValueError(
            "The native TensorFlow path needs the height, width and channels known while "
            f"tracing; got shape {x.shape}. Use implementation='reference' (or 'auto')."
        )
    geometry = winograd.tile_geometry(x.shape[1], x.shape[2], padding)  # raises if too small
    check_kernel_fits(x.shape, kernel.shape)
    return geometry


def _as_float32(x):
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(f"Expected a floating-point tensor, got dtype {x.dtype.name}.")
    return tf.cast(x, tf.float32), x.dtype


def winograd_conv2d(x, kernel, padding="same", winograd_activation="relu"):
    """Native Winograd(-ReLU) convolution (see ``keras_swcnn.ops.winograd_conv2d``)."""
    _require_available()
    x, dtype = _as_float32(x)
    kernel, _ = _as_float32(kernel)
    geometry = _validate(x, kernel, padding)
    relu = winograd_activation == "relu"

    # The TensorFlow ops take the geometry computed here; the XLA functions compute it
    # while they trace (it is not part of their trace key).
    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            dy = tf.cast(dy, tf.float32)
            if _use_ops():
                return _op_backward(x, kernel, dy, geometry, relu)
            return _backward(x, kernel, dy, padding, relu)

        # stop_gradient: the tape must not try to differentiate the kernels'
        # call itself (eager custom_gradient still records the forward's ops).
        x_in, kernel_in = tf.stop_gradient(x), tf.stop_gradient(kernel)
        if _use_ops():
            return _op_forward(x_in, kernel_in, geometry, relu), grad
        return _forward(x_in, kernel_in, padding, relu), grad

    return tf.cast(conv(x, kernel), dtype)


@tf.function(jit_compile=True, reduce_retracing=False)
def _input_transform_jit(x, padding, relu):
    return _input_transform(x, winograd.tile_geometry(x.shape[1], x.shape[2], padding), relu)


@tf.function(jit_compile=True, reduce_retracing=False)
def _output_transform_jit(m, n, geometry):
    return _output_transform(m, n, geometry)


def input_transform(x, padding="same", relu=True):
    """Native ``(relu of) B^T d B`` as ``[16, N*TH*TW, C]`` (forward only; static shapes)."""
    x, dtype = _as_float32(x)
    if x.shape.rank != 4 or not x.shape.is_fully_defined():
        raise ValueError(f"Expected a 4D NHWC input of known shape, got {x.shape}.")
    winograd.tile_geometry(x.shape[1], x.shape[2], padding)
    return tf.cast(_input_transform_jit(x, padding, relu), dtype)


def batched_product(v, kernel):
    """``M[t] = V[t] @ U[t]``."""
    return tf.matmul(v, _positions(tf.convert_to_tensor(kernel)))


def output_transform(m, geometry):
    """Native ``A^T M A`` assembled into NHWC and cropped (forward only; static shapes)."""
    m, dtype = _as_float32(m)
    if not m.shape.is_fully_defined():
        raise ValueError(f"Expected products of known shape [16, N*TH*TW, K], got {m.shape}.")
    n = images_in(tuple(m.shape), geometry)
    return tf.cast(_output_transform_jit(m, n, geometry), dtype)
