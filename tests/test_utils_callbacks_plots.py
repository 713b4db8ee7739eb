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
