"""The transform matrices and kernel conversions in keras_swcnn.winograd."""

import numpy as np
import pytest

from keras_swcnn import winograd
from numpy_reference import AT, BT, G, spatial_conv


def test_matrices_are_the_papers():
    np.testing.assert_array_equal(winograd.BT, BT)
    np.testing.assert_array_equal(winograd.G, G)
    np.testing.assert_array_equal(winograd.AT, AT)


def test_winograd_identity_on_one_tile(rng):
    # A^T [(G g G^T) * (B^T d B)] A is the 3x3 correlation of a 4x4 tile.
    d = rng.standard_normal((4, 4))
    g = rng.standard_normal((3, 3))
    y = winograd.AT @ ((winograd.G @ g @ winograd.G.T) * (winograd.BT @ d @ winograd.BT.T)) @ winograd.AT.T
    direct = np.array([[np.sum(d[i : i + 3, j : j + 3] * g) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(y, direct, rtol=1e-12, atol=1e-12)


def test_spatial_round_trip(rng):
    g = rng.standard_normal((3, 3, 5, 7))
    u = winograd.spatial_to_winograd(g)
    assert u.shape == (4, 4, 5, 7)
    np.testing.assert_allclose(u[:, :, 2, 3], G @ g[:, :, 2, 3] @ G.T, rtol=1e-12)
    np.testing.assert_allclose(winograd.winograd_to_spatial(u), g, rtol=1e-10, atol=1e-12)


def test_least_squares_projection_of_a_free_kernel(rng):
    # A free Winograd kernel has no exact spatial equivalent; the result must be
    # the least-squares fit: the residual is orthogonal to every G e G^T.
    u = rng.standard_normal((4, 4, 1, 1))
    g = winograd.winograd_to_spatial(u)[:, :, 0, 0]
    residual = u[:, :, 0, 0] - G @ g @ G.T
    for r in range(3):
        for s in range(3):
            basis = np.zeros((3, 3))
            basis[r, s] = 1
            assert abs(np.sum(residual * (G @ basis @ G.T))) < 1e-10


def test_paper_layout(rng):
    u = rng.standard_normal((4, 4, 3, 2))
    paper = winograd.to_paper_layout(u)
    assert paper.shape == (16, 3, 2)
    np.testing.assert_array_equal(paper[4 * 2 + 3], u[2, 3])
    np.testing.assert_array_equal(winograd.from_paper_layout(paper), u)


@pytest.mark.parametrize("height,width,padding,expected", [
    (5, 4, "same", (5, 4, 3, 2, 1, 1)),
    (1, 1, "same", (1, 1, 1, 1, 1, 1)),
    (3, 8, "valid", (1, 6, 1, 3, 0, 0)),
])
def test_tile_geometry(height, width, padding, expected):
    assert tuple(winograd.tile_geometry(height, width, padding)) == expected


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="3, 3, in_channels"):
        winograd.spatial_to_winograd(np.zeros((5, 5, 1, 1)))
    with pytest.raises(ValueError, match="4, 4, in_channels"):
        winograd.winograd_to_spatial(np.zeros((3, 3, 1, 1)))
    with pytest.raises(ValueError, match="at least 3x3"):
        winograd.tile_geometry(2, 5, "valid")
    with pytest.raises(ValueError, match="'same' or 'valid'"):
        winograd.tile_geometry(5, 5, "causal")


def test_numpy_reference_matches_direct_convolution(rng):
    # Validates the independent numpy model itself against a direct convolution.
    from numpy_reference import conv

    x = rng.standard_normal((2, 7, 6, 3))
    g = rng.standard_normal((3, 3, 3, 4))
    u = np.einsum("ai,ijck,bj->abck", G, g, G)
    for padding in ("same", "valid"):
        np.testing.assert_allclose(
            conv(x, u, padding, relu=False), spatial_conv(x, g, padding), rtol=1e-10, atol=1e-10
        )


def test_numpy_reference_gradients_match_finite_differences(rng):
    from numpy_reference import conv, conv_grads

    x = rng.standard_normal((1, 5, 4, 2))
    u = rng.standard_normal((4, 4, 2, 3))
    for padding in ("same", "valid"):
        dy = rng.standard_normal(conv(x, u, padding).shape)
        dx, du = conv_grads(x, u, dy, padding, relu=True)
        eps = 1e-6
        for array, grad in ((x, dx), (u, du)):
            for index in [tuple(rng.integers(0, s) for s in array.shape) for _ in range(6)]:
                plus, minus = array.copy(), array.copy()
                plus[index] += eps
                minus[index] -= eps
                if array is x:
                    f = lambda a: np.sum(conv(a, u, padding) * dy)  # noqa: E731
                else:
                    f = lambda a: np.sum(conv(x, a, padding) * dy)  # noqa: E731
                numeric = (f(plus) - f(minus)) / (2 * eps)
                assert abs(numeric - grad[index]) < 1e-5 * max(1, abs(numeric))
