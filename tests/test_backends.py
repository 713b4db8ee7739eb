"""Every chapter on every installed Keras backend, and proof that each one learned.

The backend is fixed when Keras is first imported, so each backend runs in a process of
its own: one per backend (not one per chapter), started once for the whole session by the
``matrix`` fixture, in which :mod:`tests.backend_matrix` runs every chapter briefly. The
backend this pytest process already uses runs here, in-process, while the others run in
their subprocesses; here it skips the chapters whose own tests already train them in this
process and apply the same check (``backend_matrix.CHECKED_BY_CHAPTER_TESTS``). Many small
tests then read the results.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import backend_matrix
from tests.backend_matrix import CASES, CHAPTERS, CHECKED_BY_CHAPTER_TESTS, SERVED_TOLERANCE
from utils.cli import BACKENDS, configured_backend

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = tuple(name for name in BACKENDS if importlib.util.find_spec(name) is not None)


def _here() -> str:
    """The backend of this process: the one Keras already runs on, else the one it would pick."""
    keras = sys.modules.get("keras")
    return keras.backend.backend() if keras is not None else configured_backend()


def _child_env(env: dict, backend: str) -> dict:
    """The child's environment. torch gets one intra-op thread: three processes share the cores
    here, and torch's spinning threads made its churn case cost 32 CPU-s instead of 2."""
    env = {**env, "KERAS_BACKEND": backend}
    if backend == "torch":
        env["OMP_NUM_THREADS"] = "1"
    return backend_matrix.jax_env(env) if backend == "jax" else env


@pytest.fixture(scope="session")
def matrix(tmp_path_factory) -> dict[str, dict]:
    """``{backend: {"backend": ..., "cases": {chapter: result}}}`` for every installed backend."""
    root = tmp_path_factory.mktemp("backend_matrix")
    here = _here()
    env = {**os.environ, "KERAS_TUTORIAL_OFFLINE": "1", "MPLBACKEND": "Agg",
           "KERAS_HOME": str(root / "keras_home")}
    children = {}
    for backend in INSTALLED:
        if backend == here:
            continue
        log = (root / f"{backend}.log").open("w")  # a file, not a pipe: a full pipe would stall the child
        children[backend] = (subprocess.Popen(
            [sys.executable, "-m", "tests.backend_matrix", "--backend", backend, "--output-dir",
             str(root / backend), "--json", str(root / f"{backend}.json")],
            cwd=ROOT, env=_child_env(env, backend), stdout=log, stderr=subprocess.STDOUT),
            root / f"{backend}.json")
        log.close()  # the child holds its own copy
    results = {}
    if here in INSTALLED:
        with pytest.MonkeyPatch.context() as patch:  # what the subprocesses get, here too
            for name in ("KERAS_TUTORIAL_OFFLINE", "MPLBACKEND", "KERAS_HOME"):
                patch.setenv(name, env[name])
            results[here] = backend_matrix.run_all(here, root / here, tuple(
                chapter for chapter in CHAPTERS if _runs_in_matrix(chapter, here)))
    for backend, (child, path) in children.items():
        try:
            child.wait(timeout=900)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        output = (root / f"{backend}.log").read_text(errors="replace")
        assert child.returncode == 0 and path.is_file(), f"{backend} matrix process failed:\n{output[-3000:]}"
        results[backend] = json.loads(path.read_text())
    return results


def _result(matrix, backend: str, chapter: str) -> dict:
    result = matrix[backend]["cases"][chapter]
    if result.get("skipped"):
        pytest.skip(f"{chapter}: {result['skipped']}")
    return result


def _runs_in_matrix(chapter: str, backend: str) -> bool:
    """False for a chapter that the matrix leaves, on this process's backend, to its own tests."""
    return backend != _here() or chapter not in CHECKED_BY_CHAPTER_TESTS


CHAPTER_BACKEND = [pytest.param(case, backend, id=f"{case.chapter}-{backend}")
                   for case in CASES for backend in INSTALLED if _runs_in_matrix(case.chapter, backend)]


@pytest.mark.parametrize("chapter", sorted(CHECKED_BY_CHAPTER_TESTS))
def test_chapters_left_to_their_own_tests_are_checked_there(chapter):
    """The test named for a chapter the matrix skips here exists and still reads the value
    the matrix would have checked."""
    target, value = CHECKED_BY_CHAPTER_TESTS[chapter]
    path, name = target.split("::")
    source = (ROOT / path).read_text()
    start = source.index(f"def {name}(")  # ValueError: the test was renamed or removed
    end = source.find("\ndef ", start + 1)
    assert value in source[start:end if end > 0 else None], f"{target} no longer checks {value!r}"


@pytest.mark.parametrize(("case", "backend"), CHAPTER_BACKEND)
def test_chapter_runs_and_learns_on(matrix, case, backend):
    assert matrix[backend]["backend"] == backend
    result = _result(matrix, backend, case.chapter)
    assert backend_matrix.failed_checks(case, result) == []
    if "backend_recorded" in result:
        assert result["backend_recorded"] == backend  # run.json says where it ran


@pytest.mark.parametrize("backend", INSTALLED)
def test_mnist_feeds_tf_data_only_to_tensorflow(matrix, backend):
    result = _result(matrix, backend, "mnist")
    # auto: tf.data on TensorFlow, NumPy arrays (faster there) on JAX and PyTorch
    assert result["input_pipeline"] == ("tf.data" if backend == "tensorflow" else "arrays")


@pytest.mark.parametrize("backend", [b for b in INSTALLED if _runs_in_matrix("save_load", b)])
def test_save_load_skips_only_what_its_backend_cannot_write_and_names_one_that_can(matrix, backend):
    skipped = _result(matrix, backend, "save_load")["formats_skipped"]
    assert skipped == [] if backend == "tensorflow" else len(skipped) <= 1
    assert all("--backend" in note or "not installed" in note for note in skipped), skipped


@pytest.mark.parametrize("backend", INSTALLED)
@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard is not installed (pip install -r requirements.txt)")
def test_tensorboard_logs_on(matrix, backend):
    # the MNIST case ran with --tensorboard: one non-empty event file for training, one for validation
    assert _result(matrix, backend, "mnist")["event_files"] == 2


def test_served_predictions_agree_across_backends(matrix):
    """One model, the same weights: every backend's service gives the same probabilities."""
    answers = {b: np.asarray(_result(matrix, b, "service")["fixed_probabilities"]) for b in INSTALLED}
    if len(answers) < 2:
        pytest.skip("only one backend is installed")
    first, *others = answers
    assert answers[first].shape == (40, 10)
    np.testing.assert_allclose(answers[first].sum(1), 1.0, atol=1e-5)
    assert answers[first].std() > 0.01  # the inputs really change the answers
    for other in others:
        np.testing.assert_allclose(answers[other], answers[first], atol=SERVED_TOLERANCE, err_msg=other)


def test_failed_checks_names_what_did_not_learn():
    xor = next(case for case in CASES if case.chapter == "xor")
    assert backend_matrix.failed_checks(xor, {"returncode": 0, "accuracy": 1.0}) == []
    (problem,) = backend_matrix.failed_checks(xor, {"returncode": 0, "accuracy": 0.75})
    assert "xor" in problem and "0.75" in problem
    forecast = next(case for case in CASES if case.chapter == "forecast")
    check = backend_matrix.failed_checks
    assert check(forecast, {"returncode": 0, "test_rmse": 2.0, "persistence_rmse": 3.0}) == []
    assert check(forecast, {"returncode": 0, "test_rmse": 3.0, "persistence_rmse": 2.0})
    assert check(forecast, {"returncode": 0, "test_rmse": 3.0})  # not measured: fails
    assert check(forecast, {"returncode": 2, "error": "error: no"})[0].endswith("error: no")


# --- flags around the backends, in a subprocess because they are about the process -------

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
