"""The tensorpack converter, against checkpoints named and shaped as the paper's script writes them.

Nothing here comes from the converter: the checkpoint's 234 variables are read from
``data/resnet18_var_checkpoint_variables.txt`` (written out from the paper's
script), and the expected logits come from ``tensorpack_reference``, a float64 numpy
model of the original network.
"""

import os
import pickle
import struct

import numpy as np
import pytest
from keras import ops

from keras_swcnn.applications import ResNet18, preprocess_input, preprocessing_mode
from numpy_reference import rel_error
import tensorpack_reference

pytest.importorskip("tensorflow")
from keras_swcnn.applications.convert import (  # noqa: E402
    convert_tensorpack_checkpoint, load_mask_pickle)

VARIABLES_FILE = os.path.join(os.path.dirname(__file__), "data", "resnet18_var_checkpoint_variables.txt")


def paper_variables():
    """``{name: (dtype, shape)}`` of a training checkpoint of the paper's ResNet-18-var."""
    variables = {}
    with open(VARIABLES_FILE) as f:
        for line in f:
            if line.startswith("#"):
                continue
            name, dtype, shape = (line.rstrip("\n").split(" ") + [""])[:3]
            variables[name] = (dtype, tuple(int(d) for d in shape.split(",") if d))
    return variables


def random_values(rng, variables):
    """Random values on scales that keep the network's activations O(1)."""
    values = {}
    for name, (dtype, shape) in variables.items():
        if dtype == "int64":
            values[name] = np.int64(rng.integers(1, 10**6))
            continue
        value = rng.standard_normal(shape)
        if name.endswith("/variance/EMA"):
            value = 0.5 + 0.5 * np.abs(value)
        elif name.endswith("/gamma"):
            value = 1.0 + 0.2 * value
        elif name.endswith(("/beta", "/mean/EMA", "linear/b")):
            value = 0.1 * value
        elif name.endswith("/W") and len(shape) > 1:
            fan_in = np.prod(shape[:-1]) / (16 / 9 if name.startswith("Winograd") else 1)
            value = value * np.sqrt(1.0 / fan_in)
        values[name] = np.asarray(value, dtype)
    return values


def write_checkpoint(prefix, values):
    import tensorflow as tf

    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in values.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, prefix)
    return prefix


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    seed = int(np.random.SeedSequence().entropy % (2**63))
    print(f"checkpoint seed: {seed}")
    rng = np.random.default_rng(seed)
    values = random_values(rng, paper_variables())
    prefix = write_checkpoint(str(tmp_path_factory.mktemp("paper") / "model-187500"), values)
    return prefix, values


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(int(np.random.SeedSequence().entropy % (2**63)))
    return rng.integers(0, 256, (2, 224, 224, 3)).astype(np.uint8)


def paper_masks(rng, values, density=0.3):
    """Masks as prune_script.py makes them: 0/1 float32 arrays keyed like 'Winograd_W2a_2a/W'."""
    masks = {}
    for name, value in values.items():
        if name.startswith("Winograd_W") and not name.endswith("Momentum"):
            threshold = np.quantile(np.abs(value), 1 - density)
            masks[name] = (np.abs(value) > threshold).astype(np.float32)
    return masks


class Python2StylePickler(pickle._Pickler):
    """Writes text and bytes as Python 2 ``str`` records, as the paper's Python 2 ``pickle.dump`` did."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str
    dispatch[str] = save_python2_str


def write_python2_pickle(path, masks):
    with open(path, "wb") as f:
        Python2StylePickler(f, protocol=2).dump(masks)
    with open(path, "rb") as f:  # Python 2's numpy lived in numpy.core
        data = f.read().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    with open(path, "wb") as f:
        f.write(data)
    return path


def keras_logits(weights_path, images):
    model = ResNet18(weights=weights_path, classifier_activation=None)
    return ops.convert_to_numpy(model(preprocess_input(images, weights=weights_path)))


def test_a_checkpoint_with_the_papers_names_converts_and_reproduces_its_logits(checkpoint, images, tmp_path):
    prefix, values = checkpoint
    out = convert_tensorpack_checkpoint(prefix, tmp_path / "r18.weights.h5")
    model = ResNet18(weights=out)
    for s in "2345":
        for b in "ab":
            for x in "ab":
                paper = values[f"Winograd_W{s}{b}_2{x}/W"]  # [16, C, K], t = 4 row + col
                kernel = ops.convert_to_numpy(model.get_layer(f"res{s}{b}_branch2{x}").kernel)
                for t in range(16):
                    np.testing.assert_array_equal(kernel[t // 4, t % 4], paper[t])
    assert preprocessing_mode(out) == "tensorpack"
    expected = tensorpack_reference.logits(tensorpack_reference.read_image_like_the_original(images), values)
    assert rel_error(keras_logits(out, images), expected) < 1e-4
    # The RGB ('torch') preprocessing is not what the original saw: the logits differ clearly.
    rgb_fed = ops.convert_to_numpy(ResNet18(weights=out, classifier_activation=None)(
        preprocess_input(images, mode="torch")))
    assert rel_error(rgb_fed, expected) > 1e-2


@pytest.mark.parametrize("writer", ["python2", "protocol2", "protocol5"])
def test_masks_from_the_pruning_pickle(checkpoint, images, tmp_path, rng, writer):
    prefix, values = checkpoint
    masks = paper_masks(rng, values)
    path = str(tmp_path / "prune_mask_0.3.pkl")
    if writer == "python2":
        write_python2_pickle(path, masks)
    else:
        with open(path, "wb") as f:
            pickle.dump(masks, f, protocol=int(writer[-1]))
    loaded = load_mask_pickle(path)
    assert sorted(loaded) == sorted(masks)
    for name in masks:
        np.testing.assert_array_equal(loaded[name], masks[name])
    if writer != "python2":
        return
    out = convert_tensorpack_checkpoint(prefix, str(tmp_path / "pruned.weights.h5"), masks=path)
    kernel = ops.convert_to_numpy(ResNet18(weights=out).get_layer("res4b_branch2a").kernel)
    paper = values["Winograd_W4b_2a/W"] * masks["Winograd_W4b_2a/W"]
    np.testing.assert_array_equal(kernel.reshape(paper.shape), paper)
    assert np.mean(kernel != 0) == pytest.approx(0.3, abs=0.01)
    expected = tensorpack_reference.logits(
        tensorpack_reference.read_image_like_the_original(images), values, masks=masks)
    assert rel_error(keras_logits(out, images), expected) < 1e-4


def test_the_command_converts_with_masks(checkpoint, tmp_path, rng, capsys):
    from keras_swcnn import cli

    prefix, values = checkpoint
    masks = tmp_path / "masks.pkl"
    write_python2_pickle(masks, paper_masks(rng, values, density=0.1))
    out = str(tmp_path / "cli.weights.h5")
    assert cli.main(["convert-tensorpack", prefix + ".index", out, "--masks", str(masks)]) == 0
    assert "tensorpack" in capsys.readouterr().out
    kernel = ops.convert_to_numpy(ResNet18(weights=out).get_layer("res2a_branch2a").kernel)
    assert np.mean(kernel != 0) == pytest.approx(0.1, abs=0.01)
    assert cli.main(["convert-tensorpack", str(tmp_path / "nothing"), out]) == 2
    assert "No TF checkpoint" in capsys.readouterr().err


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class NotAnArray:
    pass


@pytest.mark.parametrize("payload", ["os.system", "custom class", "eval", "object array"])
def test_malicious_or_foreign_pickles_are_refused(tmp_path, payload):
    marker = tmp_path / "ran"
    content = {
        "os.system": lambda: {"Winograd_W2a_2a/W": RunsCode(marker)},
        "custom class": lambda: {"Winograd_W2a_2a/W": NotAnArray()},
        "eval": lambda: [eval, "print('x')"],
        "object array": lambda: {"Winograd_W2a_2a/W": np.array(["a", None], dtype=object)},
    }[payload]()
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=2)
    with pytest.raises(ValueError, match="mask file|Mask file|numeric"):
        load_mask_pickle(path)
    assert not marker.exists()


def test_truncated_and_non_dict_pickles(tmp_path):
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"Winograd_W2a_2a/W": np.ones((16, 2, 2))})[:-7])
    with pytest.raises(ValueError, match="Could not read"):
        load_mask_pickle(path)
    path.write_bytes(pickle.dumps([np.ones(3)]))
    with pytest.raises(ValueError, match="dict of name -> numpy array"):
        load_mask_pickle(path)


def test_masks_that_do_not_fit_are_reported(checkpoint, tmp_path, rng):
    prefix, values = checkpoint
    good = paper_masks(rng, values)
    cases = {
        "no mask for 'Winograd_W5b_2b/W'": {k: v for k, v in good.items() if k != "Winograd_W5b_2b/W"},
        "unknown mask 'Winograd_W3a_3a/W'": dict(good, **{"Winograd_W3a_3a/W": good["Winograd_W3a_2a/W"]}),
        "has shape (16, 64, 64), the kernel (16, 64, 128)": dict(
            good, **{"Winograd_W3a_2a/W": good["Winograd_W2a_2a/W"]}),
        "values other than 0 and 1": dict(good, **{"Winograd_W2a_2a/W": good["Winograd_W2a_2a/W"] * 0.5}),
    }
    for message, masks in cases.items():
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            convert_tensorpack_checkpoint(prefix, str(tmp_path / "x.weights.h5"), masks=masks)
    assert not (tmp_path / "x.weights.h5").exists()


def test_missing_and_unknown_names_are_listed_with_what_the_script_writes(tmp_path, rng):
    variables = paper_variables()
    # The names this converter used to ask for: refused, and the right names are listed.
    old_names = {"Winograd_W3a_3a/W": ("float32", (16, 64, 128)),
                 "res2a_bn1_pre/gamma": ("float32", (64,)), "conv1/W": variables["conv1/W"]}
    prefix = write_checkpoint(str(tmp_path / "old"), random_values(rng, old_names))
    with pytest.raises(ValueError) as error:
        convert_tensorpack_checkpoint(prefix, str(tmp_path / "x.weights.h5"))
    message = str(error.value)
    missing = message.split("missing ")[1].split(";")[0].split(", ")
    assert "Winograd_W2a_2a/W" in missing and "res2a_1_relu/bn/gamma" in missing and "conv1/W" not in missing
    assert len(missing) == 138
    assert "not part of ResNet-18-var: Winograd_W3a_3a/W, res2a_bn1_pre/gamma" in message
    model_weights = [n for n in variables if not n.endswith("/Momentum") and not n.startswith("EMA/")
                     and n not in ("global_step", "learning_rate")]
    assert len(model_weights) == 139
    for name in model_weights:
        assert f"{name} [{', '.join(map(str, variables[name][1]))}]" in message
    assert not (tmp_path / "x.weights.h5").exists()


def test_a_checkpoint_for_another_class_count_is_refused(checkpoint, tmp_path):
    prefix, _ = checkpoint
    with pytest.raises(ValueError, match=r"linear/W has shape \[512, 1000\], ResNet18 needs \[512, 10\]"):
        convert_tensorpack_checkpoint(prefix, str(tmp_path / "x.weights.h5"), classes=10)
    with pytest.raises(ValueError, match="'.weights.h5'"):
        convert_tensorpack_checkpoint(prefix, str(tmp_path / "x.h5"))
