"""keras-swcnn: Sparse-Winograd CNNs (Liu, Pool, Han, Dally, ICLR 2018) for Keras 3.

Example:
    >>> import keras_swcnn
    >>> from keras_swcnn.layers import WinogradReLUConv2D
    >>> layer = WinogradReLUConv2D(64)
    >>> sorted(keras_swcnn.build_info())[:2]
    ['implementation', 'keras_backend']
"""

__version__ = "0.1.0"

from keras_swcnn import _keras_backend  # noqa: E402

_keras_backend.apply()  # before Keras is imported: an installed backend where none is chosen

from keras_swcnn import layers, ops, winograd  # noqa: E402
from keras_swcnn.layers import WinogradReLUConv2D  # noqa: E402


def build_info():
    """What this installation provides: version, native module status and kernels, backend.

    Example:
        >>> info = build_info()
        >>> info["version"] == __version__
        True
    """
    import keras

    from keras_swcnn import native

    reason = ops.native_unavailable_reason()
    return {
        "version": __version__,
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "native_loaded": native.available(),
        "native_error": native.load_error,
        "kernels": native.kernels(),
        "cuda_built": native.cuda_built(),
        "implementation": "reference" if reason else "native",
        "native_unavailable_reason": reason,
    }


__all__ = ["WinogradReLUConv2D", "build_info", "layers", "ops", "winograd", "__version__"]
