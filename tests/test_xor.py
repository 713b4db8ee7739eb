import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from xor import xor

from .conftest import ROOT, exit_code


def _args(tmp_path, **overrides):
    args = xor.parse_args(["--output-dir", str(tmp_path), "--quiet"])
    return SimpleNamespace(**{**vars(args), **overrides})


def test_data_is_the_xor_truth_table():
    x, y = xor.load_data()
    assert x.shape == (4, 2) and y.shape == (4, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(y.ravel(), np.logical_xor(x[:, 0], x[:, 1]))


@pytest.mark.parametrize("hidden, params", [((8, 4), 65), ((4,), 17), ((3, 3, 3), 37)])
def test_parameter_counts(hidden, params):
    model = xor.build_model(hidden)
    assert model.count_params() == params
    assert model.output_shape == (None, 1)
    assert len(model.layers) == len(hidden) + 1


def test_fit_makes_the_recipes_number_of_updates():
    x, y = xor.load_data()
    model = xor.build_model()
    model.compile(optimizer="adam", loss="binary_crossentropy")
    xor.fit(model, x, y, epochs=30, batch_size=1, log_every=10, seed=0)
    # 30 passes over 4 samples at batch size 1, as fit(x, y, batch_size=1, epochs=30) makes
    assert int(model.optimizer.iterations.numpy()) == 120


def test_training_lowers_the_loss(tmp_path):
    result = xor.train_and_evaluate(_args(tmp_path, epochs=100, log_every=10))
    loss = result.history["loss"]
    assert len(loss) == 10
    assert loss.iloc[-1] < loss.iloc[0]
    assert result.history["epoch"].tolist()[-1] == 100


@pytest.mark.parametrize("seed", [0, 2, 3, 4])  # seed 1: the script's run from the repo root below
def test_default_recipe_solves_xor(tmp_path, seed):
    result = xor.train_and_evaluate(_args(tmp_path, seed=seed))
    assert result.metrics["accuracy"] == 1.0
    predictions = np.array(result.extra["predictions"])
    assert ((predictions[:, 3] > 0.5) == (predictions[:, 2] == 1)).all()


def test_script_from_the_repo_root_leaves_a_complete_run_folder(tmp_path, run):
    result = run("xor/xor.py", "--output-dir", str(tmp_path), "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "accuracy 100%" in result.stdout
    assert "Total params: 65" in result.stdout
    assert "epoch 500/500" in result.stdout
    (folder,) = (tmp_path / "xor").iterdir()
    for name in ("run.json", "history.csv", "model.keras", "accuracy.png", "loss.png",
                 "accuracy_loss.png", "epoch_times.png"):
        assert (folder / name).is_file(), name
    record = json.loads((folder / "run.json").read_text())
    assert record["seed"] == 1 and record["metrics"]["accuracy"] == 1.0
    predictions = np.array(record["predictions"])  # the default recipe solves xor with seed 1 too
    assert ((predictions[:, 3] > 0.5) == (predictions[:, 2] == 1)).all()
    assert record["command"].startswith("python xor/xor.py")
    history = pd.read_csv(folder / "history.csv")
    assert {"epoch", "loss", "accuracy", "epoch_seconds"} <= set(history.columns)


def test_saved_model_reloads_with_the_same_predictions(tmp_path):
    import keras

    result = xor.train_and_evaluate(_args(tmp_path, epochs=20))
    model = keras.saving.load_model(result.run_dir / "model.keras")
    x, _ = xor.load_data()
    np.testing.assert_allclose(model.predict(x, verbose=0).ravel(),
                               np.array(result.extra["predictions"])[:, 3], rtol=1e-5)


def test_script_runs_from_inside_its_folder(tmp_path, run):
    result = run("xor.py", "--epochs", "20", "--hidden", "3", "--optimizer", "sgd",
                 "--output-dir", str(tmp_path), "--quiet", cwd=ROOT / "xor")
    assert result.returncode == 0, result.stderr
    (folder,) = (tmp_path / "xor").iterdir()
    assert folder.name.endswith("_xor_3")


def test_help_shows_every_default(capsys):
    assert exit_code(xor.main, ["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 500)", "(default: 1)", "(default: adam)", "(default: [8, 4])"):
        assert default in text


BAD_INPUT = [["--hidden", "0"], ["--optimizer", "lbfgs"], ["--epochs", "-1"], ["--backend", "cntk"]]


def test_bad_input_is_one_line_and_exit_2_as_typed(run, tmp_path):
    # One case through a real process: the exit code and stderr the shell sees.
    result = run("xor/xor.py", *BAD_INPUT[-1], "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "xor").exists()


@pytest.mark.parametrize("argv", BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(argv, tmp_path, capsys):
    # The same path in-process (parsing and checks come before any training): no new Python.
    assert exit_code(xor.main, [*argv, "--output-dir", str(tmp_path)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "xor").exists()
