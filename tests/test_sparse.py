"""Sparse inference: the compressed format, the sparse kernels and layer, sparsify/densify.

Expectations come from the float64 numpy model of the dense convolution
with the pruned kernel (numpy_reference.conv), and from masks built here bit
by bit, never from the code under test.
"""

import concurrent.futures
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import keras

from conftest import BACKEND, SHAPES, VALID_SHAPES, random_normal
from keras_swcnn import native, sparse, winograd
from keras_swcnn import ops as wops
from keras_swcnn import sparse_format
from keras_swcnn.layers import SparseWinogradReLUConv2D, WinogradReLUConv2D
from numpy_reference import conv, rel_error

# Plus channel counts of whole AVX-512 vectors (the fixed-width input transform; past four
# vectors, the vector-at-a-time one), with rows of more tiles than a block of lanes.
CASES = [(s, "same") for s in SHAPES + [(1, 5, 6, 70, 33), (3, 10, 11, 33, 47),
                                        (2, 7, 9, 16, 20), (2, 3, 70, 64, 16),
                                        (1, 9, 13, 96, 24)]] + [
    (s, "valid") for s in VALID_SHAPES + [(1, 6, 5, 32, 48)]
]
DENSITIES = [0.0, 0.07, 0.3, 1.0]


def pruned_kernel(rng, c, k, density):
    """A (4, 4, C, K) kernel with a random fraction `density` of its weights non-zero."""
    kernel = random_normal(rng, (4, 4, c, k)) / np.sqrt(c)
    return np.where(rng.random(kernel.shape) < density, kernel, 0.0).astype(np.float32)


def mask_bit_by_bit(kernel):
    """The format's mask, built with plain loops (independent of sparse_format.compress)."""
    _, _, c, k = kernel.shape
    words = (c + 31) // 32
    mask = np.zeros((16, k, words), np.uint32)
    flat = kernel.reshape(16, c, k)
    for t in range(16):
        for kk in range(k):
            for cc in range(c):
                if flat[t, cc, kk] != 0:
                    mask[t, kk, cc // 32] |= np.uint32(1) << np.uint32(cc % 32)
    return mask.view(np.int32)


# The format ------------------------------------------------------------------

@pytest.mark.parametrize("c,k", [(1, 1), (5, 3), (32, 2), (33, 4), (70, 5)])
def test_compress_matches_a_bit_by_bit_mask_and_expands_back(rng, c, k):
    kernel = pruned_kernel(rng, c, k, 0.3)
    mask, values = sparse_format.compress(kernel)
    assert mask.dtype == np.int32 and mask.shape == (16, k, (c + 31) // 32)
    assert np.array_equal(mask, mask_bit_by_bit(kernel))
    columns = kernel.reshape(16, c, k).transpose(0, 2, 1)
    assert np.array_equal(values, np.array([v for v in columns.ravel() if v != 0], np.float32))
    assert sparse_format.count_stored(mask) == values.size
    expanded = np.asarray(keras.ops.convert_to_numpy(sparse_format.expand(mask, values, c)))
    assert np.array_equal(expanded, kernel)


@pytest.mark.backend_independent
def test_compress_refuses_a_kernel_of_the_wrong_rank():
    with pytest.raises(ValueError, match=r"\(4, 4, C, K\)"):
        sparse_format.compress(np.zeros((3, 3, 2, 2)))


# The native kernel (numpy front door) ----------------------------------------

needs_native = pytest.mark.skipif(not native.available(), reason="native extension not built")


def native_sparse(x, kernel, padding, relu, mode="auto"):
    g = winograd.tile_geometry(x.shape[1], x.shape[2], padding)
    mask, values = sparse_format.compress(kernel)
    return native._require().sparse_conv_forward(
        x, mask, values, g.pad_top, g.pad_left, g.tiles_h, g.tiles_w, g.out_h, g.out_w, relu,
        mode)


@pytest.mark.backend_independent
@needs_native
@pytest.mark.parametrize("shape,padding", CASES)
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("mode", ["sparse", "dense", "auto"])
def test_native_sparse_matches_float64(rng, shape, padding, density, mode):
    n, h, w, c, k = shape
    x = random_normal(rng, (n, h, w, c))
    kernel = pruned_kernel(rng, c, k, density)
    for relu in (True, False):
        expected = conv(x, kernel, padding, relu)
        actual = native_sparse(x, kernel, padding, relu, mode)
        assert actual.shape == expected.shape
        if density == 0.0:
            assert not actual.any()
        else:  # float32 sums of 16*C terms; a 1x1 'valid' output of cancelling terms
            assert rel_error(actual, expected) < 2e-5  # has reached 1.1e-5


@pytest.mark.backend_independent
@needs_native
def test_native_sparse_refuses_inconsistent_kernels(rng):
    x = random_normal(rng, (1, 6, 6, 40))
    kernel = pruned_kernel(rng, 40, 3, 0.2)
    mask, values = sparse_format.compress(kernel)
    module = native._require()

    def call(mask, values, mode="auto"):
        return module.sparse_conv_forward(x, mask, values, 1, 1, 3, 3, 6, 6, True, mode)

    with pytest.raises(ValueError, match="bits set but"):
        call(mask, values[:-1])
    past_c = mask.copy()
    past_c[0, 0, 1] |= np.int32(1 << 20)  # channel 52 of 40
    with pytest.raises(ValueError, match="past the input channels"):
        call(past_c, np.concatenate([values, [1.0]]).astype(np.float32))
    with pytest.raises(ValueError, match="ceil"):
        call(mask[:, :, :1], values)
    with pytest.raises(ValueError, match="mode"):
        call(mask, values, "fast")


@pytest.mark.backend_independent
@needs_native
def test_a_mask_is_decoded_once_and_a_changed_one_again_and_so_are_values(rng):
    # The kernel keeps decoded masks between calls, keyed by their contents: the same mask is
    # decoded once, and a buffer rewritten in place with another mask of the same count (same
    # address, same shape, same number of stored weights) must not be taken for the first.
    module = native._require()
    x = random_normal(rng, (2, 7, 9, 40))
    kernel = pruned_kernel(rng, 40, 24, 0.1)
    mask, values = sparse_format.compress(kernel)

    def call():
        return module.sparse_conv_forward(x, mask, values, 1, 1, 4, 5, 7, 9, True, "sparse")

    decoded = module.sparse_mask_cache()[1]
    first, again = call(), call()
    assert module.sparse_mask_cache()[1] == decoded + 1
    expected = conv(x, kernel, "same", True)
    assert rel_error(first, expected) < 2e-5 and np.array_equal(again, first)

    # Move the largest stored weight to another input channel of its column.
    moved = kernel.reshape(16, 40, 24).copy()
    t, c, k = np.unravel_index(int(np.argmax(np.abs(moved))), moved.shape)
    free = int(np.flatnonzero(moved[t, :, k] == 0)[0])
    moved[t, free, k], moved[t, c, k] = moved[t, c, k], 0.0
    moved = moved.reshape(kernel.shape)
    new_mask, new_values = sparse_format.compress(moved)
    assert new_values.size == values.size and not np.array_equal(new_mask, mask)
    mask[...], values[...] = new_mask, new_values
    changed = call()
    assert module.sparse_mask_cache()[1] == decoded + 2
    assert rel_error(changed, conv(x, moved, "same", True)) < 2e-5
    assert rel_error(changed, expected) > 1e-3

    # Above the crossover the kernel is expanded for the dense kernel, and the expansion is kept
    # with the decoded mask: new values under the same mask must be expanded again.
    dense = module.sparse_conv_forward(x, mask, values, 1, 1, 4, 5, 7, 9, True, "dense")
    assert rel_error(dense, conv(x, moved, "same", True)) < 2e-5
    values *= np.float32(-0.5)
    dense = module.sparse_conv_forward(x, mask, values, 1, 1, 4, 5, 7, 9, True, "dense")
    assert rel_error(dense, conv(x, moved * np.float32(-0.5), "same", True)) < 2e-5

    # A decoded mask does not excuse a bad one: a stray bit is still refused.
    mask[0, 0, 1] |= np.int32(1 << 20)  # channel 52 of 40
    with pytest.raises(ValueError, match="bits set"):
        call()


@pytest.mark.backend_independent
@needs_native
def test_decoded_masks_are_kept_for_the_most_recent_128(rng):
    module = native._require()
    x = random_normal(rng, (2, 9, 9, 1))  # 50 tiles: an all-zero output is out of reach
    # 130 different masks of a 1 -> 1 channel kernel: the bits of pattern i say which of the 16
    # positions store a weight.
    kernels = []
    for pattern in rng.choice(np.arange(1, 1 << 16), size=130, replace=False):
        stored = (int(pattern) >> np.arange(16)) & 1
        kernels.append((stored * random_normal(rng, (16,))).reshape(4, 4, 1, 1).astype(np.float32))

    def call(kernel):
        return native_sparse(x, kernel, "same", True, "sparse")

    decoded = module.sparse_mask_cache()[1]
    for kernel in kernels:
        call(kernel)
    kept, now = module.sparse_mask_cache()
    assert kept <= 128 and now == decoded + 130
    call(kernels[-1])  # the most recent is kept
    assert module.sparse_mask_cache()[1] == decoded + 130
    first = call(kernels[0])  # the oldest was dropped: decoded again, and right
    assert module.sparse_mask_cache()[1] == decoded + 131
    assert rel_error(first, conv(x, kernels[0], "same", True)) < 2e-5


@pytest.mark.backend_independent
@needs_native
def test_calls_from_several_threads_share_the_kept_masks_safely(rng):
    # The front door releases the GIL: threads decode, keep, find and expand masks at once (a
    # shared mask, and one of each thread's own), in both modes.
    x = random_normal(rng, (2, 9, 11, 24))
    kernels = [pruned_kernel(rng, 24, 20, 0.2) for _ in range(5)]
    expected = [conv(x, kernel, "same", True) for kernel in kernels]

    def work(own):
        errors = []
        for step in range(12):
            which = own if step % 2 else 0
            mode = ("sparse", "dense")[step % 3 == 0]
            errors.append(rel_error(native_sparse(x, kernels[which], "same", True, mode),
                                    expected[which]))
        return max(errors)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        worst = list(pool.map(work, [1, 2, 3, 4]))
    assert max(worst) < 2e-5


SUBPROCESS = textwrap.dedent("""
    import sys
    import numpy as np
    from keras_swcnn import _native
    data = np.load(sys.argv[1])
    y = _native.sparse_conv_forward(data["x"], data["mask"], data["values"], 1, 1, 5, 6, 9, 11,
                                    True, "sparse")
    np.savez(sys.argv[2], y=y, isa=_native.conv_isa())
""")


@pytest.mark.backend_independent
@needs_native
# A partial vector of channels (inputs by vector), then whole AVX2 / baseline vectors (fixed width).
@pytest.mark.parametrize("channels", [(37, 21), (24, 16), (12, 8)])
@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_every_instruction_set_and_thread_count_matches_float64(tmp_path, rng, isa, channels):
    c, k = channels
    x = random_normal(rng, (3, 9, 11, c))
    kernel = pruned_kernel(rng, c, k, 0.15)
    mask, values = sparse_format.compress(kernel)
    source = tmp_path / "in.npz"
    np.savez(source, x=x, mask=mask, values=values)
    results = []
    for threads in ("1", "3"):
        out = tmp_path / f"out{threads}.npz"
        subprocess.run([sys.executable, "-c", SUBPROCESS, str(source), str(out)], check=True,
                       env={**os.environ, "SWCNN_ISA": isa, "SWCNN_NUM_THREADS": threads},
                       timeout=120)
        with np.load(out) as data:
            results.append((data["y"], str(data["isa"])))
    if native._require().conv_isa() == "baseline" and isa == "avx2":
        pytest.skip("this CPU has no AVX2")
    assert results[0][1] == isa
    assert rel_error(results[0][0], conv(x, kernel)) < 1e-5
    assert np.array_equal(results[0][0], results[1][0])  # bit for bit


# The op on this backend ------------------------------------------------------

@pytest.mark.parametrize("implementation", ["reference", "auto"])
@pytest.mark.parametrize("shape,padding", [((2, 7, 9, 5, 3), "same"), ((1, 5, 6, 70, 33), "valid"),
                                           ((3, 1, 2, 4, 2), "same")])
def test_op_matches_float64(rng, implementation, shape, padding):
    n, h, w, c, k = shape
    x = random_normal(rng, (n, h, w, c))
    kernel = pruned_kernel(rng, c, k, 0.2)
    mask, values = sparse_format.compress(kernel)
    for activation in ("relu", None):
        y = wops.sparse_winograd_conv2d(x, mask, values, padding, activation,
                                        implementation=implementation)
        expected = conv(x, kernel, padding, activation == "relu")
        assert rel_error(keras.ops.convert_to_numpy(y), expected) < 1e-5


def test_op_refuses_a_mask_that_does_not_fit(rng):
    x = random_normal(rng, (1, 6, 6, 40))
    mask, values = sparse_format.compress(pruned_kernel(rng, 8, 3, 0.5))
    with pytest.raises(ValueError, match="does not fit 40 input channels"):
        wops.sparse_winograd_conv2d(x, mask, values)
    with pytest.raises(ValueError, match="mode"):
        wops.sparse_winograd_conv2d(x, mask, values, mode="fastest")


@pytest.mark.skipif(BACKEND not in ("jax", "tensorflow")
                    or wops.native_unavailable_reason() is not None,
                    reason="JAX custom calls and TensorFlow ops report kernel errors")
def test_native_reports_a_mask_values_mismatch_when_it_runs(rng):
    # The mask's contents are data: only the kernel, at run time, can see the mismatch.
    x = random_normal(rng, (1, 6, 6, 8))
    mask, values = sparse_format.compress(pruned_kernel(rng, 8, 3, 0.5))
    with pytest.raises(Exception, match="bits set but"):
        np.asarray(wops.sparse_winograd_conv2d(x, mask, values[:-1], implementation="native"))


# The layer ---------------------------------------------------------------------

def dense_layer(rng, c, k, density, **kwargs):
    layer = WinogradReLUConv2D(k, **kwargs)
    layer.build((None, None, None, c) if layer.data_format == "channels_last"
                else (None, c, None, None))
    layer.kernel.assign(pruned_kernel(rng, c, k, density))
    if layer.use_bias:
        layer.bias.assign(random_normal(rng, (k,)))
    return layer


@pytest.mark.parametrize("kwargs", [
    {}, {"padding": "valid", "use_bias": True, "activation": "relu"},
    {"winograd_activation": None, "data_format": "channels_first", "use_bias": True}])
def test_layer_matches_the_dense_layer_with_the_pruned_kernel(rng, kwargs):
    dense = dense_layer(rng, 19, 6, 0.1, **kwargs)
    layer = SparseWinogradReLUConv2D.from_dense(dense)
    assert layer.stored == int(np.count_nonzero(keras.ops.convert_to_numpy(dense.kernel)))
    assert not layer.trainable_weights
    shape = (2, 9, 7, 19) if dense.data_format == "channels_last" else (2, 19, 9, 7)
    x = random_normal(rng, shape)
    expected = keras.ops.convert_to_numpy(dense(x))
    assert rel_error(keras.ops.convert_to_numpy(layer(x)), expected) < 1e-5
    assert np.array_equal(layer.dense_kernel(), keras.ops.convert_to_numpy(dense.kernel))
    back = layer.to_dense()
    assert rel_error(keras.ops.convert_to_numpy(back(x)), expected) < 1e-6


def test_layer_refuses_bad_configuration(rng):
    with pytest.raises(ValueError, match="stored"):
        SparseWinogradReLUConv2D(4, stored=-1)
    with pytest.raises(ValueError, match="sparse_mode"):
        SparseWinogradReLUConv2D(4, stored=1, sparse_mode="fast")
    with pytest.raises(ValueError, match="exceeds"):
        SparseWinogradReLUConv2D(2, stored=1000).build((None, 8, 8, 3))
    layer = SparseWinogradReLUConv2D.from_dense(dense_layer(rng, 3, 2, 0.5))
    with pytest.raises(ValueError, match="non-zero weights"):
        layer.set_dense_kernel(np.ones((4, 4, 3, 2), np.float32))
    with pytest.raises(ValueError, match="WinogradReLUConv2D"):
        SparseWinogradReLUConv2D.from_dense(keras.layers.Dense(3))


def small_model(rng, density):
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = WinogradReLUConv2D(8, name="w1")(x)
    x = keras.layers.BatchNormalization()(x)
    y = WinogradReLUConv2D(8, name="w2", use_bias=True)(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    for layer, d in zip(sparse.winograd_layers(model), density):
        layer.kernel.assign(pruned_kernel(rng, 8, 8, d))
    return model


def test_sparsify_converts_sparse_enough_layers_and_shares_the_rest(rng):
    model = small_model(rng, (0.1, 0.8))
    fast = sparse.sparsify(model, min_sparsity=0.5)
    converted = sparse.sparse_layers(fast)
    assert [layer.name for layer in converted] == ["w1"]
    assert [layer.name for layer in sparse.winograd_layers(fast)] == ["w2"]
    shared = {id(layer) for layer in model.layers}
    assert all(id(layer) in shared for layer in fast.layers
               if not isinstance(layer, (SparseWinogradReLUConv2D, keras.layers.InputLayer)))
    x = random_normal(rng, (3, 12, 12, 3))
    expected = keras.ops.convert_to_numpy(model(x))
    assert rel_error(keras.ops.convert_to_numpy(fast(x)), expected) < 1e-5
    back = sparse.densify(fast)
    assert not sparse.sparse_layers(back)
    assert rel_error(keras.ops.convert_to_numpy(back(x)), expected) < 1e-5
    with pytest.raises(ValueError, match="min_sparsity"):
        sparse.sparsify(model, min_sparsity=1.5)


def test_sparsify_works_on_sequential_and_nested_models(rng):
    inner = small_model(rng, (0.1, 0.1))
    outer = keras.Sequential([keras.Input((12, 12, 3)), inner, keras.layers.Dense(2)])
    fast = sparse.sparsify(outer)
    assert len(sparse.sparse_layers(fast)) == 2
    x = random_normal(rng, (2, 12, 12, 3))
    assert rel_error(keras.ops.convert_to_numpy(fast(x)),
                     keras.ops.convert_to_numpy(outer(x))) < 1e-5


def test_sparsify_refuses_models_with_pruning_wrappers(rng):
    from keras_swcnn import pruning

    model = pruning.prune_low_magnitude(small_model(rng, (0.5, 0.5)))
    with pytest.raises(ValueError, match="strip_pruning"):
        sparse.sparsify(model)


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_saved_sparse_models_are_compact_and_load_back_bit_identical(rng, tmp_path, suffix):
    model = small_model(rng, (0.1, 0.1))
    fast = sparse.sparsify(model)
    path = str(tmp_path / f"sparse{suffix}")
    if suffix == ".keras":
        fast.save(path)
        loaded = keras.models.load_model(path)
    else:
        fast.save_weights(path)
        loaded = keras.models.clone_model(fast)  # same architecture, fresh (zero) weights
        assert not any(keras.ops.convert_to_numpy(w).any()
                       for layer in sparse.sparse_layers(loaded) for w in layer.weights)
        loaded.load_weights(path)
    for a, b in zip(fast.weights, loaded.weights):
        assert np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    x = random_normal(rng, (2, 12, 12, 3))
    assert np.array_equal(keras.ops.convert_to_numpy(loaded(x)),
                          keras.ops.convert_to_numpy(fast(x)))


def test_compressed_kernel_storage_is_five_times_smaller_at_density_0_1(rng):
    c, k = 64, 64
    mask, values = sparse_format.compress(pruned_kernel(rng, c, k, 0.1))
    dense_bytes = 16 * c * k * 4
    assert dense_bytes / (mask.nbytes + values.nbytes) >= 5.0
