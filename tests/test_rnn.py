"""The RNN chapter: models, windows and splits, baselines, bad input, and both scripts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rnn import compare_cells, data, forecast, models
from utils.cli import configured_backend

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


# ------------------------------------------------------------------------------- models


@pytest.mark.parametrize("name", models.MODELS)
@pytest.mark.parametrize("units", [(32,), (16, 8)])
def test_build_model_params_and_shapes(name, units):
    model = models.build_model(name, (20, 1), units)
    assert model.count_params() == models.expected_params(name, (20, 1), units)
    assert model.predict(np.zeros((3, 20, 1), "float32"), verbose=0).shape == (3, 1)


def test_param_formulas_by_hand():
    # LSTM: 4 blocks x 32 units x (1 input + 32 recurrent + 1 bias) + Dense(32 + 1)
    assert models.build_model("lstm", (104, 1)).count_params() == 4 * 32 * 34 + 33 == 4385
    # GRU keeps two bias vectors per block (reset_after=True)
    assert models.build_model("gru", (104, 1)).count_params() == 3 * 32 * 35 + 33
    assert models.build_model("simple_rnn", (104, 1)).count_params() == 32 * 34 + 33
    assert models.build_model("linear", (104, 1)).count_params() == 105
    # Stacked: the second LSTM reads 16 features from the first.
    stacked = models.build_model("lstm", (10, 1), (16, 8))
    assert stacked.count_params() == 4 * 16 * 18 + 4 * 8 * 25 + 9


# ------------------------------------------------------------------------------ windows


def test_windows_align_inputs_targets_and_times():
    values = np.arange(100.0) ** 2  # every change is different: 2t + 1
    w = data.make_windows(values, window=5, horizon=3, val_fraction=0.2, test_fraction=0.2)
    x, y = w.arrays("test")
    assert x.shape == (w.count("test"), 5, 1) and y.shape == (w.count("test"),)
    t = w.last_time("test")[0]
    # Inputs are the scaled changes leading up to time t, the last one into t itself.
    expected = w.input_scaler.transform(np.diff(values)[t - 5:t])
    np.testing.assert_allclose(x[0, :, 0], expected, rtol=1e-5)
    # The target is the scaled change over the horizon; to_units turns it back into a level.
    np.testing.assert_allclose(w.to_units("test", y), values[w.target_time("test")], rtol=1e-5)
    assert w.count("train") + w.count("val") + w.count("test") == 100 - 5 - 3


def test_splits_are_chronological_and_scaled_on_train_only():
    values = np.concatenate([np.sin(np.arange(250) / 3), 1000 + np.arange(100) * 50.0])
    w = data.make_windows(values, window=10, horizon=2, val_fraction=0.15, test_fraction=0.15)
    train, val, test = (w.target_time(s) for s in ("train", "val", "test"))
    assert train.max() < w.train_end <= val.min() and val.max() < w.val_end <= test.min()
    assert train.max() + 1 == val.min() and val.max() + 1 == test.min()  # no gap, no overlap
    assert test.max() == len(values) - 1
    # The jump of +1000 and the steep slope come after the training part (245 values):
    # a scaler that saw them would have a huge mean/spread.
    changes = np.diff(values)[:w.train_end - 1]
    assert w.input_scaler.mean == pytest.approx(changes.mean())
    assert w.input_scaler.std == pytest.approx(changes.std())
    assert w.input_scaler.std < 1
    x, _ = w.arrays("train")
    assert np.abs(x).max() < 5  # training inputs look standardised


def test_baselines():
    values = np.arange(300.0)
    w = data.make_windows(values, window=8, horizon=3)
    np.testing.assert_array_equal(models.persistence(w, "test", 12), values[w.last_time("test")])
    np.testing.assert_array_equal(models.seasonal_naive(w, "test", 12), w.target_time("test") - 12.0)
    long = data.make_windows(values, window=8, horizon=20)  # horizon beyond one cycle: two cycles back
    np.testing.assert_array_equal(models.seasonal_naive(long, "test", 12), long.target_time("test") - 24.0)
    assert models.errors([1, 2, 3], [2, 2, 5]) == pytest.approx({"rmse": np.sqrt(5 / 3), "mae": 1.0})


def test_too_short_series_is_a_named_error():
    with pytest.raises(data.SeriesError, match="fewer than window"):
        data.make_windows(np.arange(10.0), window=8, horizon=3)
    with pytest.raises(data.SeriesError, match="too short"):
        data.make_windows(np.arange(15.0), window=8, horizon=3)


# ---------------------------------------------------------------------------------- CSV


def test_csv_reading_gaps_order_and_season(tmp_path):
    path = tmp_path / "meter.csv"
    times = pd.date_range("2024-01-01", periods=6, freq="h")
    rows = ["time,kwh"] + [f"{t},{v}" for t, v in zip(times[::-1], ["6", "5", "", "3", "2", "1"])]
    path.write_text("\n".join(rows) + "\n")
    series, filled = data.read_csv_series(path, "kwh", "time")
    assert filled == 1 and list(series) == [1, 2, 3, 4, 5, 6]  # sorted by time, gap interpolated
    assert data.infer_season(series.index) == 24
    assert data.infer_season(pd.date_range("2000-01-01", periods=10, freq="W-SAT")) == 52
    assert data.infer_season(pd.RangeIndex(10)) is None


def test_packaged_co2_series():
    series = data.load_packaged("co2")
    assert len(series.values) == 2284 and series.filled == 59 and not np.isnan(series.values).any()
    assert series.season == 52 and series.horizon == 4


# ----------------------------------------------------------------- bad input -> exit 2


def write_csv(tmp_path, name, text):
    path = tmp_path / f"{name}.csv"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case, expected", [
    ("missing_column", "no column 'kwh'"),
    ("non_numeric", "non-numeric value(s), the first 'n/a' on data row 2"),
    ("too_short", "fewer than window + horizon"),
    ("window_0", "--window must be at least 1"),
    ("bad_flag", "invalid choice"),
    ("constant", "holds the same value (5) in all 28 rows"),
    ("folder", "is a folder"),
    ("inf", "data row 3 holds 'inf', which is infinite"),
    ("1e400", "data row 2 holds '1e400', which is infinite"),  # too large for float64: reads as inf
    ("1e300", "data row 2 holds '1e300', which is too large"),
    ("few_rows", "the series has 10 values, fewer than window + horizon + 1 = 16"),  # default window 14
])
def test_bad_input_gives_one_line_and_exit_2(case, expected, tmp_path, capsys):
    good = "day,kwh\n" + "".join(f"2024-01-{d:02d},{d}\n" for d in range(1, 29))
    argv = {
        "missing_column": ["--csv", write_csv(tmp_path, "missing", "day,power\n1,2\n"), "--column", "kwh"],
        "non_numeric": ["--csv", write_csv(tmp_path, "text", "kwh\n1\nn/a\n3\n"), "--column", "kwh"],
        "too_short": ["--csv", write_csv(tmp_path, "short", good), "--column", "kwh", "--season", "7",
                      "--window", "30"],
        "window_0": ["--window", "0"],
        "bad_flag": ["--cell", "transformer"],
        "constant": ["--csv", write_csv(tmp_path, "flat", "kwh\n" + "5\n" * 28), "--column", "kwh",
                     "--season", "7"],
        "folder": ["--csv", str(tmp_path), "--column", "kwh"],
        "inf": ["--csv", write_csv(tmp_path, "inf", "kwh\n1\n2\ninf\n4\n"), "--column", "kwh"],
        "1e400": ["--csv", write_csv(tmp_path, "big", "kwh\n1\n1e400\n3\n"), "--column", "kwh"],
        "1e300": ["--csv", write_csv(tmp_path, "huge", "kwh\n1\n1e300\n3\n"), "--column", "kwh"],
        "few_rows": ["--csv", write_csv(tmp_path, "few", "kwh\n" + "".join(f"{d}\n" for d in range(10))),
                     "--column", "kwh", "--season", "7"],
    }[case]
    assert forecast.main([*argv, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err
    assert not (tmp_path / "out").exists()  # no run folder for a run that never started


def test_bad_input_exit_code_from_the_command_line(run, tmp_path):
    result = run("rnn/forecast.py", "--window", "0", "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: --window must be at least 1 step (got 0)"
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- smoke runs


def test_forecast_script_end_to_end(run, tmp_path):
    result = run("rnn/forecast.py", "--epochs", "2", "--window", "26", "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "(343, 26, 1)" in result.stdout and "seasonal_naive" in result.stdout
    (run_dir,) = (tmp_path / "rnn").iterdir()
    assert run_dir.name.endswith("_lstm_32")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["window"] == 26 and record["horizon"] == 4 and record["series"] == "co2"
    # The LSTM beats "next month = this month" (the backend matrix's check, here on this backend).
    assert record["metrics"]["test_rmse"] < record["metrics"]["persistence_rmse"]
    assert record["backend"] == configured_backend()
    table = pd.read_csv(run_dir / "results.csv")
    assert list(table["model"]) == ["lstm_32", "linear", "persistence", "seasonal_naive"]
    assert (table[["rmse", "mae"]] > 0).all().all() and np.isfinite(table[["rmse", "mae"]]).all().all()
    # The baselines do not depend on training: fixed numbers for the default split.
    naive = table.set_index("model").loc["seasonal_naive", "rmse"]
    assert naive == pytest.approx(record["metrics"]["seasonal_naive_rmse"]) and 1.5 < naive < 2.5
    assert len(pd.read_csv(run_dir / "history.csv")) == 2
    for name in ("forecast.png", "loss.png", "epoch_times.png"):
        assert is_png(run_dir / name), name
    assert (run_dir / "model.keras").stat().st_size > 0


def test_compare_cells_in_process(tmp_path, capsys):
    argv = ["--epochs", "1", "--window", "12", "--series", "elec_equip", "--quiet",
            "--output-dir", str(tmp_path)]
    assert compare_cells.main(argv) == 0
    out = capsys.readouterr().out
    (run_dir,) = (tmp_path / "rnn").iterdir()
    table = pd.read_csv(run_dir / "results.csv")
    assert list(table["cell"]) == ["simple_rnn", "gru", "lstm", "seasonal_naive"]
    assert "grad lag 12 / lag 1" in out
    record = json.loads((run_dir / "run.json").read_text())
    assert all(len(curve) == 12 for pair in record["gradients_by_lag"].values() for curve in pair)
    assert is_png(run_dir / "compare_cells.png")
