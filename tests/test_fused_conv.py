"""The fused native convolution (numpy front door) against the float64 numpy model.

The layer reaches the same kernels through XLA custom calls
(test_native_ops.py); here they are called directly, on every instruction
set the machine can run (AVX-512, AVX2, baseline x86-64, picked with
SWCNN_ISA in a subprocess), with several thread counts, and with bad input.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import SHAPES, VALID_SHAPES, random_normal, with_test_helpers
from keras_swcnn import native, winograd
from numpy_reference import clear_of_relu_kinks, conv, conv_grads, rel_error

pytestmark = [
    pytest.mark.skipif(not native.available(), reason="native extension not built"),
    pytest.mark.backend_independent,  # the numpy front door only
]

# The shared awkward shapes, plus channel counts that leave partial vector
# panels and row blocks, and more than 512 channels.
# (1, 9, 7, 260, 200): few tiles and weights past L2, so the threads split the
# output columns (forward) and dx's channels (backward) rather than the tiles.
CASES = [(s, "same") for s in SHAPES + [(1, 5, 6, 520, 17), (2, 3, 4, 7, 513),
                                        (3, 10, 11, 33, 47), (1, 9, 7, 260, 200)]] + [
    (s, "valid") for s in VALID_SHAPES
]
# Channel counts of one to four whole AVX-512 vectors take the fixed-width
# block transforms (tile-major blocks, tiles walked along their rows, dx of
# neighbouring tiles summed in registers), on their own or beside a width
# that does not; with images of one, two and odd numbers of pixels, and runs
# of tiles that cross image and block boundaries (28x28 images, 3 of them).
FIXED_WIDTH_CASES = [((2, 7, 9, 16, 32), "same"), ((1, 1, 2, 48, 16), "same"),
                     ((3, 5, 1, 32, 64), "same"), ((2, 2, 3, 16, 16), "same"),
                     ((2, 6, 5, 64, 48), "valid"), ((2, 5, 6, 16, 20), "same"),
                     ((2, 6, 7, 21, 16), "valid"), ((3, 28, 28, 16, 16), "same"),
                     ((2, 9, 8, 32, 32), "valid")]


def fused(x, u, dy, padding, relu):
    module = native._require()
    g = winograd.tile_geometry(x.shape[1], x.shape[2], padding)
    c, k = u.shape[2:]
    y = module.conv_forward(x, u.reshape(16, c, k), g.pad_top, g.pad_left, g.tiles_h,
                            g.tiles_w, g.out_h, g.out_w, relu)
    dx, du = module.conv_backward(x, u.reshape(16, c, k), dy, g.pad_top, g.pad_left,
                                  g.tiles_h, g.tiles_w, relu)
    return y, dx, du.reshape(u.shape)


@pytest.mark.parametrize("shape,padding", CASES + FIXED_WIDTH_CASES)
@pytest.mark.parametrize("relu", [True, False])
def test_forward_and_gradients_match_float64(rng, shape, padding, relu):
    n, h, w, c, k = shape
    x = clear_of_relu_kinks(random_normal(rng, (n, h, w, c)), padding)
    u = random_normal(rng, (4, 4, c, k)) / np.sqrt(c)
    expected = conv(x, u, padding, relu)
    dy = random_normal(rng, expected.shape)
    y, dx, du = fused(x, u, dy, padding, relu)
    dx_expected, du_expected = conv_grads(x, u, dy, padding, relu)
    assert rel_error(y, expected) < 1e-5
    assert rel_error(dx, dx_expected) < 1e-5
    assert rel_error(du, du_expected) < 1e-5


def test_empty_batch_gives_zero_kernel_gradient():
    x = np.zeros((0, 5, 5, 3), np.float32)
    u = np.ones((4, 4, 3, 2), np.float32)
    y, dx, du = fused(x, u, np.zeros((0, 5, 5, 2), np.float32), "same", True)
    assert y.shape == (0, 5, 5, 2) and dx.shape == x.shape
    assert np.array_equal(du, np.zeros_like(u))


def test_bad_shapes_are_refused(rng):
    module = native._require()
    x = random_normal(rng, (1, 6, 6, 3))
    u = random_normal(rng, (16, 4, 2))  # 4 input channels for a 3-channel input
    with pytest.raises(ValueError, match="u must have shape"):
        module.conv_forward(x, u, 1, 1, 3, 3, 6, 6, True)
    u = random_normal(rng, (16, 3, 2))
    with pytest.raises(ValueError, match="out_h/out_w"):
        module.conv_forward(x, u, 1, 1, 3, 3, 9, 6, True)
    with pytest.raises(ValueError, match="dy must have shape"):
        module.conv_backward(x, u, random_normal(rng, (1, 6, 6, 5)), 1, 1, 3, 3, True)


SUBPROCESS = textwrap.dedent("""
    import numpy as np, sys
    from keras_swcnn import native
    _native = native._require()  # honours KERAS_SWCNN_NATIVE_LIBRARY (sanitizer builds)
    data = np.load(sys.argv[1])
    x, u, dy = data["x"], data["u"], data["dy"]
    h, w = x.shape[1:3]  # "same" padding
    y = _native.conv_forward(x, u, 1, 1, (h + 1) // 2, (w + 1) // 2, h, w, True)
    dx, du = _native.conv_backward(x, u, dy, 1, 1, (h + 1) // 2, (w + 1) // 2, True)
    np.savez(sys.argv[2], y=y, dx=dx, du=du, isa=_native.conv_isa())
""")


def run_isolated(tmp_path, inputs, **env):
    """The fused kernels' results in a fresh process with `env` set."""
    source, result = tmp_path / "in.npz", tmp_path / f"out{len(env)}{sorted(env.items())}.npz"
    np.savez(source, **inputs)
    subprocess.run([sys.executable, "-c", SUBPROCESS, str(source), str(result)], check=True,
                   env={**os.environ, **env}, timeout=120)
    with np.load(result) as data:
        return {name: data[name] for name in data.files}


def isolated_inputs(rng, c=37, k=21):
    x = clear_of_relu_kinks(random_normal(rng, (3, 9, 11, c)))
    u = random_normal(rng, (16, c, k)) / np.sqrt(c)
    dy = random_normal(rng, (3, 9, 11, k))
    return {"x": x, "u": u, "dy": dy}


# 37 -> 21 channels: the generic transforms. 24 -> 16 and 12 -> 8: the
# fixed-width ones for whole AVX2 (8 floats) or baseline (4 floats) vectors.
# 260 -> 200: weights past L2 for 90 tiles, split by columns and channels.
@pytest.mark.parametrize("channels", [(37, 21), (24, 16), (12, 8), (260, 200)])
@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_every_instruction_set_matches_float64(tmp_path, rng, isa, channels):
    c, k = channels
    inputs = isolated_inputs(rng, c, k)
    out = run_isolated(tmp_path, inputs, SWCNN_ISA=isa)
    if native._require().conv_isa() == "baseline" and isa == "avx2":
        pytest.skip("this CPU has no AVX2")
    assert str(out["isa"]) == isa
    x, u, dy = inputs["x"], inputs["u"].reshape(4, 4, c, k), inputs["dy"]
    dx_expected, du_expected = conv_grads(x, u, dy)
    assert rel_error(out["y"], conv(x, u)) < 1e-5
    assert rel_error(out["dx"], dx_expected) < 1e-5
    assert rel_error(out["du"].reshape(u.shape), du_expected) < 1e-5


# The kernel gradient is summed three ways, chosen by shape: per band of tiles in the dx pass
# (few channels), per chunk of tiles (more channels, many tiles), per group of positions.
@pytest.mark.parametrize("shape", [(3, 9, 11, 37, 21), (16, 14, 14, 8, 8), (16, 28, 28, 64, 64),
                                   (2, 6, 6, 300, 300)])
def test_results_do_not_depend_on_the_thread_count(tmp_path, rng, shape):
    n, h, w, c, k = shape
    inputs = {"x": clear_of_relu_kinks(random_normal(rng, (n, h, w, c))),
              "u": random_normal(rng, (16, c, k)) / np.sqrt(c),
              "dy": random_normal(rng, (n, h, w, k))}
    one = run_isolated(tmp_path, inputs, SWCNN_NUM_THREADS="1")
    three = run_isolated(tmp_path, inputs, SWCNN_NUM_THREADS="3")
    for name in ("y", "dx", "du"):
        assert np.array_equal(one[name], three[name]), name  # bit for bit
    u = inputs["u"].reshape(4, 4, c, k)
    dx_expected, du_expected = conv_grads(inputs["x"], u, inputs["dy"])
    assert rel_error(one["dx"], dx_expected) < 1e-5
    assert rel_error(one["du"].reshape(u.shape), du_expected) < 1e-5


OUT_OF_MEMORY = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from keras_swcnn import native
    from numpy_reference import conv, rel_error
    _native = native._require()
    rng = np.random.default_rng(int(sys.argv[2]))
    x = rng.standard_normal((2, 40, 40, 600), dtype=np.float32)
    u = rng.standard_normal((16, 600, 600), dtype=np.float32)
    dy = rng.standard_normal((2, 40, 40, 600), dtype=np.float32)
    small_x = rng.standard_normal((1, 5, 7, 3), dtype=np.float32)
    small_u = rng.standard_normal((16, 3, 2), dtype=np.float32)
    size = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
    # Address space for the inputs and a little more: thread stacks and scratch buffers run out.
    limit = size + int(sys.argv[1]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    outcomes = []
    for call in (lambda: _native.conv_forward(x, u, 1, 1, 20, 20, 40, 40, True),
                 lambda: _native.conv_backward(x, u, dy, 1, 1, 20, 20, True)):
        try:
            call()
            outcomes.append("ok")
        except MemoryError:
            outcomes.append("MemoryError")
    y = _native.conv_forward(small_x, small_u, 1, 1, 3, 4, 5, 7, True)
    assert rel_error(y, conv(small_x, small_u.reshape(4, 4, 3, 2))) < 1e-5
    print(" ".join(outcomes))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer reports running out of memory instead of throwing")
@pytest.mark.parametrize("megabytes", [60, 1500])
def test_running_out_of_memory_or_threads_raises_memory_error(megabytes):
    """Finding: a failed thread start or allocation in a worker must not abort the process.

    With 64 threads asked for and the address space capped, threads fail to
    start and scratch buffers fail to allocate: each call raises MemoryError
    or succeeds, and the process then still computes correctly.
    """
    seed = int(np.random.SeedSequence().entropy % (2**31))
    env = with_test_helpers({**os.environ, "SWCNN_NUM_THREADS": "64"})
    done = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY, str(megabytes), str(seed)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = done.stdout.split()
    assert set(outcomes) <= {"ok", "MemoryError"} and len(outcomes) == 2, done.stdout
    if megabytes == 60:
        assert outcomes == ["MemoryError", "MemoryError"]
