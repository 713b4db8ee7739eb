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


def _rising(epochs, start=0.1, end=0.9):
    # near chance after the first epoch, then a creep towards ``end``: the band is at the top
    values = np.concatenate([[start], np.linspace(end - 0.1, end, epochs - 1)])[:epochs]
    return pd.DataFrame({"epoch": range(1, epochs + 1), "accuracy": values,
                         "val_accuracy": values - 0.02, "loss": 1 - values})


def test_twelve_runs_differ_in_colour_and_line_style(tmp_path):
    histories = {f"run{i}": _rising(6, start=0.1 + i / 50) for i in range(12)}
    fig, ax = plots.plt.subplots()
    plots.overlaid_curves(ax, histories, "val_accuracy")
    lines = ax.get_lines()
    assert len(lines) == 12
    assert len({line.get_color() for line in lines}) == 12
    assert len({(line.get_color(), line.get_linestyle()) for line in lines}) == 12
    styles = [line.get_linestyle() for line in lines]
    assert all(a != b for a, b in zip(styles, styles[1:]))  # neighbours in the legend differ
    plots.plt.close(fig)


def test_curves_get_whole_epoch_ticks_and_a_focused_y_range(tmp_path):
    history = _rising(20)
    plots.plot_metric(history, "accuracy", "demo", tmp_path / "accuracy.png")
    ax = plots.last_figure.axes[0]
    assert all(float(tick).is_integer() for tick in ax.get_xticks())
    bottom, top = ax.get_ylim()
    assert bottom > 0.5  # the first epoch (0.1) does not set the scale
    assert top >= history["accuracy"].iloc[-1]  # the final value stays in view


def test_one_or_two_epochs_draw_markers(tmp_path):
    for epochs in (1, 2):
        plots.plot_accuracy_loss(_rising(epochs), "demo", tmp_path / "accuracy_loss.png")
        for ax in plots.last_figure.axes:
            assert ax.get_lines() and all(line.get_marker() == "o" for line in ax.get_lines())
    plots.plot_metric(_rising(8), "loss", "demo", tmp_path / "loss.png")
    assert all(line.get_marker() in ("None", None, "") for line in plots.last_figure.axes[0].get_lines())


def test_epoch_times_keep_the_compiling_epoch_apart(tmp_path):
    history = pd.DataFrame({"epoch": range(1, 7), "epoch_seconds": [12.0, 1.0, 1.1, 0.9, 1.0, 1.05]})
    plots.plot_epoch_times(history, "demo", tmp_path / "epoch_times.png")
    _assert_png(tmp_path / "epoch_times.png")
    ax = plots.last_figure.axes[0]
    bars = ax.patches
    assert len(bars) == 6
    assert bars[0].get_facecolor() != bars[1].get_facecolor()
    assert ax.get_ylim()[1] < 12.0 and ax.get_ylim()[1] > 1.1  # later epochs fill the chart
    assert any("12.00 s" in text.get_text() for text in ax.texts)  # the cut-off bar says its value


def test_report_shows_the_whole_model_summary(tmp_path):
    from utils import report

    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(512, name="a_rather_long_layer_name"),
                              keras.layers.Dense(10)], name="demo")
    text = report.model_summary(model, line_length=90)
    assert "Param #" in text and "401,920" in text and "5,130" in text
    page = report.write_report(tmp_path / "report.html", "demo", [("Model", report.preformatted(text))])
    html = page.read_text()
    assert "Param #" in html and "pre-wrap" in html
