"""The XOR and MNIST smoke runs on every installed Keras backend (chapter 9).

Each run is a separate process, because the backend is fixed when Keras is
first imported; ``--backend`` must reach ``KERAS_BACKEND`` before that.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from utils.cli import BACKENDS


def _installed(name: str):
    return pytest.param(name, marks=pytest.mark.skipif(
        importlib.util.find_spec(name) is None,
        reason=f"{name} is not installed (pip install -r requirements-backends.txt)"))


ALL = [_installed(name) for name in BACKENDS]


def _run_json(output_dir: Path, chapter: str) -> dict:
    (record,) = (output_dir / chapter).glob("*/run.json")
    return json.loads(record.read_text())


@pytest.mark.parametrize("backend", ALL)
def test_xor_runs_on(backend, run, tmp_path):
    result = run("xor/xor.py", "--backend", backend, "--epochs", "20", "--quiet",
                 "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    record = _run_json(tmp_path, "xor")
    assert record["backend"] == backend
    assert record["args"]["backend"] == backend


@pytest.mark.parametrize("backend", ALL)
def test_mnist_runs_on(backend, run, tmp_path):
    result = run("mnist/mnist.py", "--backend", backend, "-m", "conv_net", "--dataset", "digits",
                 "--limit", "300", "--epochs", "1", "--quiet", "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    record = _run_json(tmp_path, "mnist")
    assert record["backend"] == backend
    assert record["distribution"]["strategy"] == "none"
    # auto: tf.data on TensorFlow, NumPy arrays (faster there) on JAX and PyTorch
    assert record["input_pipeline"] == ("tf.data" if backend == "tensorflow" else "arrays")
    assert 0.0 <= record["metrics"]["test_accuracy"] <= 1.0


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard is not installed (pip install -r requirements.txt)")
def test_tensorboard_logs_on(backend, run, tmp_path):
    result = run("mnist/mnist.py", "--backend", backend, "-m", "mlp_one_layer", "--tensorboard",
                 "--dataset", "digits", "--limit", "300", "--epochs", "2", "--quiet",
                 "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (logs,) = (tmp_path / "mnist").glob("*/tensorboard")
    for split in ("train", "validation"):
        events = list((logs / split).glob("events.out.tfevents.*"))
        assert events and events[0].stat().st_size > 0, split


def test_tensorboard_without_its_package_is_one_line_and_exit_2(run, tmp_path):
    # Hide the package from the child process: a None entry in sys.modules
    # makes both importlib.util.find_spec and `import tensorboard` fail.
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "sitecustomize.py").write_text(
        "import sys\nsys.modules['tensorboard'] = None\n")
    result = run("mnist/mnist.py", "--tensorboard", "--dataset", "digits", "--limit", "300",
                 "--epochs", "1", "--output-dir", str(tmp_path / "out"),
                 env={"PYTHONPATH": str(tmp_path / "hide")})
    assert result.returncode == 2, result.stderr
    assert "pip install tensorboard" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "mnist").exists()  # stopped before any run folder


def test_arrays_input_refuses_augmentation_in_one_line(run, tmp_path):
    result = run("mnist/mnist.py", "--input-pipeline", "arrays", "--augment", "flip", "--dataset",
                 "digits", "--limit", "300", "--epochs", "1", "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert "leave out --input-pipeline arrays" in result.stderr
    assert "Traceback" not in result.stderr
