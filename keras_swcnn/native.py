"""The compiled CPU kernels on numpy arrays (the ``keras_swcnn._native`` extension).

These functions are the kernels' numpy front door: useful to check and
inspect the native transforms outside any framework. The layer reaches the
same kernels through XLA custom calls (see ``keras_swcnn.ops``).

Example:
    >>> import numpy as np
    >>> from keras_swcnn import native
    >>> if native.available():
    ...     v = native.input_transform(np.ones((1, 4, 4, 2), "float32"))
    ...     v.shape
    (16, 4, 2)
"""

import os

import numpy as np

from keras_swcnn import winograd

#: Load the CPU extension from this file instead (e.g. a sanitizer build; see
#: tools/sanitizer_check.sh). Unset in normal use.
LIBRARY_ENV = "KERAS_SWCNN_NATIVE_LIBRARY"


def _load():
    path = os.environ.get(LIBRARY_ENV)
    if not path:
        from keras_swcnn import _native

        return _native
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("keras_swcnn._native", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["keras_swcnn._native"] = module
    return module


try:
    _module = _load()
    load_error = None
except ImportError as error:  # not built, or built for another platform
    _module = None
    load_error = f"{type(error).__name__}: {error}"


_cuda = {"module": None, "error": None, "tried": False}


def cuda_built():
    """Whether the CUDA extension was built (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("keras_swcnn._native_cuda") is not None


def cuda_module():
    """The CUDA extension, imported on first use (only GPU sessions call this), or ``None``."""
    if not _cuda["tried"]:
        _cuda["tried"] = True
        try:
            from keras_swcnn import _native_cuda

            _cuda["module"] = _native_cuda
        except ImportError as error:
            _cuda["error"] = f"{type(error).__name__}: {error}"
    return _cuda["module"]


def cuda_load_error():
    """Why the CUDA extension is unavailable (``None`` if it loaded or was never asked for)."""
    if not cuda_built():
        return "keras_swcnn was built without CUDA (no CUDA compiler at build time)"
    return _cuda["error"]


def available():
    """Whether the compiled extension loaded."""
    return _module is not None


def kernels():
    """Names of the kernels loaded so far (CPU, plus CUDA once a GPU session loaded them)."""
    names = list(_module.kernels()) if _module is not None else []
    if _cuda["module"] is not None:
        names += list(_cuda["module"].kernels())
    return names


def _require():
    if _module is None:
        raise RuntimeError(
            "The keras_swcnn native extension is not available "
            f"({load_error}). Reinstall with `pip install keras-swcnn` "
            "or build from source with `pip install .`."
        )
    return _module


def _float32_array(array, name, ndim):
    array = np.asarray(array)
    if array.dtype != np.float32:
        raise ValueError(f"{name} must be float32, got {array.dtype}.")
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}D, got shape {array.shape}.")
    return np.ascontiguousarray(array)


def _out_array(out):
    """``out`` as the kernels write it: a writable C-contiguous float32 numpy array (or ``None``).

    Anything else would be converted to a temporary copy, which the kernel
    would fill and then drop, leaving ``out`` unwritten: refuse it instead.
    """
    if out is None:
        return None
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or not out.flags.c_contiguous \
            or not out.flags.writeable:
        raise ValueError(
            "`out` must be a writable C-contiguous float32 numpy array, got "
            + (f"dtype {out.dtype}, C-contiguous {out.flags.c_contiguous}, writable "
               f"{out.flags.writeable}" if isinstance(out, np.ndarray) else type(out).__name__)
            + ".")
    return out


def input_transform(x, padding="same", relu=True, out=None):
    """Native ``(relu of) B^T d B`` of an NHWC float32 array: returns ``[16, N*TH*TW, C]``."""
    module = _require()
    x = _float32_array(x, "x", 4)
    geometry = winograd.tile_geometry(x.shape[1], x.shape[2], padding)
    return module.input_transform(
        x, geometry.pad_top, geometry.pad_left, geometry.tiles_h, geometry.tiles_w,
        bool(relu), _out_array(out),
    )


def input_transform_backward(dv, v, x_shape, padding="same", relu=True, out=None):
    """Native gradient of ``input_transform``: ``dv`` (and forward tiles ``v``) to ``dx`` of ``x_shape``."""
    module = _require()
    dv = _float32_array(dv, "dv", 3)
    v = _float32_array(v, "v", 3) if relu else None
    n, h, w, _ = x_shape
    geometry = winograd.tile_geometry(h, w, padding)
    return module.input_transform_backward(
        dv, v, n, h, w, geometry.pad_top, geometry.pad_left, geometry.tiles_h,
        geometry.tiles_w, bool(relu), _out_array(out),
    )


def output_transform_backward(dy, geometry, out=None):
    """Native gradient of ``output_transform``: NHWC ``dy`` to ``[16, N*TH*TW, K]``."""
    module = _require()
    dy = _float32_array(dy, "dy", 4)
    return module.output_transform_backward(dy, geometry.tiles_h, geometry.tiles_w,
                                            _out_array(out))


def output_transform(m, batch, geometry, out=None):
    """Native ``A^T M A`` of ``[16, N*TH*TW, K]`` products: returns NHWC ``[N, OH, OW, K]``.

    ``geometry`` is the ``winograd.TileGeometry`` of the transformed input.
    """
    module = _require()
    m = _float32_array(m, "m", 3)
    return module.output_transform(
        m, int(batch), geometry.tiles_h, geometry.tiles_w, geometry.out_h,
        geometry.out_w, _out_array(out),
    )
