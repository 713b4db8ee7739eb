import datetime as dt
import json
from types import SimpleNamespace

import pandas as pd

from utils import runs


def test_run_dirs_started_in_the_same_second_do_not_collide(tmp_path):
    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    first = runs.new_run_dir(tmp_path, "xor", "xor_8-4", now)
    second = runs.new_run_dir(tmp_path, "xor", "xor_8-4", now)
    assert first.name == "20260102-030405_xor_8-4"
    assert second.name == "20260102-030405_xor_8-4_1"
    assert first.is_dir() and second.is_dir()


def test_model_names_are_made_safe_for_folders(tmp_path):
    folder = runs.new_run_dir(tmp_path, "mnist", "conv net/v2")
    assert folder.parent == tmp_path / "mnist"
    assert "/" not in folder.name and " " not in folder.name


def test_history_frame_numbers_epochs_from_one_with_scale():
    frame = runs.history_frame({"loss": [3, 2, 1]}, epoch_scale=10)
    assert frame["epoch"].tolist() == [10, 20, 30]
    assert frame["loss"].tolist() == [3.0, 2.0, 1.0]


def test_finish_writes_run_json_and_history(tmp_path):
    args = SimpleNamespace(output_dir=tmp_path, seed=3, epochs=2)
    run = runs.Run("demo", "tiny", args, argv=["--seed", "3"])
    history = pd.DataFrame({"epoch": [1, 2], "loss": [0.5, 0.25]})
    result = run.finish(history=history, metrics={"accuracy": 1.0}, dataset="generated")
    record = json.loads((result.run_dir / "run.json").read_text())
    for key in ("command", "seed", "backend", "device", "versions", "wall_seconds", "metrics"):
        assert key in record
    assert record["seed"] == 3
    assert record["command"].endswith("--seed 3")
    assert record["dataset"] == "generated"
    assert record["metrics"] == {"accuracy": 1.0}
    assert "keras" in record["versions"] and "python" in record["versions"]
    assert pd.read_csv(result.run_dir / "history.csv")["loss"].tolist() == [0.5, 0.25]
