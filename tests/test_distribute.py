"""Data parallelism on CPUs split into logical devices, two JAX processes training
one model, and mixed precision (chapter 9).

Every training run is its own process: the device split and the multi-process
runtime are fixed before the backend computes anything.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from tests.backend_matrix import jax_env
from tests.conftest import ROOT, run_script

SMALL = ["-m", "conv_net", "--dataset", "digits", "--limit", "400", "--batch-size", "64", "--quiet"]


def _needs(name: str):
    return pytest.mark.skipif(importlib.util.find_spec(name) is None,
                              reason=f"{name} is not installed (pip install -r requirements-backends.txt)")


def _only_run(folder: Path) -> Path:
    (run_dir,) = [p for p in (folder / "mnist").iterdir() if (p / "run.json").is_file()]
    return run_dir


def _train(run, folder: Path, *flags: str) -> tuple[dict, pd.DataFrame]:
    # JAX: XLA compiles with less optimisation (tests/backend_matrix.py: FAST_XLA_FLAGS)
    env = jax_env({"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}) if "jax" in flags else None
    result = run("mnist/mnist.py", *SMALL, *flags, "--output-dir", str(folder), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = _only_run(folder)
    return json.loads((run_dir / "run.json").read_text()), pd.read_csv(run_dir / "history.csv")


def _train_here(monkeypatch, folder: Path, *flags: str) -> tuple[dict, pd.DataFrame]:
    """The same run as :func:`_train`, through the chapter's main(argv) in this process
    (TensorFlow, one device: nothing to fix before the backend starts)."""
    import keras

    from mnist import mnist as chapter
    from utils import distribute

    assert keras.backend.backend() == "tensorflow"
    monkeypatch.setattr(distribute, "_ACTIVE", distribute.Plan())  # main's plan ends with the test
    assert chapter.main([*SMALL, *flags, "--output-dir", str(folder)]) == 0
    run_dir = _only_run(folder)
    return json.loads((run_dir / "run.json").read_text()), pd.read_csv(run_dir / "history.csv")


def weights(model_file: Path) -> dict[str, np.ndarray]:
    """Every array a .keras file stores (layers and optimiser), read with h5py:
    no Keras and no backend needed to compare two saved models."""
    found = {}
    with zipfile.ZipFile(model_file) as archive:
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as store:
            store.visititems(lambda name, item: found.__setitem__(name, item[()])
                             if isinstance(item, h5py.Dataset) else None)
    return found


JAX_FLAGS = ["--backend", "jax", "--epochs", "3"]


@pytest.fixture(scope="module")
def jax_one_device(tmp_path_factory):
    """One JAX process on one device, fed by tf.data (the batches the mirrored and the
    two-process runs read): trained once, compared with both. (record, history, run folder)"""
    folder = tmp_path_factory.mktemp("jax_one_device")
    record, history = _train(run_script, folder, *JAX_FLAGS, "--input-pipeline", "tf.data")
    return record, history, _only_run(folder)


@pytest.mark.parametrize("backend, flags, tolerance", [
    # JAX: the same initial weights, batches and arithmetic, so the same
    # accuracy up to float rounding (measured: equal to 4 decimals).
    pytest.param("jax", ["--epochs", "3"], 0.05, marks=_needs("jax")),
    # TensorFlow: one step matches one device to 1e-7, but whole runs drift
    # apart, so the accuracies are compared within noise: 0.15 is about three
    # binomial standard errors of an accuracy near 0.85 on the 120 test images
    # (measured: 0.8333 mirrored, 0.8667 on one device).
    pytest.param("tensorflow", ["--epochs", "5", "--limit", "600", "--batch-size", "32"], 0.15,
                 marks=_needs("tensorflow")),
])
def test_mirrored_on_two_cpu_devices_trains_like_one_device(run, tmp_path, request, backend, flags,
                                                            tolerance):
    # --input-pipeline tf.data: the one-device run reads the same batches as the mirrored one.
    if ["--backend", backend, *flags] == JAX_FLAGS:
        one = request.getfixturevalue("jax_one_device")[0]
    else:  # one TensorFlow device: this process's own backend does, no new Python needed
        one, _ = _train_here(request.getfixturevalue("monkeypatch"), tmp_path / "one", "--backend", backend,
                             *flags, "--input-pipeline", "tf.data")
    two, two_history = _train(run, tmp_path / "two", "--backend", backend, *flags,
                              "--distribute", "mirrored", "--cpu-devices", "2")

    batch = one["args"]["batch_size"]
    assert one["distribution"]["strategy"] == "none"
    assert two["distribution"]["strategy"] == "mirrored"
    assert two["distribution"]["replicas"] == 2 and len(two["distribution"]["devices"]) == 2
    assert two["distribution"]["global_batch"] == batch
    assert two["distribution"]["per_replica_batch"] == batch // 2
    assert two["backend"] == backend
    assert two_history["loss"].iloc[-1] < two_history["loss"].iloc[0]  # it trains
    accuracy_one = one["metrics"]["test_accuracy"]
    accuracy_two = two["metrics"]["test_accuracy"]
    assert accuracy_two > 0.2  # better than guessing one of 10 classes
    assert abs(accuracy_two - accuracy_one) <= tolerance, (accuracy_one, accuracy_two)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@_needs("jax")
def test_two_jax_processes_train_one_model_together(tmp_path, jax_one_device):
    port = _free_port()
    command = [sys.executable, str(ROOT / "mnist" / "mnist.py"), *SMALL, *JAX_FLAGS,
               "--output-dir", str(tmp_path / "together"),
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    env = jax_env({**os.environ, "KERAS_TUTORIAL_OFFLINE": "1"})
    workers = [subprocess.Popen([*command, "--process-id", str(i)], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in (0, 1)]
    try:
        outputs = [worker.communicate(timeout=400) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]

    folders = sorted((tmp_path / "together" / "mnist").iterdir())
    assert [f.name.rsplit("_", 1)[1] for f in folders] == ["p0", "p1"]  # one folder per process
    records = [json.loads((f / "run.json").read_text()) for f in folders]
    for process_id, record in enumerate(records):
        assert record["distribution"]["num_processes"] == 2
        assert record["distribution"]["process_id"] == process_id
        assert record["distribution"]["replicas"] == 2
    first, second = (weights(f / "model.keras") for f in folders)
    assert first.keys() == second.keys() and len(first) >= 10
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)

    # Together they trained on whole batches of 64, as one process does: the
    # same weights as a one-process run, up to the order of float additions.
    # (Two processes that did not talk would each have seen half of each batch.)
    alone, _, alone_dir = jax_one_device  # the same batches as the two processes read
    assert alone["distribution"]["num_processes"] == 1
    single = weights(alone_dir / "model.keras")
    for name in first:
        if name.startswith("layers/"):
            np.testing.assert_allclose(first[name], single[name], rtol=1e-3, atol=1e-4, err_msg=name)


# torch's refusal of --distribute: tests/test_torch_fit.py (its torch child process)


BAD_FLAGS = [
    (["--num-processes", "2"], "needs --coordinator"),
    (["--num-processes", "2", "--coordinator", "127.0.0.1:1", "--process-id", "2"], "must be 0 to 1"),
    (["--distribute", "mirrored", "--cpu-devices", "2", "--batch-size", "63"], "does not split evenly"),
]


@pytest.fixture(scope="module")
def jax_flag_errors(tmp_path_factory) -> list[tuple[int, str]]:
    """Each BAD_FLAGS case through mnist.main(argv), as the script calls it, in one JAX child
    (one start of Python and JAX for all of them): [(exit code, stderr)] in order. A case
    that raised instead (a bug) crashes the child with its traceback."""
    out = tmp_path_factory.mktemp("bad_flags")
    cases = [[*SMALL, "--backend", "jax", *flags, "--output-dir", str(out)] for flags, _ in BAD_FLAGS]
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from mnist import mnist
        results = []
        for argv in json.loads(sys.argv[1]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    status = mnist.main(argv)
                except SystemExit as stop:
                    status = stop.code
            results.append([status, err.getvalue()])
        print(json.dumps(results))
    """)
    env = jax_env({**os.environ, "KERAS_TUTORIAL_OFFLINE": "1", "KERAS_BACKEND": "jax"})
    done = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [tuple(result) for result in json.loads(done.stdout.strip().splitlines()[-1])]


@_needs("jax")
@pytest.mark.parametrize("case", range(len(BAD_FLAGS)), ids=[m for _, m in BAD_FLAGS])
def test_bad_distribution_flags_are_one_line_errors(jax_flag_errors, case):
    status, stderr = jax_flag_errors[case]
    assert status == 2
    assert BAD_FLAGS[case][1] in stderr and "Traceback" not in stderr


def test_mixed_precision_is_ignored_on_a_cpu_with_a_note(tmp_path, capsys, monkeypatch):
    import keras

    from mnist import mnist as chapter
    from utils import distribute

    if distribute.has_accelerator(keras.backend.backend()):
        pytest.skip("a GPU is present: the policy is applied, not ignored")
    monkeypatch.setattr(distribute, "_ACTIVE", distribute.Plan())  # main's plan ends with this test
    code = chapter.main([*SMALL, "--epochs", "1", "--limit", "200", "--mixed-precision",
                         "--output-dir", str(tmp_path)])
    assert code == 0
    assert "--mixed-precision mixed_float16 ignored: no GPU found" in capsys.readouterr().out
    record = json.loads((_only_run(tmp_path) / "run.json").read_text())
    assert record["mixed_precision"] == "ignored (mixed_float16 asked, no GPU)"
    assert record["args"]["mixed_precision"] == "mixed_float16"


def test_softmax_output_stays_float32_under_mixed_precision():
    import keras

    from mnist.models import REGISTRY

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        for spec in REGISTRY.values():
            model = spec.build()
            assert any(layer.compute_dtype == "float16" for layer in model.layers), spec.name
            assert model.layers[-1].compute_dtype == "float32", spec.name
            symbolic = model(keras.Input(shape=model.input_shape[1:]))
            assert symbolic.dtype == "float32", spec.name
    finally:
        keras.config.set_dtype_policy(before)
