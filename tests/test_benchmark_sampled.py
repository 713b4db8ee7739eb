"""benchmarks/backends.py --sample-epochs: long full commands trained for a few epochs, the rest projected."""

from __future__ import annotations

import pytest

from benchmarks import backends as bench


def test_only_long_chapters_are_sampled_and_only_in_full_mode(tmp_path):
    mnist, xor = bench.chapter_by_key("mnist"), bench.chapter_by_key("xor")
    assert bench.sampled_epochs(mnist, False, 2) == 2
    assert bench.sampled_epochs(mnist, True, 2) is None  # --quick has its own epochs
    assert bench.sampled_epochs(mnist, False, None) is None
    assert bench.sampled_epochs(mnist, False, 60) is None  # nothing left to project
    assert bench.sampled_epochs(xor, False, 2) is None  # quick enough to run whole
    line = bench.command(mnist, "jax", False, tmp_path, sample=2)
    assert line[line.index("--epochs") + 1] == "2" and line.index("--epochs") > line.index("conv_net")
    assert "--epochs" not in bench.command(mnist, "jax", False, tmp_path)
    assert {c.name for c in bench.CHAPTERS if c.long} == {"2 churn", "4 mnist", "8 schedules"}


def _history(tmp_path, folder: str, text: str):
    run_dir = tmp_path / folder / "20260101-000000_x"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text("{}")
    (run_dir / "history.csv").write_text(text)


def test_epochs_left_are_projected_from_the_median_epoch(tmp_path):
    _history(tmp_path, "mnist", "epoch,loss,epoch_seconds\n1,2.0,9.0\n2,1.0,3.0\n3,0.9,5.0\n")
    mnist = bench.chapter_by_key("mnist")  # 60 epochs
    assert bench.epochs_left_seconds(mnist, tmp_path, 3) == pytest.approx(5.0 * 57)


def test_each_schedule_is_projected_on_its_own(tmp_path):
    _history(tmp_path, "mnist_schedules", "epoch,loss,epoch_seconds,run\n1,1,4.0,constant\n2,1,2.0,constant\n"
             "1,1,10.0,cosine\n2,1,6.0,cosine\n")
    schedules = bench.chapter_by_key("schedules")  # 20 epochs each
    assert bench.epochs_left_seconds(schedules, tmp_path, 2) == pytest.approx(3.0 * 18 + 8.0 * 18)
    assert bench.epochs_left_seconds(bench.chapter_by_key("churn"), tmp_path, 2) == 0.0  # no run folder


def test_a_sampled_cell_says_so_with_its_projection():
    text = bench.cell({"status": "works", "seconds": 80.0, "metric": 0.9, "sampled_epochs": 2,
                       "projected_seconds": 1500.0})
    assert text == "80.0 s (0.9), 2 epochs; all: ~25 min"
    assert bench.cell({"status": "works", "seconds": 9.0, "sampled_epochs": 2,
                       "projected_seconds": 61.4}) == "9.0 s, 2 epochs; all: ~61 s"


@pytest.mark.parametrize("argv", [["--sample-epochs", "0"], ["--sample-epochs", "2", "--quick"],
                                  ["--sample-epochs", "two"]])
def test_bad_sample_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        bench.parse_args(argv)
    assert stop.value.code == 2 and "error:" in capsys.readouterr().err
