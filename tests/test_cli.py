"""The swcnn command line."""

import json
import os
import subprocess
import sys

import pytest

from keras_swcnn import cli
from keras_swcnn.datasets import fashion_mnist


def run(*args):
    return subprocess.run([sys.executable, "-m", "keras_swcnn.cli", *args], capture_output=True,
                          text=True)


def test_help():
    result = run("--help")
    assert result.returncode == 0
    for command in ("demo", "train", "evaluate", "convert-tensorpack", "info"):
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
