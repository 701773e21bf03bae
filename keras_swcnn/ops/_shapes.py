"""Shape helpers shared by the op implementations (static where known, dynamic otherwise)."""

from keras import ops

from keras_swcnn import winograd


def dynamic_geometry(x, padding):
    """Tile geometry of an NHWC tensor whose H and W may be unknown until run time.

    On TensorFlow, an unknown dimension comes back from ``ops.shape`` as a scalar
    tensor; integer arithmetic on it builds the geometry in-graph. Known
    dimensions stay Python ints, so the common case is fully static.
    """
    _, height, width, _ = ops.shape(x)
    if isinstance(height, int) and isinstance(width, int):
        return winograd.tile_geometry(height, width, padding)
    pad = 1 if padding == "same" else 0
    out_h = height if padding == "same" else height - 2
    out_w = width if padding == "same" else width - 2
    return winograd.TileGeometry(
        out_h, out_w, (out_h + 1) // 2, (out_w + 1) // 2, pad, pad
    )


def nhwc_geometry(shape, padding):
    """The tile geometry of a 4D NHWC shape (``ValueError`` for any other rank or a too-small image)."""
    if len(shape) != 4:
        raise ValueError(f"Expected a 4D NHWC input, got shape {tuple(shape)}.")
    return winograd.tile_geometry(int(shape[1]), int(shape[2]), padding)


def check_kernel_fits(x_shape, kernel_shape):
    """Raise ``ValueError`` unless ``kernel_shape`` is ``(4, 4, C, K)`` for NHWC ``x_shape``,
    with at least one input channel and one filter (every path refuses zero, none computes it)."""
    if len(kernel_shape) != 4 or tuple(kernel_shape[:3]) != (4, 4, x_shape[-1]):
        raise ValueError(
            f"Kernel shape {tuple(kernel_shape)} does not fit input channels {x_shape[-1]}: "
            "expected (4, 4, in_channels, out_channels)."
        )
    if kernel_shape[2] == 0 or kernel_shape[3] == 0:
        raise ValueError(
            f"Winograd convolutions need at least one input channel and one filter; got kernel "
            f"shape {tuple(kernel_shape)}.")


def known_dimension(dimension):
    """``dimension`` as an int, or ``None`` when it is unknown while tracing.

    TensorFlow reports unknown dimensions as ``None``, torch's ONNX tracer as 0-d
    tensors, ``jax.export`` as symbolic dimensions that refuse ``int()``.
    """
    if dimension is None:
        return None
    try:
        return int(dimension)
    except Exception:  # noqa: BLE001 - each framework raises its own type for symbolic sizes
        return None


def static_shape(tensor):
    """The shape of ``tensor`` with ``None`` for dimensions unknown while tracing."""
    return tuple(known_dimension(d) for d in getattr(tensor, "shape", ()))


def images_in(products_shape, geometry):
    """The batch size of ``[16, N*TH*TW, K]`` products tiled with ``geometry`` (checked)."""
    if len(products_shape) != 3 or products_shape[0] != 16:
        raise ValueError(
            f"Expected products of shape [16, N*TH*TW, K], got {tuple(products_shape)}.")
    tiles = geometry.tiles_h * geometry.tiles_w
    if products_shape[1] % tiles:
        raise ValueError(
            f"{products_shape[1]} tiles is not a whole number of "
            f"{geometry.tiles_h}x{geometry.tiles_w} images."
        )
    return products_shape[1] // tiles
