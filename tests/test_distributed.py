"""Training on several devices and processes learns what one device learns, with the native
kernels partitioned along the batch (and, under model parallelism, the filters).

Each setting runs ``tests/distributed_check.py`` in a fresh process (device
counts are fixed when JAX or TensorFlow starts) and is compared with the same
two SGD steps computed in float64 numpy.
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

import numpy_reference as ref
from conftest import with_test_helpers
from keras_swcnn import native

pytestmark = pytest.mark.skipif(not native.available(), reason="native extension not built")

CHECK = os.path.join(os.path.dirname(__file__), "distributed_check.py")
TIMEOUT_S = 240


def _make_case(rng, path):
    case = dict(
        x=rng.normal(size=(16, 7, 9, 3)).astype("float32"),  # odd height and width
        t=rng.normal(size=(16, 5, 7, 2)).astype("float32"),
        u1=(0.4 * rng.normal(size=(4, 4, 3, 4))).astype("float32"),
        u2=(0.4 * rng.normal(size=(4, 4, 4, 2))).astype("float32"),
        batch_size=8, epochs=1, learning_rate=0.01,  # small enough not to diverge
    )
    np.savez(path, **case)
    return case


def _expected_kernels(case):
    """Two SGD steps of mean squared error through both layers, in float64."""
    u1, u2 = np.float64(case["u1"]), np.float64(case["u2"])
    batch = case["batch_size"]
    for start in range(0, len(case["x"]), batch):
        x = np.float64(case["x"][start:start + batch])
        t = np.float64(case["t"][start:start + batch])
        y1 = ref.conv(x, u1, "same")
        y2 = ref.conv(y1, u2, "valid")
        dy2 = 2 * (y2 - t) / y2.size
        dy1, du2 = ref.conv_grads(y1, u2, dy2, "valid")
        _, du1 = ref.conv_grads(x, u1, dy1, "same")
        u1, u2 = u1 - case["learning_rate"] * du1, u2 - case["learning_rate"] * du2
    return u1, u2


def _run(setting, case_path, out_path, *extra, wait=True):
    env = with_test_helpers({k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})
    command = [sys.executable, CHECK, setting, str(case_path), str(out_path), *map(str, extra)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    return _finish(process) if wait else process


def _finish(process):
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"{process.args[2]} did not finish in {TIMEOUT_S} s:\n{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``trained(setting)``: (case, trained kernels, facts) of a setting, all on one random case."""
    seed = int(np.random.SeedSequence().entropy % (2**63))
    print(f"random seed: {seed}")
    directory = tmp_path_factory.mktemp("distributed")
    case = _make_case(np.random.default_rng(seed), directory / "case.npz")
    runs = {}

    def run(setting):
        if setting not in runs:
            if setting == "jax-process":
                _run_two_processes(directory)
            else:
                _run(setting, directory / "case.npz", directory / f"{setting}.npz")
            out = np.load(directory / f"{setting}.npz")
            runs[setting] = (case, out, json.loads(str(out["facts"])))
        return runs[setting]

    return run


def _run_two_processes(directory):
    with socket.socket() as probe:  # a free port on the loopback interface
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workers = [  # process 0 writes the result
        _run("jax-process", directory / "case.npz", directory / "jax-process.npz", i, port,
             wait=False)
        for i in range(2)
    ]
    for worker in workers:
        _finish(worker)


def _assert_learned(case, out):
    expected = _expected_kernels(case)
    for name, want in zip(("u1", "u2"), expected):
        assert not np.allclose(want, case[name], rtol=1e-3)  # the steps moved the kernels
        np.testing.assert_allclose(out[name], want, rtol=2e-4, atol=2e-5, err_msg=name)


def _assert_same_as(out, single):
    """The distributed run reached the one-device run's weights (the issue's rtol 1e-5)."""
    for name in ("u1", "u2"):
        np.testing.assert_allclose(out[name], single[name], rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.fixture
def only_backend():
    def skip_unless(backend):
        if keras.backend.backend() != backend:
            pytest.skip(f"{backend} setting; the suite runs it once, with that backend")
    return skip_unless


@pytest.mark.parametrize("setting", ["jax-single", "jax-data-parallel"])
def test_jax_data_parallel_partitions_the_native_calls(setting, trained, only_backend):
    only_backend("jax")
    case, out, facts = trained(setting)
    _assert_learned(case, out)
    _assert_same_as(out, trained("jax-single")[1])
    devices = 2 if setting == "jax-data-parallel" else 1
    calls = facts["native_calls"]
    assert sorted(target for target, _ in calls) == [
        "swcnn_conv_backward", "swcnn_conv_backward", "swcnn_conv_forward", "swcnn_conv_forward"]
    # Each device convolves its own share of the batch of 8, and nothing is gathered for it.
    for _, (x_shape, *_) in calls:
        assert x_shape[0] == 8 // devices, calls
    assert facts["all_gathers"] == []


def test_jax_model_parallel_splits_images_and_filters(trained, only_backend):
    only_backend("jax")
    case, out, facts = trained("jax-model-parallel")
    _assert_learned(case, out)
    _assert_same_as(out, trained("jax-single")[1])
    # A 2x2 mesh: images split over "batch", each kernel's filters over "model".
    filters = {case["u1"].shape[2]: case["u1"].shape[3], case["u2"].shape[2]: case["u2"].shape[3]}
    for target, (x_shape, u_shape, *dy_shape) in facts["native_calls"]:
        assert x_shape[0] == 4 and u_shape[2] == filters[x_shape[3]] // 2, facts
        assert all(dy[0] == 4 and dy[3] == u_shape[2] for dy in dy_shape), facts
    # The one gather: the first layer's split filters are the second layer's input channels.
    assert facts["all_gathers"] == [[4, 7, 9, 4]]


def test_jax_two_processes_learn_what_one_does(trained, only_backend):
    only_backend("jax")
    case, out, facts = trained("jax-process")
    _assert_learned(case, out)
    _assert_same_as(out, trained("jax-single")[1])
    assert len(facts["native_calls"]) == 4 and facts["all_gathers"] == []
    for _, (x_shape, *_) in facts["native_calls"]:
        assert x_shape[0] == 4, facts  # each process's device: its 4 images of the batch of 8
    assert facts["gloo_hostname"] == "127.0.0.1"  # the collectives, too, on the loopback only


@pytest.mark.parametrize("setting", ["tf-single", "tf-mirrored"])
def test_tensorflow_mirrored_strategy(setting, trained, only_backend):
    only_backend("tensorflow")
    case, out, facts = trained(setting)
    _assert_learned(case, out)  # and the check script fails if the reference path runs
    _assert_same_as(out, trained("tf-single")[1])
    replicas = 2 if setting == "tf-mirrored" else 1
    assert facts["replicas"] == replicas
    # Each replica's step places its own native forward and backward ops on its device
    # (TensorFlow ops: Keras turns jit_compile off under tf.distribute).
    devices = sorted({device for _, device in facts["native_calls"]})
    assert [device[-5:] for device in devices] == [f"CPU:{i}" for i in range(replicas)], facts
    for device in devices:
        targets = sorted(target for target, d in facts["native_calls"] if d == device)
        assert targets == ["SwcnnConvBackward"] * 2 + ["SwcnnConvForward"] * 2, facts


def test_jax_ops_split_even_batches_and_keep_uneven_or_replicated_ones_whole(tmp_path, rng, only_backend):
    only_backend("jax")
    u = rng.normal(size=(4, 4, 3, 4)).astype("float32")
    u[rng.random(u.shape) < 0.7] = 0  # a pruned kernel for the sparse call
    case = dict(x=rng.normal(size=(6, 7, 9, 3)).astype("float32"), u1=u,
                w=rng.normal(size=(5, 7, 9, 4)).astype("float32"))
    np.savez(tmp_path / "case.npz", **case)
    _run("jax-ops", tmp_path / "case.npz", tmp_path / "out.npz")
    out = np.load(tmp_path / "out.npz")
    facts = json.loads(str(out["facts"]))
    y = ref.conv(case["x"], u)
    np.testing.assert_allclose(out["y"], y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["y_replicated"], y, rtol=1e-4, atol=1e-4)
    dx, du = ref.conv_grads(case["x"][:5], u, case["w"])
    np.testing.assert_allclose(out["dx"][:5], dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out["dx"][5:], 0)
    np.testing.assert_allclose(out["du"], du, rtol=1e-4, atol=1e-4)
    # 6 images over 2 devices: 3 each. 5 do not split evenly: each device takes all 5 (the
    # padding of an uneven shard would otherwise enter the kernel gradient's sum).
    assert [[t, x[0]] for t, (x, *_) in facts["sparse"]] == [["swcnn_sparse_conv_forward", 3]]
    assert [[t, x[0]] for t, (x, *_) in facts["uneven"]] == [["swcnn_conv_backward", 5]], facts
    # Nothing split: the whole batch on each device, no communication.
    assert [[t, x[0]] for t, (x, *_) in facts["replicated"]] == [["swcnn_conv_forward", 6]], facts
