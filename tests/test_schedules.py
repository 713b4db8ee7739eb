"""Learning-rate schedules, EarlyStopping and the under-/over-fitting demo (mnist/schedules.py)."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from mnist import data as image_data
from mnist import schedules
from utils.errors import TutorialError

from .conftest import ROOT

RATE = 1e-3


def rates(name, steps_per_epoch, epochs, at):
    schedule = schedules.learning_rate(name, RATE, steps_per_epoch, epochs)
    return np.array([schedules.rate_at(schedule, s) for s in at])


def test_cosine_warms_up_linearly_then_falls_along_a_cosine():
    # 10 epochs of 10 updates: warm-up over the first 10 updates, cosine over the other 90.
    assert schedules.warmup_steps(100) == 10
    up = rates("cosine", 10, 10, range(11))
    assert up[0] == pytest.approx(RATE / 100)
    assert up[5] == pytest.approx((RATE / 100 + RATE) / 2)  # linear: halfway at half the warm-up
    assert up[10] == pytest.approx(RATE)
    assert np.all(np.diff(up) > 0)
    down = rates("cosine", 10, 10, range(10, 101))
    assert np.all(np.diff(down) < 0)
    assert down[45] == pytest.approx(RATE * (0.01 + 0.99 * 0.5), rel=1e-4)  # half-way down the cosine
    assert down[-1] == pytest.approx(RATE / 100)


def test_step_decay_drops_tenfold_at_each_boundary():
    # 8 epochs of 10 updates: drops after epoch 4 (update 40) and epoch 6 (update 60).
    r = rates("step", 10, 8, [0, 40, 41, 60, 61, 79])
    assert r == pytest.approx([RATE, RATE, RATE / 10, RATE / 10, RATE / 100, RATE / 100])


def test_exponential_decay_reaches_a_tenth_halfway_and_a_hundredth_at_the_end():
    r = rates("exponential", 10, 8, [0, 40, 80])
    assert r == pytest.approx([RATE, RATE / 10, RATE / 100], rel=1e-4)


@pytest.mark.parametrize("name", ["constant", "plateau", "early_stopping"])
def test_callback_runs_start_from_a_fixed_rate(name):
    assert schedules.learning_rate(name, RATE, 10, 8) == RATE


def test_unknown_schedule_is_a_tutorial_error_and_exit_code_2(capsys):
    with pytest.raises(TutorialError, match="unknown schedule 'warp'.*cosine"):
        schedules.learning_rate("warp", RATE, 10, 8)
    assert schedules.main(["--schedule", "cosine", "--schedule", "warp"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown schedule 'warp'") and err.count("\n") == 1


def test_bad_flag_value_exits_2():
    with pytest.raises(SystemExit) as exit_info:
        schedules.parse_args(["--epochs", "0"])
    assert exit_info.value.code == 2


@pytest.fixture(scope="module")
def unlearnable_validation():
    """Real training digits, but validation labels drawn at random: the more the model
    learns, the worse its validation loss gets, so progress stalls after the first epochs."""
    data = image_data.load_images("digits", limit=400)
    noise = np.random.default_rng(0).integers(0, 10, size=len(data.y_val))
    return dataclasses.replace(data, y_val=noise)


def quick_args(tmp_path, *extra):
    return schedules.parse_args(["--quiet", "--batch-size", "32", "--output-dir", str(tmp_path), *extra])


def test_early_stopping_stops_early_and_restores_the_best_weights(unlearnable_validation, tmp_path):
    data = unlearnable_validation
    args = quick_args(tmp_path, "--epochs", "30", "--patience", "2", "--monitor", "val_loss")
    run = schedules.train_schedule("early_stopping", data, args)
    history = run.history
    assert run.metrics["stopped_early"] and len(history) < 30
    assert run.metrics["epochs_run"] == len(history)
    assert run.metrics["best_epoch"] == len(history) - 2  # patience 2: two epochs past the best
    # The model now holds the best epoch's weights, not the last epoch's.
    val_loss, _ = run.model.evaluate(data.x_val.reshape(len(data.x_val), -1), data.y_val, verbose=0)
    assert val_loss == pytest.approx(history["val_loss"].min(), rel=1e-4)
    assert val_loss < history["val_loss"].iloc[-1] - 1e-3


def test_reduce_lr_on_plateau_divides_the_rate_by_five(unlearnable_validation, tmp_path):
    args = quick_args(tmp_path, "--epochs", "5")
    history = schedules.train_schedule("plateau", unlearnable_validation, args).history
    recorded = history["learning_rate"].to_numpy()
    assert recorded[0] == pytest.approx(RATE)
    assert recorded.min() == pytest.approx(RATE * schedules.PLATEAU_FACTOR, rel=1e-5)
    assert np.all(np.diff(recorded) <= 0)


def test_script_runs_end_to_end_from_its_folder(run, tmp_path):
    out = tmp_path / "out"
    result = run("schedules.py", "--demo", "all", "--dataset", "digits", "--limit", "400", "--epochs", "2",
                 "--schedule", "constant", "--schedule", "cosine", "--schedule", "early_stopping",
                 "--fit-train", "100", "--fit-epochs", "3", "--quiet", "--output-dir", str(out),
                 cwd=ROOT / "mnist")
    assert result.returncode == 0, result.stderr
    assert "schedule" in result.stdout and "test acc" in result.stdout and "over-fitting" in result.stdout
    (folder,) = (out / schedules.CHAPTER).iterdir()
    for name in ("val_accuracy.png", "val_loss.png", "learning_rate.png", "fit.png", "schedules.csv",
                 "fit.csv", "history.csv", "run.json", "report.html", "model.keras"):
        assert (folder / name).is_file(), name
    table = pd.read_csv(folder / "schedules.csv").set_index("schedule")
    assert list(table.index) == ["constant", "cosine", "early_stopping"]
    assert table.loc["constant", "final lr"] == pytest.approx(RATE)
    assert table.loc["cosine", "final lr"] == pytest.approx(RATE / 100, rel=1e-3)
    assert table["test acc"].between(0, 1).all() and (table["epochs run"] <= 2).all()
    assert table.loc["cosine", "test acc"] > 0.5  # far above chance (0.1), as the backend matrix asks
    history = pd.read_csv(folder / "history.csv")
    assert {"run", "epoch", "val_accuracy", "learning_rate"} <= set(history.columns)
    fit = pd.read_csv(folder / "fit.csv").set_index("case")
    assert fit.loc["over-fitting", "params"] > 100 * fit.loc["under-fitting", "params"]
    # Two numbers cannot hold what ten classes need; 669,706 parameters fit the training set better.
    assert fit.loc["over-fitting", "train acc"] > fit.loc["under-fitting", "train acc"]
    assert "<img" in (folder / "report.html").read_text()
