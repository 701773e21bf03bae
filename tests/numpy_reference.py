"""An independent float64 numpy model of the Winograd-ReLU convolution.

Deliberately shares no code with keras_swcnn: the matrices are typed in again
from the paper and tiles are cut with explicit loops, so a mistake in the
package cannot hide behind the same mistake here.
"""

import math

import numpy as np

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


def geometry(height, width, padding):
    pad = 1 if padding == "same" else 0
    out_h = height if padding == "same" else height - 2
    out_w = width if padding == "same" else width - 2
    return out_h, out_w, math.ceil(out_h / 2), math.ceil(out_w / 2), pad


def padded(x, padding):
    """Zero-padded image large enough for every tile: (N, 2*TH+2, 2*TW+2, C)."""
    n, h, w, c = x.shape
    _, _, th, tw, pad = geometry(h, w, padding)
    xp = np.zeros((n, 2 * th + 2, 2 * tw + 2, c))
    xp[:, pad : pad + h, pad : pad + w] = x
    return xp


def input_tiles(x, padding, relu):
    """V[n, i, j, a, b, c] = (relu of) (B^T d B) for tile (i, j)."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    _, _, th, tw, _ = geometry(h, w, padding)
    xp = padded(x, padding)
    v = np.zeros((n, th, tw, 4, 4, c))
    for i in range(th):
        for j in range(tw):
            d = xp[:, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4]
            v[:, i, j] = np.einsum("ar,nrsc,bs->nabc", BT, d, BT)
    return np.maximum(v, 0) if relu else v


def clear_of_relu_kinks(x, padding="same", margin=1e-5):
    """``x`` (float32) moved so that no transformed value is within ``margin`` of zero.

    A value within float32 rounding of zero (four pixels that cancel) may fall on either side
    of the Winograd ReLU in float32 and in float64, and the input gradients then differ by that
    value's whole contribution: a property of the data, not an error of the code under test.
    One pixel of each such tile that reaches the value moves by 10 * margin, until none is left.
    Values made of padding alone are exactly zero in both precisions and stay.

        >>> x = clear_of_relu_kinks(np.ones((1, 4, 4, 1), np.float32))
    """
    x = np.array(x, np.float32)
    _, h, w, _ = x.shape
    pad = geometry(h, w, padding)[4]
    for _ in range(100):
        moved = False
        for n, i, j, a, b, c in np.argwhere(np.abs(input_tiles(x, padding, relu=False)) < margin):
            rows = [2 * i + r - pad for r in range(4) if BT[a, r] and 0 <= 2 * i + r - pad < h]
            cols = [2 * j + s - pad for s in range(4) if BT[b, s] and 0 <= 2 * j + s - pad < w]
            if rows and cols:
                x[n, rows[0], cols[0], c] += 10 * margin
                moved = True
        if not moved:  # (a move shifts other values too: look again until none is close)
            return x
    raise AssertionError("could not move the input clear of the ReLU's kink")


def to_position_layout(tiles):
    """(N, TH, TW, 4, 4, C) -> [16, N*TH*TW, C] with t = 4*a + b."""
    n, th, tw, _, _, c = tiles.shape
    return tiles.transpose(3, 4, 0, 1, 2, 5).reshape(16, n * th * tw, c)


def from_position_layout(m, n, th, tw):
    """[16, N*TH*TW, K] -> (N, TH, TW, 4, 4, K)."""
    return m.reshape(4, 4, n, th, tw, -1).transpose(2, 3, 4, 0, 1, 5)


def output_from_products(products, out_h, out_w):
    """Y from per-tile products (N, TH, TW, 4, 4, K): A^T M A, assembled and cropped."""
    n, th, tw, _, _, k = products.shape
    y = np.einsum("ia,nhwabk,jb->nhiwjk", AT, products, AT).reshape(n, 2 * th, 2 * tw, k)
    return y[:, :out_h, :out_w]


def conv(x, u, padding="same", relu=True):
    """The Winograd(-ReLU) convolution of NHWC x with a (4, 4, C, K) kernel, in float64."""
    x = np.asarray(x, np.float64)
    u = np.asarray(u, np.float64)
    out_h, out_w, _, _, _ = geometry(x.shape[1], x.shape[2], padding)
    v = input_tiles(x, padding, relu)
    m = np.einsum("nijabc,abck->nijabk", v, u)
    return output_from_products(m, out_h, out_w)


def conv_grads(x, u, dy, padding="same", relu=True):
    """Gradients (dx, du) of sum(conv(x, u) * dy), derived by hand (the adjoint of each step)."""
    x = np.asarray(x, np.float64)
    u = np.asarray(u, np.float64)
    _, h, w, _ = x.shape
    _, _, th, tw, _ = geometry(h, w, padding)
    v_pre = input_tiles(x, padding, relu=False)
    v = np.maximum(v_pre, 0) if relu else v_pre
    dm = output_transform_adjoint(np.asarray(dy, np.float64), th, tw)
    du = np.einsum("nijabk,nijabc->abck", dm, v)
    dv = np.einsum("nijabk,abck->nijabc", dm, u)
    return input_transform_adjoint(dv, v_pre, x.shape, padding, relu), du


def spatial_conv(x, g, padding="same"):
    """Direct 3x3 cross-correlation (what keras.layers.Conv2D computes), in float64."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    pad = 1 if padding == "same" else 0
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out_h, out_w = xp.shape[1] - 2, xp.shape[2] - 2
    y = np.zeros((n, out_h, out_w, g.shape[-1]))
    for r in range(3):
        for s in range(3):
            y += np.einsum("nhwc,ck->nhwk", xp[:, r : r + out_h, s : s + out_w], g[r, s])
    return y


def rel_error(actual, expected):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.all(np.isfinite(actual)), "non-finite values (unwritten output?)"
    scale = np.linalg.norm(expected)
    return np.linalg.norm(actual - expected) / (scale if scale > 0 else 1.0)


def input_transform_adjoint(dv_tiles, v_pre, x_shape, padding, relu):
    """dx from per-tile gradients dv (N, TH, TW, 4, 4, C): sum of B (dv masked) B^T, cropped."""
    n, h, w, c = x_shape
    _, _, th, tw, pad = geometry(h, w, padding)
    if relu:
        dv_tiles = dv_tiles * (v_pre > 0)
    dxp = np.zeros((n, 2 * th + 2, 2 * tw + 2, c))
    for i in range(th):
        for j in range(tw):
            dxp[:, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4] += np.einsum(
                "ar,nabc,bs->nrsc", BT, dv_tiles[:, i, j], BT
            )
    return dxp[:, pad : pad + h, pad : pad + w]


def output_transform_adjoint(dy, th, tw):
    """Per-tile dm (N, TH, TW, 4, 4, K) = A dy A^T, with cropped entries of dy as zero."""
    n, out_h, out_w, k = dy.shape
    full = np.zeros((n, 2 * th, 2 * tw, k))
    full[:, :out_h, :out_w] = dy
    return np.einsum("ia,nhiwjk,jb->nhwabk", AT, full.reshape(n, th, 2, tw, 2, k), AT)
