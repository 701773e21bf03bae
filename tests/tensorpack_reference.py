"""The paper's ResNet-18-var inference in float64 numpy, read from its checkpoint's variables.

Written from the original's own code, not from keras_swcnn: the structure follows
``ResNet-18-var/imagenet-resnet-transWino-prune.py`` line by line (variable names
as that script creates them), the Winograd steps follow its CUDA ops (the input
transform ``winograd2x2_imTrans`` pads one pixel on the top and left and writes
``(16, N, nH, nW, C)``; ``winograd2x2_conv`` multiplies each position by
``W[t]`` of ``[16, C, K]`` and writes the ``2nH x 2nW`` output tiles), and the
tensorpack layers keep their TF semantics (``SAME`` padding, BN epsilon 1e-5).
"""

import numpy as np

from numpy_reference import AT, BT

BN_EPSILON = 1e-5  # tensorpack BatchNorm's default


def _same_padding(size, kernel, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _pad_same(x, kernel, stride, value=0.0):
    n, h, w, c = x.shape
    oh, top, bottom = _same_padding(h, kernel, stride)
    ow, left, right = _same_padding(w, kernel, stride)
    xp = np.full((n, h + top + bottom, w + left + right, c), value)
    xp[:, top : top + h, left : left + w] = x
    return xp, oh, ow


def conv2d(x, w, stride=1):
    """tensorpack Conv2D (TF ``SAME``), no bias: x NHWC, w [kh, kw, C, K]."""
    kh, kw = w.shape[:2]
    xp, oh, ow = _pad_same(x, kh, stride)
    y = np.zeros(x.shape[:1] + (oh, ow, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            window = xp[:, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride]
            y += window @ w[i, j]
    return y


def max_pool(x, size=3, stride=2):
    xp, oh, ow = _pad_same(x, size, stride, value=-np.inf)
    y = np.full(x.shape[:1] + (oh, ow) + x.shape[3:], -np.inf)
    for i in range(size):
        for j in range(size):
            y = np.maximum(y, xp[:, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride])
    return y


def batch_norm(x, v, scope):
    """Inference BatchNorm with the moving statistics tensorpack saves as ``mean/EMA``, ``variance/EMA``."""
    scale = v[f"{scope}/gamma"] / np.sqrt(v[f"{scope}/variance/EMA"] + BN_EPSILON)
    return (x - v[f"{scope}/mean/EMA"]) * scale + v[f"{scope}/beta"]


def winograd_im_trans(x):
    """winograd2x2_imTrans: (N, H, W, C) -> (16, N, nH, nW, C), tile origin (2 by - 1, 2 bx - 1)."""
    n, h, w, c = x.shape
    nh, nw = (h + 1 + 2 - 4) // 2 + 1, (w + 1 + 2 - 4) // 2 + 1
    xp = np.zeros((n, 2 * nh + 2, 2 * nw + 2, c))
    xp[:, 1 : 1 + h, 1 : 1 + w] = x
    out = np.zeros((4, 4, n, nh, nw, c))
    for by in range(nh):
        for bx in range(nw):
            patch = xp[:, 2 * by : 2 * by + 4, 2 * bx : 2 * bx + 4]  # patch[n, row, col, c]
            out[:, :, :, by, bx] = np.einsum("ar,nrsc,bs->abnc", BT, patch, BT)
    return out.reshape(16, n, nh, nw, c)  # t = 4 row + col


def winograd_conv(v, w):
    """winograd2x2_conv: (16, N, nH, nW, C) x [16, C, K] -> (N, 2 nH, 2 nW, K)."""
    products = np.einsum("tnhwc,tck->tnhwk", v, w).reshape((4, 4) + v.shape[1:4] + (w.shape[2],))
    n, nh, nw, k = products.shape[2:]
    y = np.einsum("ia,abnhwk,jb->nhiwjk", AT, products, AT)
    return y.reshape(n, 2 * nh, 2 * nw, k)


def _relu(x):
    return np.maximum(x, 0)


def _winograd_relu_conv(x, v, name):
    return winograd_conv(_relu(winograd_im_trans(x)), v[f"{name}/W"])


def _branch(x, v, sb):
    """BN -> WinogradImTrans(relu) -> WinogradConv, twice, -> BN (block ``sb``, e.g. '3a')."""
    b = batch_norm(x, v, f"res{sb}_bn2a")
    b = _winograd_relu_conv(b, v, f"Winograd_W{sb}_2a")
    b = batch_norm(b, v, f"res{sb}_bn2b")
    b = _winograd_relu_conv(b, v, f"Winograd_W{sb}_2b")
    return batch_norm(b, v, f"res{sb}_bn2c")


def logits(image, v, masks=None):
    """The script's ``logits`` for ``image`` (its network input: normalised BGR, NHWC) in float64.

    ``v``: checkpoint variables by name; ``masks``: the script's ``mask_dict`` (``W * mask``).
    """
    v = {name: np.asarray(value, np.float64) for name, value in v.items()}
    for name, mask in (masks or {}).items():
        v[name] = v[name] * mask
    x = np.asarray(image, np.float64)
    x = conv2d(x, v["conv1/W"], stride=2)
    x = max_pool(x)
    for stage in "2345":
        for block in "ab":
            sb = stage + block
            branch = _branch(x, v, sb)
            if sb == "2a":  # BNReLU('res2a_1_relu') -> Conv2D('res2a_1') -> BatchNorm('res2a_bn1')
                shortcut = _relu(batch_norm(x, v, "res2a_1_relu/bn"))
            else:  # ReLU('res{sb}_1_relu')
                shortcut = _relu(x)
            if block == "a":
                shortcut = batch_norm(conv2d(shortcut, v[f"res{sb}_1/W"]), v, f"res{sb}_bn1")
            x = shortcut + branch
        if stage in "23":
            x = max_pool(x)
    x = _relu(x).mean(axis=(1, 2))  # ReLU('gap_relu'), GlobalAvgPooling; Dropout is inactive
    return x @ v["linear/W"] + v["linear/b"]


def read_image_like_the_original(rgb):
    """The script's input from an RGB uint8 image: OpenCV's BGR order, /255, mean/std listed R, G, B."""
    bgr = np.asarray(rgb, np.float64)[..., ::-1]
    return (bgr / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
