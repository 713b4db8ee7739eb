import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from utils import plots, runs
from utils.callbacks import EpochTimer, EveryNEpochsPrinter

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tiny_fit(callbacks, epochs=3):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    x = np.random.rand(16, 2).astype("float32")
    y = (x.sum(axis=1, keepdims=True) > 1).astype("float32")
    return model.fit(x, y, epochs=epochs, batch_size=8, validation_split=0.25, verbose=0,
                     callbacks=callbacks)


def test_epoch_timer_puts_seconds_into_history():
    history = _tiny_fit([EpochTimer()])
    seconds = history.history["epoch_seconds"]
    assert len(seconds) == 3
    assert all(0 < s < 60 for s in seconds)


def test_printer_prints_every_n_epochs_and_the_last(capsys):
    _tiny_fit([EveryNEpochsPrinter(5, every=2, scale=10)], epochs=5)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["20/50", "40/50", "50/50"]


def _assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        assert image.size[0] > 200 and image.size[1] > 200


def test_standard_plots_are_valid_pngs(tmp_path):
    history = _tiny_fit([EpochTimer()])
    frame = runs.history_frame(history.history)
    saved = plots.save_standard_plots(frame, "tiny", tmp_path)
    assert sorted(p.name for p in saved) == ["accuracy.png", "accuracy_loss.png",
                                             "epoch_times.png", "loss.png"]
    for path in saved:
        _assert_png(path)


def test_plots_skip_what_the_history_lacks(tmp_path):
    frame = pd.DataFrame({"epoch": [1, 2, 3], "loss": [1.0, 0.5, 0.2]})
    saved = plots.save_standard_plots(frame, "loss only", tmp_path)
    assert [p.name for p in saved] == ["loss.png"]
    _assert_png(saved[0])


def test_epoch_times_plot_needs_the_timer_column(tmp_path):
    frame = pd.DataFrame({"epoch": [1], "loss": [1.0]})
    with pytest.raises(KeyError):
        plots.plot_epoch_times(frame, "x", tmp_path / "t.png")


def _nan_fit(callbacks, epochs=5):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.ones((16, 2), dtype="float32")
    y = np.ones((16, 1), dtype="float32")
    x[5, 0] = np.nan  # the first epoch's loss is NaN
    return model.fit(x, y, epochs=epochs, batch_size=8, verbose=0, callbacks=callbacks)


def test_stop_on_nan_marks_the_run_diverged_and_saves_no_model(tmp_path):
    from types import SimpleNamespace

    from utils.callbacks import StopOnNaN, standard
    from utils.errors import TrainingDiverged

    assert [type(c).__name__ for c in standard()] == ["EpochTimer", "StopOnNaN"]
    assert isinstance(StopOnNaN(), keras.callbacks.TerminateOnNaN)
    run = runs.Run("demo", "nan", SimpleNamespace(output_dir=tmp_path, seed=0))
    timer = EpochTimer()
    with pytest.raises(TrainingDiverged, match="NaN .*at epoch 1; lower --learning-rate"):
        _nan_fit([timer, StopOnNaN()])
    record = __import__("json").loads(run.path("run.json").read_text())
    assert record["status"] == "diverged" and record["diverged_at_epoch"] == 1
    assert not run.path("model.keras").exists()
    assert runs.current_run() is None


def test_finish_records_status_and_refuses_a_nan_history(tmp_path):
    import json
    from types import SimpleNamespace

    from utils.errors import TrainingDiverged

    args = SimpleNamespace(output_dir=tmp_path, seed=0)
    good = runs.Run("demo", "ok", args)
    good.finish(history=pd.DataFrame({"epoch": [1, 2], "loss": [0.5, 0.4]}), metrics={"x": 1.0})
    assert json.loads(good.path("run.json").read_text())["status"] == "finished"
    assert good.path("history.csv").is_file()

    empty = runs.Run("demo", "no_history", args)
    empty.finish(metrics={})
    assert not empty.path("history.csv").exists()  # no empty table left behind

    bad = runs.Run("demo", "bad", args)
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        bad.finish(history=pd.DataFrame({"epoch": [1, 2], "loss": [0.5, float("nan")]}))
    assert json.loads(bad.path("run.json").read_text())["status"] == "diverged"
