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
