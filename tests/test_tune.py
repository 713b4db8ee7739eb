"""Hyper-parameter search with KerasTuner (mnist/tune.py)."""

import json
import sys

import keras
import pandas as pd
import pytest

from mnist import data as image_data
from utils.errors import TutorialError

from .conftest import exit_code

kt = pytest.importorskip("keras_tuner", reason='needs `pip install "keras-tuner>=1.4"`')
from mnist import tune  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return image_data.load_images("digits", limit=400)


def test_hypermodel_takes_each_trials_values():
    hp = kt.HyperParameters()
    model = tune.build_model(hp)  # first call: every hyper-parameter at its lowest value
    assert hp.values == {"units": 64, "dropout": 0.0, "learning_rate": pytest.approx(1e-4)}
    assert model.count_params() == 784 * 64 + 64 + 64 * 10 + 10
    hp.values.update(units=256, dropout=0.3, learning_rate=3e-3)
    model = tune.build_model(hp)
    assert model.count_params() == 784 * 256 + 256 + 256 * 10 + 10
    assert model.get_layer(index=1).rate == pytest.approx(0.3)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(3e-3)


def test_random_search_writes_trials_and_the_retrained_best_model(digits, tmp_path):
    args = tune.parse_args(["--max-trials", "2", "--epochs", "2", "--batch-size", "64", "--quiet",
                            "--output-dir", str(tmp_path)])
    result = tune.tune(digits, args)
    folder = result.run_dir
    trials = pd.read_csv(folder / "trials.csv")
    assert len(trials) == 2 and (trials["status"] == "COMPLETED").all()
    assert trials["units"].between(64, 512).all() and trials["dropout"].between(0, 0.5).all()
    assert trials["learning_rate"].between(1e-4, 1e-2).all()
    assert trials["val_accuracy"].is_monotonic_decreasing  # best first
    best = json.loads((folder / "best_hyperparameters.json").read_text())
    assert set(best) == {"units", "dropout", "learning_rate"}
    assert best["units"] == trials.loc[0, "units"]
    assert (folder / "tuner" / "mlp").is_dir()  # KerasTuner's own files stay inside the run folder
    saved = keras.saving.load_model(folder / "model.keras")
    assert saved.get_layer(index=0).units == best["units"]
    assert result.metrics["trials"] == 2
    # far above chance (0.1): the backend matrix's check, applied here on this process's backend
    assert 0.4 < result.metrics["test_accuracy"] <= 1.0
    assert json.loads((folder / "run.json").read_text())["backend"] == keras.backend.backend()
    for name in ("trials.png", "accuracy.png", "report.html", "run.json", "history.csv"):
        assert (folder / name).is_file(), name


def test_tiny_hyperband_promotes_trials_to_longer_training(digits, tmp_path):
    args = tune.parse_args(["--tuner", "hyperband", "--epochs", "2", "--batch-size", "64", "--quiet",
                            "--output-dir", str(tmp_path)])
    result = tune.tune(digits, args)
    trials = pd.read_csv(result.run_dir / "trials.csv")
    assert len(trials) >= 2 and (trials["status"] == "COMPLETED").all()
    assert trials["epochs"].max() == 2
    assert (result.run_dir / "model.keras").is_file()


def test_hyperband_needs_two_epochs(capsys):
    assert tune.main(["--tuner", "hyperband", "--epochs", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: hyperband needs --epochs of at least 2")


def test_missing_keras_tuner_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_tuner", None)  # makes `import keras_tuner` fail
    with pytest.raises(TutorialError, match="pip install"):
        tune.keras_tuner()


def test_bad_flag_exits_2(capsys):
    assert exit_code(tune.main, ["--tuner", "grid"]) == 2
    assert "invalid choice: 'grid'" in capsys.readouterr().err
