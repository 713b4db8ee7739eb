"""utils.compare: several run folders, one figure and one table."""

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from utils import compare, runs
from utils.errors import TutorialError

from .conftest import exit_code

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(parent, name, *, model="conv_net", chapter="mnist", learning_rate=0.001,
              val_accuracy=(0.5, 0.8, 0.7), val_loss=(1.0, 0.6, 0.65), started="2026-01-01T00:00:00"):
    """A run folder written by hand, as utils.runs.Run.finish lays it out."""
    folder = parent / chapter / name
    folder.mkdir(parents=True)
    epochs = len(val_accuracy)
    pd.DataFrame({"epoch": range(1, epochs + 1), "accuracy": val_accuracy, "loss": val_loss,
                  "val_accuracy": val_accuracy, "val_loss": val_loss,
                  "epoch_seconds": [2.0] * epochs}).to_csv(folder / "history.csv", index=False)
    record = {"chapter": chapter, "model": model, "started_at": started, "wall_seconds": 12.5,
              "dataset": "digits", "args": {"epochs": epochs, "batch_size": 64,
                                            "learning_rate": learning_rate, "output_dir": str(parent)},
              "metrics": {"test_accuracy": max(val_accuracy) - 0.01}}
    (folder / "run.json").write_text(json.dumps(record))
    return folder


@pytest.fixture
def two_runs(tmp_path):
    runs_root = tmp_path / "outputs"
    first = write_run(runs_root, "20260101-000000_conv_net", learning_rate=0.001)
    second = write_run(runs_root, "20260101-000100_le_net", model="le_net", learning_rate=0.01,
                       val_accuracy=(0.6, 0.7, 0.9), val_loss=(0.9, 0.8, 0.3),
                       started="2026-01-01T00:01:00")
    return runs_root, first, second


def test_two_runs_give_a_figure_a_table_and_a_report(two_runs):
    root, first, second = two_runs
    result = compare.compare([str(first), str(second)], output_dir=root)
    assert result.run_dir.parent == root / "compare" and result.run_dir.name.endswith("_compare")
    assert result.metrics == ["val_accuracy", "val_loss"]
    assert (result.run_dir / "compare.png").read_bytes()[:8] == PNG
    rows = {row["model"]: row for row in result.rows}
    assert set(rows) == {"conv_net", "le_net"}
    conv = rows["conv_net"]
    assert conv["final val_accuracy"] == pytest.approx(0.7)
    assert conv["best val_accuracy"] == pytest.approx(0.8) and conv["best val_accuracy epoch"] == 2
    assert conv["best val_loss"] == pytest.approx(0.6)  # lower is better for a loss
    assert conv["epochs"] == 3 and conv["wall s"] == 12.5 and conv["s/epoch"] == 2.0
    assert conv["test_accuracy"] == pytest.approx(0.79)
    # only the hyper-parameter that differs gets a column; the shared ones are listed once
    assert conv["--learning-rate"] == 0.001 and rows["le_net"]["--learning-rate"] == 0.01
    assert "--batch-size" not in conv and "--output-dir" not in conv
    table = pd.read_csv(result.run_dir / "compare.csv")
    assert table["run"].tolist() == [first.name, second.name]
    assert first.name in (result.run_dir / "compare.md").read_text()
    page = (result.run_dir / "report.html").read_text()
    assert "data:image/png;base64," in page and "--batch-size" in page
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["runs"] == [str(first), str(second)]


def test_missing_and_malformed_folders_are_named_and_skipped(two_runs, capsys):
    root, first, second = two_runs
    broken_json = write_run(root, "20260101-000200_broken")
    (broken_json / "run.json").write_text("{not json")
    empty_history = write_run(root, "20260101-000300_empty")
    (empty_history / "history.csv").write_text("")
    result = compare.compare([str(first), str(root / "gone"), str(broken_json), str(empty_history),
                              str(second)], output_dir=root)
    assert [row["run"] for row in result.rows] == [first.name, second.name]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3
    assert f"warning: {root / 'gone'}: no such folder" in err
    assert any(str(broken_json) in line and "not valid JSON" in line for line in err)
    assert any(str(empty_history) in line and "history.csv is empty" in line for line in err)


def _damage(folder, case):
    history = folder / "history.csv"
    record = json.loads((folder / "run.json").read_text())
    if case == "args not an object":
        record["args"] = "lr=0.1"
    elif case == "metrics a list":
        record["metrics"] = [0.5]
    elif case == "model a number":
        record["model"] = 7
    elif case == "metric NaN":
        record["metrics"]["test_accuracy"] = float("nan")
    elif case == "text in a column":
        history.write_text(history.read_text().replace("0.8,", "high,", 1))
    elif case == "NaN in history":
        history.write_text(history.read_text().replace("0.6,", "nan,", 1))
    elif case == "inf in history":
        history.write_text(history.read_text().replace("0.6,", "inf,", 1))
    elif case == "duplicate epoch":
        history.write_text(history.read_text().replace("\n3,", "\n2,"))
    (folder / "run.json").write_text(json.dumps(record))


@pytest.mark.parametrize("case, message", [
    ("args not an object", "'args' should be an object"),
    ("metrics a list", "'metrics' should be an object"),
    ("model a number", "'model' should be text"),
    ("metric NaN", "metric 'test_accuracy' as nan"),
    ("text in a column", "column 'accuracy' holds 'high' on line 3"),
    ("NaN in history", "holds nan in column 'loss' on line 3"),
    ("inf in history", "holds inf in column 'loss' on line 3"),
    ("duplicate epoch", "epoch 2 appears twice"),
])
def test_a_damaged_run_is_named_in_one_warning_and_the_rest_compared(two_runs, capsys, case, message):
    root, first, second = two_runs
    damaged = write_run(root, "20260101-000400_damaged")
    _damage(damaged, case)
    result = compare.compare([str(first), str(damaged), str(second)], output_dir=root)
    assert [row["run"] for row in result.rows] == [first.name, second.name]
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"warning: {damaged}: ") and message in line, line
    # --latest finds it too, and says why it is left out
    result = compare.compare([], latest=5, chapter="mnist", output_dir=root)
    assert len(result.rows) == 2
    assert any(str(damaged) in w for w in result.warnings)


def test_a_run_written_by_utils_runs_can_be_compared(tmp_path, two_runs):
    root, first, _ = two_runs
    args = SimpleNamespace(output_dir=root, seed=0, epochs=2, batch_size=8)
    history = runs.history_frame({"accuracy": [0.25, 0.75], "loss": [2.0, 1.0]})
    real = runs.Run("xor", "xor_8-4", args, argv=[]).finish(history=history, metrics={"accuracy": 0.75})
    result = compare.compare([str(first), str(real.run_dir)], metrics=["accuracy", "loss"],
                             output_dir=root)
    xor = next(row for row in result.rows if row["model"] == "xor_8-4")
    assert xor["final accuracy"] == 0.75 and xor["best loss"] == 1.0 and xor["epochs"] == 2


def test_quoted_globs_and_latest_pick_the_runs(two_runs, capsys):
    root, first, second = two_runs
    third = write_run(root, "20260101-000500_conv_net", started="2026-01-01T00:05:00")
    assert compare.main([str(root / "mnist" / "*"), "--output-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert all(folder.name in out for folder in (first, second, third))
    assert "compared 3 runs" in out

    result = compare.compare([], latest=2, output_dir=root)
    assert [row["run"] for row in result.rows] == [second.name, third.name]
    result = compare.compare([], latest=5, model="conv_net", chapter="mnist", output_dir=root)
    assert [row["run"] for row in result.rows] == [first.name, third.name]
    # runs with the same model are told apart by their folder names in the figure
    assert [r.label for r in compare.collect([], 2, "mnist", "conv_net", root)[0]] == [first.name,
                                                                                        third.name]


def test_no_usable_run_or_unknown_metric_is_an_error(two_runs, capsys):
    root, first, _ = two_runs
    with pytest.raises(TutorialError, match="no usable run"):
        compare.compare([str(root / "gone")], output_dir=root)
    with pytest.raises(TutorialError, match="no run has the metric 'f1'.*val_accuracy"):
        compare.compare([str(first)], metrics=["f1"], output_dir=root)
    with pytest.raises(TutorialError, match="nothing to compare"):
        compare.compare([], output_dir=root)
    chapter_folder = compare.collect([str(root / "mnist")], None, None, None, root)[1]
    assert "give" in chapter_folder[0] and "/* to compare them" in chapter_folder[0]


def test_command_exit_codes(run, two_runs, capsys):
    root, first, second = two_runs
    ok = run("-m", "utils.compare", str(first), str(second), "--metric", "val_loss",
             "--output-dir", str(root))
    assert ok.returncode == 0, ok.stderr
    assert first.name in ok.stdout and second.name in ok.stdout and "final val_loss" in ok.stdout
    # the failure in-process: the success above already ran as a learner types it
    assert exit_code(compare.main, [str(root / "gone"), "--output-dir", str(root)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"warning: {root / 'gone'}: no such folder",
                                       "error: no usable run to compare: each folder needs run.json "
                                       "and a history.csv with at least one epoch (see the warnings "
                                       "above)"]
