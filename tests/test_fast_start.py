"""Every script answers ``--help`` (and a bad flag) before it imports Keras.

Each case starts a real process: the behaviour under test is the process's
start-up (what it imports, how fast it answers, its exit code).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from utils import ROOT

# (how to start it, module name): scripts run by path, the utils tools with -m.
SCRIPTS = [
    ("xor/xor.py", "xor.xor"),
    ("mlp/mlp.py", "mlp.mlp"),
    ("mlp/model_api.py", "mlp.model_api"),
    ("mnist/mnist.py", "mnist.mnist"),
    ("mnist/schedules.py", "mnist.schedules"),
    ("mnist/tune.py", "mnist.tune"),
    ("cnn/shapes.py", "cnn.shapes"),
    ("cnn/classify.py", "cnn.classify"),
    ("cnn/transfer.py", "cnn.transfer"),
    ("cnn/filters.py", "cnn.filters"),
    ("rnn/forecast.py", "rnn.forecast"),
    ("rnn/compare_cells.py", "rnn.compare_cells"),
    ("serving/save_load.py", "serving.save_load"),
    ("serving/app.py", "serving.app"),
    ("serving/samples.py", "serving.samples"),
    ("-m utils.inspect", "utils.inspect"),
    ("-m utils.diagram", "utils.diagram"),
    ("-m utils.compare", "utils.compare"),
    ("-m utils.datasets", "utils.datasets"),
    ("benchmarks/xor.py", "benchmarks.xor"),
    ("benchmarks/mnist.py", "benchmarks.mnist"),
    ("benchmarks/mnist_input.py", "benchmarks.mnist_input"),
    ("benchmarks/churn.py", "benchmarks.churn"),
    ("benchmarks/rnn.py", "benchmarks.rnn"),
    ("benchmarks/run.py", "benchmarks.run"),
    ("benchmarks/serving_load.py", "benchmarks.serving_load"),
    ("benchmarks/help_times.py", "benchmarks.help_times"),
]
HEAVY = ("keras", "tensorflow", "jax", "torch")
HELP_SECONDS = 5.0  # loose: the test machine is often busy; benchmarks/help_times.py measures

# Runs the script as __main__ with --help, catching the parsers it builds; then
# imports it as a module and parses an empty command line. Prints one JSON line.
PROBE = r"""
import argparse, importlib, json, runpy, sys
target, module = sys.argv[1], sys.argv[2]
sys.path.insert(0, ".")
parsers = []
original = argparse.ArgumentParser.parse_known_args
def recording(self, *args, **kwargs):
    parsers.append(self)
    return original(self, *args, **kwargs)
argparse.ArgumentParser.parse_known_args = recording
sys.argv = [target, "--help"]
code = None
try:
    if target.startswith("-m "):
        runpy.run_module(target[3:], run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(target, run_name="__main__")
except SystemExit as exit:
    code = exit.code
heavy_after_help = [m for m in HEAVY if m in sys.modules]
undocumented = []
for parser in parsers:
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction,
                               argparse._StoreFalseAction, argparse._VersionAction)):
            continue
        if action.default in (None, argparse.SUPPRESS) or action.required:
            continue
        if not action.help or "(default:" not in formatter._expand_help(action):
            undocumented.append(action.option_strings[-1])
imported = importlib.import_module(module)
if hasattr(imported, "parse_args"):
    try:
        imported.parse_args([])
    except SystemExit:
        pass
print(json.dumps({"code": code, "heavy_after_help": heavy_after_help, "undocumented": undocumented,
                  "heavy_after_parse": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def _command(target: str) -> list[str]:
    return [sys.executable, *target.split()]


@pytest.mark.parametrize("target,module", SCRIPTS, ids=[m for _, m in SCRIPTS])
def test_help_answers_before_keras_is_imported(target, module):
    start = time.perf_counter()
    done = subprocess.run([*_command(target), "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "Traceback" not in done.stderr
    assert seconds < HELP_SECONDS, f"--help took {seconds:.1f} s"

    probe = subprocess.run([sys.executable, "-c", PROBE, target, module], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert report["code"] in (0, None)
    assert report["heavy_after_help"] == [], "imported before --help answered"
    assert report["heavy_after_parse"] == [], "imported by the module or its argument parsing"
    assert report["undocumented"] == [], "help lines without (default: ...)"


def test_scripts_run_from_their_own_folder():
    done = subprocess.run([sys.executable, "xor.py", "--help"], cwd=ROOT / "xor", capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr


def test_bad_flag_answers_fast_with_one_line():
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "mnist/mnist.py", "--epochs", "zero"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert time.perf_counter() - start < HELP_SECONDS
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--epochs" in lines[0], done.stderr


def test_channels_first_keras_json_still_gets_channels_last(tmp_path):
    """The chapters' images are (height, width, channels): a keras.json asking
    for channels_first is overridden for the process, silently."""
    (tmp_path / "keras.json").write_text('{"image_data_format": "channels_first", "backend": "jax"}')
    env = {**__import__("os").environ, "KERAS_HOME": str(tmp_path), "KERAS_BACKEND": "jax"}
    code = "from utils.quiet import import_keras; print(import_keras().config.image_data_format())"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "channels_last"


def test_the_timing_benchmark_times_every_script():
    from benchmarks import help_times

    assert {target for target, _ in SCRIPTS} - {"benchmarks/help_times.py"} == set(help_times.SCRIPTS)
