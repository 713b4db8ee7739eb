"""The benchmark suite (benchmarks/run.py): its outputs, its FLOP count, its error rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import ROOT

SUITE = ROOT / "benchmarks" / "run.py"


def latest_run(output_dir: Path) -> Path:
    folders = sorted((output_dir / "benchmarks").glob("*_suite"))
    assert len(folders) == 1, folders
    return folders[0]


def test_tiny_suite_writes_table_csv_and_plot(run, tmp_path):
    done = run(SUITE, "--quick", "--tiny", "--recipe", "xor", "--backend", "tensorflow",
               "--output-dir", str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = latest_run(tmp_path)
    table = (folder / "results.md").read_text()
    for column in ("s/epoch", "samples/s", "speed-up (naive / chapter)", "time to target",
                   "peak RSS MiB", "GFLOP/s (% of peak)"):
        assert column in table
    assert "| xor | tensorflow | naive |" in table and "| xor | tensorflow | chapter |" in table
    assert "**xor: tensorflow**" in table  # the fastest backend is named
    assert table.splitlines()[0] in done.stdout  # the table is printed too

    with open(folder / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["recipe"], r["backend"], r["variant"], r["status"]) for r in rows] == [
        ("xor", "tensorflow", "naive", "ok"), ("xor", "tensorflow", "chapter", "ok")]
    for row in rows:
        assert float(row["s_per_epoch"]) > 0
        assert float(row["samples_per_s"]) == pytest.approx(4 / float(row["s_per_epoch"]))
        assert 100 < float(row["peak_rss_mib"]) < 16_000  # a whole Keras process, in MiB
        assert int(row["epochs_run"]) == 20
    naive, chapter = rows
    ratio = float(naive["s_per_epoch"]) / float(chapter["s_per_epoch"])
    assert float(chapter["speedup"]) == pytest.approx(ratio)
    assert (folder / "s_per_epoch.png").stat().st_size > 5_000
    record = json.loads((folder / "run.json").read_text())
    assert record["mode"] == "tiny" and record["errors"] == 0


def test_failing_measurement_becomes_an_error_row(run, tmp_path):
    # The injected failure happens before Keras loads, so this costs no training.
    done = run(SUITE, "--tiny", "--recipe", "xor", "--backend", "tensorflow", "--output-dir", str(tmp_path),
               env={"KERAS_TUTORIAL_BENCH_FAIL": "xor"}, timeout=120)
    assert done.returncode == 1  # the suite finished, and says that something failed
    assert "2 measurement(s) failed" in done.stderr
    folder = latest_run(tmp_path)
    with open(folder / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["error", "error"]
    assert all("RuntimeError: failure injected" in r["error"] for r in rows)
    assert "**error**" in (folder / "results.md").read_text()
    assert "no chapter measurement succeeded" in (folder / "results.md").read_text()
    assert (folder / "s_per_epoch.png").is_file()
    assert "RuntimeError" in (folder / "logs" / "xor_tensorflow_naive.log").read_text()


def test_missing_backend_is_skipped_with_its_reason():
    from benchmarks import run as suite

    args = suite.parse_args(["--quick", "--recipe", "churn"])
    specs, skipped = suite.plan(args, is_installed=lambda name: name == "tensorflow")
    assert [(s["backend"], s["variant"]) for s in specs] == [("tensorflow", "naive"),
                                                             ("tensorflow", "chapter")]
    assert {(r["backend"], r["status"]) for r in skipped} == {("jax", "skipped"), ("torch", "skipped")}
    assert all("is not installed" in r["note"] for r in skipped)


def test_conv_time_to_target_only_on_the_target_backend():
    from benchmarks import run as suite

    specs, _ = suite.plan(suite.parse_args(["--recipe", "conv_net"]), is_installed=lambda name: True)
    by_backend = {(s["backend"], s["variant"]): s for s in specs}
    tf = by_backend[("tensorflow", "chapter")]
    assert (tf["subset"], tf["target"], tf["epochs"]) == (None, 0.90, 12)  # full epochs until 0.90
    jax = by_backend[("jax", "naive")]
    assert jax["subset"] == 6000 and jax["target"] is None  # speed only, on a slice
    assert jax["slice_scoring"] is False  # validation and test images at full size


def test_short_epoch_is_extrapolated_step_by_step():
    from benchmarks.suite import worker

    # begun at 0 s, steps ending at 1, 2, 3 s, scoring until 5 s: the first step (1 s, with the
    # epoch's start-up) stays, 9 more steps of 1 s, the 2 s of scoring doubled for twice the images.
    assert worker.full_epoch_seconds((0.0, [1.0, 2.0, 3.0], 5.0), step=1.0, full_steps=10,
                                     scoring_scale=2.0) == 14.0
    assert worker.steady([9.0, 2.0, 4.0, 3.0]) == 3.0  # the first (compiling) epoch left out


def test_conv_net_flops_match_the_hand_count():
    from benchmarks.suite import flops
    from mnist import models

    # 28x28x1 -> conv 3x3x32 -> 26x26x32 -> pool 13x13 -> conv 3x3x64 -> 11x11x64 -> pool 5x5
    # -> conv 3x3x64 -> 3x3x64 -> flatten 576 -> dense 64 -> dense 10
    by_hand = (2 * 3 * 3 * 1 * 32 * 26 * 26       # 389,376
               + 2 * 3 * 3 * 32 * 64 * 11 * 11    # 4,460,544
               + 2 * 3 * 3 * 64 * 64 * 3 * 3      # 663,552
               + 2 * 576 * 64 + 2 * 64 * 10)      # 73,728 + 1,280
    assert by_hand == 5_588_480
    model = models.build_model("conv_net")
    assert flops.forward_flops(model) == by_hand
    assert [count for _, _, count in flops.layer_flops(model)] == [389_376, 4_460_544, 663_552, 73_728, 1_280]
    assert flops.TRAINING_FACTOR * by_hand == 16_765_440  # per training image


def test_peak_follows_the_instruction_set():
    from benchmarks.suite import flops

    info = {"Flags": "sse avx avx2 fma", "CPU max MHz": "3000.0000", "Model name": "test CPU"}
    peak = flops.machine_peak(lscpu=info, cpuinfo={}, cores=2)
    assert (peak["flops_per_cycle"], peak["gflops"]) == (32, 192.0)  # 2 x 3.0 GHz x 32
    peak = flops.machine_peak(lscpu={**info, "Flags": "avx2 fma avx512f"}, cpuinfo={}, cores=2)
    assert peak["gflops"] == 384.0 and not peak["caveat"]
    zen4 = flops.machine_peak(lscpu={**info, "Flags": "avx2 fma avx512f", "Vendor ID": "AuthenticAMD",
                                     "CPU family": "25"}, cpuinfo={}, cores=2)
    assert "half" in zen4["caveat"]


def test_summary_reports_misses_honestly():
    from benchmarks import run as suite

    spec = {"recipe": "churn", "target": 0.84, "epochs": 3, "repeats": 1, "subset": None}
    raw = {"recipe": "churn", "backend": "jax", "variant": "naive", "status": "ok", "spec": spec,
           "s_per_epoch": [0.5], "first_epoch_s": [2.0], "final_metric": [0.8], "epochs_run": [3],
           "time_to_target_s": [None], "target_epoch": [None], "train_samples": 7200,
           "peak_rss_mib": 900.0}
    row = suite.summarise(raw, {"gflops": 100.0})
    assert row["time_to_target_text"] == "not reached in 3 epochs"
    assert row["samples_per_s"] == pytest.approx(14_400)


def test_help_names_every_recipe(capsys):
    # in-process; tests/test_fast_start.py starts `benchmarks/run.py --help` in a real process
    from benchmarks import run as suite

    with pytest.raises(SystemExit) as stop:
        suite.parse_args(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for word in ("--quick", "--recipe", "--backend", "--repeats", "--output-dir", "best_conv_net"):
        assert word in out


def test_input_benchmark_times_three_feeds(run, tmp_path):
    result = run("benchmarks/mnist_input.py", "--dataset", "digits", "--images", "300", "--epochs", "2",
                 "--repeats", "1", "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    (table,) = (tmp_path / "benchmarks").glob("*_mnist_input_conv_net/results.md")
    lines = table.read_text().splitlines()
    rows = [line for line in lines if line.startswith("| ") and "s/epoch" not in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| naive port (arrays, one-hot)", "| tf.data pipeline", "| NumPy arrays, integer labels"]
    assert rows[0].rstrip(" |").endswith("1.00")  # the naive port against itself
