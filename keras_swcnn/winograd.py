"""Winograd F(2x2, 3x3): the transform matrices and kernel conversions.

This module is the single source of truth for the math (Lavin & Gray 2016;
Liu et al. 2018). A 4x4 input tile ``d`` and a 3x3 kernel ``g`` give a 2x2
output tile::

    V = B^T d B          input transform (additions only)
    U = G g G^T          kernel transform (U is the trained parameter here)
    Y = A^T (U * V) A    elementwise product, summed over input channels

Kernels are stored as ``(4, 4, in_channels, out_channels)``; the paper's
``[16, C, K]`` layout is the same array reshaped, with position
``t = 4 * i + j`` for tile row ``i`` and column ``j``.

Example:
    >>> import numpy as np
    >>> g = np.random.rand(3, 3, 8, 16)
    >>> u = spatial_to_winograd(g)              # (4, 4, 8, 16)
    >>> np.allclose(winograd_to_spatial(u), g)  # exact for u = G g G^T
    True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

#: Input transform B^T (4x4).
BT = np.array(
    [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64
)
#: Kernel transform G (4x3).
G = np.array(
    [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64
)
#: Output transform A^T (2x4).
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)

#: Kernel size of F(2x2, 3x3): 2x2 outputs per 4x4 input tile.
KERNEL_SIZE = 3


def spatial_to_winograd(kernel):
    """Map a spatial kernel ``(3, 3, C, K)`` to the Winograd domain ``(4, 4, C, K)``.

    Computes ``U = G g G^T`` for every (input, output) channel pair.

    Example:
        >>> spatial_to_winograd(np.ones((3, 3, 1, 1)))[:, :, 0, 0].shape
        (4, 4)
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[:2] != (3, 3):
        raise ValueError(
            f"Expected a spatial kernel of shape (3, 3, in_channels, out_channels), "
            f"got shape {kernel.shape}."
        )
    dtype = np.result_type(kernel.dtype, np.float32)
    return np.einsum("ai,ijck,bj->abck", G, kernel, G).astype(dtype)


def winograd_to_spatial(kernel):
    """Least-squares spatial kernel ``(3, 3, C, K)`` for a Winograd kernel ``(4, 4, C, K)``.

    Exact when ``kernel`` is ``G g G^T`` for some ``g``. A Winograd kernel that
    was trained (or pruned) in the Winograd domain generally has no exact
    spatial equivalent (16 free values against 9), so this is for inspection.

    Example:
        >>> u = spatial_to_winograd(np.eye(3)[:, :, None, None])
        >>> np.allclose(winograd_to_spatial(u)[:, :, 0, 0], np.eye(3))
        True
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[:2] != (4, 4):
        raise ValueError(
            f"Expected a Winograd kernel of shape (4, 4, in_channels, out_channels), "
            f"got shape {kernel.shape}."
        )
    g_pinv = np.linalg.pinv(G)  # (3, 4): the least-squares inverse of G
    dtype = np.result_type(kernel.dtype, np.float32)
    return np.einsum("ia,abck,jb->ijck", g_pinv, kernel, g_pinv).astype(dtype)


def to_paper_layout(kernel):
    """Reshape a ``(4, 4, C, K)`` kernel to the paper's ``[16, C, K]`` layout (t = 4i + j)."""
    kernel = np.asarray(kernel)
    return kernel.reshape((16,) + kernel.shape[2:])


def from_paper_layout(kernel):
    """Reshape a ``[16, C, K]`` kernel (t = 4i + j) to ``(4, 4, C, K)``."""
    kernel = np.asarray(kernel)
    return kernel.reshape((4, 4) + kernel.shape[1:])


class TileGeometry(NamedTuple):
    """How an ``H x W`` image is cut into overlapping 4x4 tiles.

    Attributes:
        out_h, out_w: output size (``H x W`` for 'same', ``(H-2) x (W-2)`` for 'valid').
        tiles_h, tiles_w: number of tiles along each axis (``ceil(out / 2)``).
        pad_top, pad_left: zeros added before the first row / column.
    """

    out_h: int
    out_w: int
    tiles_h: int
    tiles_w: int
    pad_top: int
    pad_left: int


def output_length(length, padding):
    """Output length along one axis for a 3x3, stride-1 convolution (``None`` stays ``None``)."""
    if length is None:
        return None
    return length if padding == "same" else length - (KERNEL_SIZE - 1)


#: The paddings and Winograd activations every layer, op and model accepts.
PADDINGS = ("same", "valid")
WINOGRAD_ACTIVATIONS = ("relu", None)


def check_padding(padding):
    """``padding`` lower-cased, or ``ValueError`` unless it is 'same' or 'valid' (any case).

    Example:
        >>> check_padding("SAME")
        'same'
    """
    if not isinstance(padding, str) or padding.lower() not in PADDINGS:
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}.")
    return padding.lower()


def check_winograd_activation(winograd_activation):
    """``winograd_activation``, or ``ValueError`` unless it is 'relu' or None.

    Example:
        >>> check_winograd_activation(None) is None
        True
    """
    if winograd_activation not in WINOGRAD_ACTIVATIONS:
        raise ValueError(
            f"winograd_activation must be 'relu' or None, got {winograd_activation!r}.")
    return winograd_activation


def tile_geometry(height, width, padding="same"):
    """Tile geometry for a 3x3 stride-1 convolution of an ``height x width`` image.

    Example:
        >>> tile_geometry(5, 4, "same")
        TileGeometry(out_h=5, out_w=4, tiles_h=3, tiles_w=2, pad_top=1, pad_left=1)
    """
    padding = check_padding(padding)
    out_h, out_w = output_length(height, padding), output_length(width, padding)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"A 3x3 'valid' convolution needs inputs of at least 3x3, got {height}x{width}."
        )
    pad = 1 if padding == "same" else 0
    return TileGeometry(
        out_h, out_w, math.ceil(out_h / 2), math.ceil(out_w / 2), pad, pad
    )
