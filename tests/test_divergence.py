"""Training that diverges ends in one line (``error: training diverged ...``, exit 2) in the
scripts that train outside the chapters' shared training loops, not in NaN results."""

import json

import keras
import numpy as np
import pytest

from cnn import transfer
from mlp import model_api
from mnist import tune
from utils.errors import TrainingDiverged

from .conftest import exit_code


def test_transfer_with_a_huge_learning_rate_stops_in_one_line(tmp_path, capsys):
    code = exit_code(transfer.main, ["--quick", "--quiet", "--steps", "10", "--labels-per-class", "3",
                                     "--repeats", "1", "--learning-rate", "1e30",
                                     "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: training diverged") and len(err.splitlines()) == 1
    (folder,) = (tmp_path / "cnn").glob("*_transfer_*")
    assert json.loads((folder / "run.json").read_text())["status"] == "diverged"
    assert not (folder / "model.keras").exists()


def test_model_api_two_input_training_stops_on_nan(monkeypatch):
    real = model_api.make_two_input_data

    def poisoned(samples, seed=0):
        x, y = real(samples, seed)
        y = dict(y)
        y["value"] = np.full_like(y["value"], np.inf)  # the regression target: an infinite loss
        return x, y

    monkeypatch.setattr(model_api, "make_two_input_data", poisoned)
    with pytest.raises(TrainingDiverged):
        model_api.train_two_input(epochs=2, show=False, samples=64)


def test_model_api_loss_examples_stop_on_nan(monkeypatch):
    real = model_api.make_problem_data

    def poisoned(kind, samples, seed=0, one_hot=False):
        x, y = real(kind, samples, seed, one_hot)
        return x, np.full(np.shape(y), np.inf, dtype="float32")  # targets no loss can be finite for

    monkeypatch.setattr(model_api, "make_problem_data", poisoned)
    with pytest.raises(TrainingDiverged):
        model_api.train_loss_examples(epochs=1, samples=64)


def test_tuned_model_retraining_stops_on_nan(monkeypatch, tmp_path, capsys):
    real = tune.build_model

    def exploding(hp, input_size=784, classes=10):
        model = real(hp, input_size, classes)
        model.compile(optimizer=keras.optimizers.SGD(1e30), loss=model.loss, metrics=["accuracy"])
        return model

    monkeypatch.setattr(tune, "build_model", exploding)
    code = exit_code(tune.main, ["--max-trials", "1", "--epochs", "1", "--dataset", "digits",
                                 "--limit", "200", "--quiet", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    # every trial's loss is NaN too, so the search itself may be what refuses: one line either way
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "diverged" in err or "trials failed" in err
