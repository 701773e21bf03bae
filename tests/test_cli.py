"""The swcnn command line."""

import json
import os
import subprocess
import sys

import pytest

from conftest import as_if_not_installed
from keras_swcnn import cli
from keras_swcnn.datasets import fashion_mnist


def run(*args):
    return subprocess.run([sys.executable, "-m", "keras_swcnn.cli", *args], capture_output=True,
                          text=True)


def test_help():
    result = run("--help")
    assert result.returncode == 0
    for command in ("demo", "train", "compare", "evaluate", "convert-tensorpack", "info"):
        assert command in result.stdout


def test_info(capsys):
    assert cli.main(["info", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"native_loaded"' in out and '"keras_backend"' in out


def test_errors_exit_non_zero():
    result = run("evaluate", "--weights", "/no/such/file.weights.h5")
    assert result.returncode == 2
    assert "Unknown weights" in result.stderr
    assert run("convert-tensorpack", "/no/ckpt", "out.weights.h5").returncode == 2
    assert run("no-such-command").returncode == 2


@pytest.mark.skipif(fashion_mnist.find_files() is None, reason="Fashion-MNIST not installed")
def test_demo_quick(tmp_path, capsys):
    plot = str(tmp_path / "d.png")
    assert cli.main(["demo", "--quick", "--width", "4", "--plot", plot]) == 0
    out = capsys.readouterr().out
    assert "final test accuracy" in out and "fewer multiplications" in out
    with open(plot, "rb") as f:
        assert f.read(4) == b"\x89PNG"


@pytest.mark.once_per_run
@pytest.mark.skipif(fashion_mnist.find_files() is None, reason="Fashion-MNIST not installed")
def test_train_writes_curves_and_resumes(tmp_path, capsys):
    arguments = ["train", "--width", "4", "--epochs", "1", "--train-samples", "128", "--test-samples",
                 "64", "--prune-densities", "", "--run-dir", str(tmp_path / "run"), "--plot", "",
                 "--curves", str(tmp_path / "curves.png"), "--output", str(tmp_path / "w.weights.h5")]
    assert cli.main(arguments) == 0
    out = capsys.readouterr().out
    assert "training curves written" in out and os.path.getsize(tmp_path / "w.weights.h5") > 0
    with open(tmp_path / "curves.png", "rb") as f:
        assert f.read(4) == b"\x89PNG"
    with open(tmp_path / "run" / "dense.csv") as f:
        assert "val_accuracy" in f.readline()  # tested after every epoch (--validate by default)
    assert cli.main(arguments) == 2  # the folder holds a run: resume or choose another
    assert "resume" in capsys.readouterr().err
    assert cli.main(arguments + ["--resume"]) == 0
    assert "done before" in capsys.readouterr().out
    assert cli.main(arguments + ["--resume", "--epochs", "2"]) == 2  # not the same run
    assert "other settings" in capsys.readouterr().err


def test_recipe_options_per_command():
    from keras_swcnn.applications import comparison, training

    parser = cli.build_parser()
    assert cli._recipe(parser.parse_args(["demo"]), training.DEMO) == training.DEMO
    assert cli._recipe(parser.parse_args(["train"]), training.FULL) == training.FULL
    assert parser.parse_args(["train"]).run_dir == "swcnn_train_run"
    changed = cli._recipe(parser.parse_args(["train", "--no-augment", "--epochs", "3", "--prune-densities",
                                             ""]), training.FULL)
    assert (changed.augment, changed.epochs, changed.prune_densities) == (False, 3, ())
    assert changed.optimizer == training.FULL.optimizer
    assert cli._recipe(parser.parse_args(["compare"]), comparison.RECIPE) == comparison.RECIPE
    with pytest.raises(SystemExit):
        parser.parse_args(["compare", "--prune-epochs", "2"])  # compare's stages: --stage-epochs


def test_benchmark_writes_table_plot_and_json(tmp_path, capsys):
    plot, report = str(tmp_path / "speedup.png"), str(tmp_path / "report.json")
    assert cli.main(["benchmark", "--batch", "2", "--shapes", "6x6x8x8", "--densities",
                     "0.5,0.1", "--repeats", "1", "--plot", plot, "--json", report]) == 0
    out = capsys.readouterr().out
    assert "| 6x6x8->8 | 2 | 0.10 |" in out
    assert "faster than spatial" in out
    assert os.path.getsize(plot) > 0
    with open(report) as f:
        data = json.load(f)
    assert [row["density"] for row in data["layers"]] == [0.5, 0.1]
    assert data["models"][0]["winograd_density"] < 0.2  # the shipped pruned weights


def test_benchmark_refuses_bad_shapes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["benchmark", "--shapes", "6x6x8"])
    assert "HxWxCxK" in capsys.readouterr().err


def test_backend_choice_rules(tmp_path):
    from keras_swcnn import _keras_backend as choice

    home = {"KERAS_HOME": str(tmp_path)}
    only_jax = {"jax"}.__contains__
    assert choice.choose(dict(home, KERAS_BACKEND="torch"), only_jax) == (None, None)
    assert choice.choose(home, only_jax) == ("jax", None)  # no keras.json: an installed backend
    assert choice.choose(home, {"torch"}.__contains__) == ("torch", None)
    assert choice.choose(home, {"tensorflow", "jax", "torch"}.__contains__) == ("tensorflow", None)
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch"}))
    assert choice.choose(home, {"torch", "jax"}.__contains__) == (None, None)  # the file chooses
    backend, note = choice.choose(home, only_jax)  # the file names one that is not installed
    assert backend == "jax" and "names 'torch', which is not installed" in note
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "numpy"}))
    assert choice.choose(home, only_jax) == (None, None)  # Keras's other backends: its own business
    with pytest.raises(ImportError, match=r"pip install 'keras-swcnn\[tensorflow\]'"):
        choice.choose({"KERAS_HOME": str(tmp_path / "none")}, lambda backend: False)


BLOCK_TENSORFLOW = as_if_not_installed("tensorflow") + """
from keras_swcnn.cli import main
sys.exit(main(["info", "--json"]))
"""


def test_swcnn_runs_on_an_install_without_tensorflow(tmp_path):
    pytest.importorskip("jax")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path)  # no keras.json: Keras alone would pick TensorFlow and fail
    run = subprocess.run([sys.executable, "-c", BLOCK_TENSORFLOW], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout[run.stdout.index("{"):])["keras_backend"] == "jax"
    # Keras has now written keras.json naming TensorFlow; the next run still works, and says why.
    run = subprocess.run([sys.executable, "-c", BLOCK_TENSORFLOW], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "using the jax backend" in run.stderr
