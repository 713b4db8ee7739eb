"""Fixtures every test module shares: data locations, isolated output, scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

# One compute thread per process, in the test workers and in every script they start
# (the children inherit this environment). The suite runs more processes than there are
# cores, and TensorFlow's and OpenMP's thread pools, each as wide as the machine, then
# mostly wait on one another: with these limits the whole suite took 4 min 55 s instead of
# 5 min 28 s and 568 CPU-s instead of 614 on an idle 2-core Intel Xeon. Set before any
# test module imports TensorFlow; a value already in the environment wins.
for _variable in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core (at most 4, pyproject.toml's --maxprocesses). With one
    compute thread per process (above), a third worker on 2 cores only added contention:
    4 min 43 s and 521 CPU-s with two workers against 5 min 18 s and 613 CPU-s with three,
    for the whole suite on an idle 2-core Intel Xeon."""
    return os.cpu_count() or 1


@pytest.fixture(autouse=True)
def _offline_and_isolated(tmp_path, monkeypatch):
    """No test downloads, and no test reads a learner's real Keras cache."""
    monkeypatch.setenv("KERAS_TUTORIAL_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (the churn CSV, cat.jpg, dog.jpg), or the folder in
    KERAS_TUTORIAL_DATA when CI points it elsewhere."""
    folder = Path(os.environ.get("KERAS_TUTORIAL_DATA") or SHARED_DATA)
    if not folder.is_dir():
        pytest.skip(f"{folder} is missing: it holds the data files these tests read")
    return folder


def run_script(script: str | Path, *args: str, cwd: Path = ROOT, env: dict | None = None,
               timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a chapter script as a learner would, capturing its output.

    ``script`` may also be ``"-m"`` followed by a module name in ``args``."""
    full_env = {**os.environ, "KERAS_TUTORIAL_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def run():
    return run_script


def exit_code(main, argv: list[str]) -> int:
    """What a chapter's ``main(argv)`` gives the shell, called in-process (no new Python
    and no second TensorFlow): its return value, or the code it exits with."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code
