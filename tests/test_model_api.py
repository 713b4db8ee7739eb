"""Chapter 3 (the Keras model API): three builds of one network, a two-input two-output
model, activation derivatives, the loss table, and the script end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlp import model_api
from utils.errors import ShapeMismatchError

from .conftest import exit_code

PNG = b"\x89PNG\r\n\x1a\n"

# By hand: Dense(8 -> 16) has 8*16 weights + 16 biases = 144, Dropout none,
# Dense(16 -> 8) 16*8 + 8 = 136, Dense(8 -> 3) 8*3 + 3 = 27; 144 + 136 + 27 = 307.
HAND_COUNT = 307


def test_three_builds_have_the_hand_counted_parameters():
    models = model_api.build_all()
    assert model_api.EXPECTED_PARAMS == HAND_COUNT
    assert model_api.check_parameter_counts(models) == {"sequential": 307, "functional": 307,
                                                        "subclassed": 307}
    for name, model in models.items():
        per_layer = {layer.name: layer.count_params() for layer in model.layers if layer.name != "features"}
        assert per_layer == {"hidden_1": 144, "dropout": 0, "hidden_2": 136, "output": 27}, name


def test_three_builds_compute_the_same_function():
    assert model_api.same_function(model_api.build_all()) < 1e-6


def test_a_different_network_fails_the_count():
    models = {"sequential": model_api.build_sequential(), "wider_input": model_api.build_sequential(9)}
    with pytest.raises(ShapeMismatchError, match=r"wider_input.*323.*307"):
        model_api.check_parameter_counts(models)


def test_subclassed_model_has_no_weights_until_called():
    model = model_api.SmallNet()
    assert model.weights == []
    model(np.zeros((2, 8), dtype="float32"))
    assert model.count_params() == HAND_COUNT


def test_shape_flow_follows_the_data():
    # the functional model lists its InputLayer; the flow starts after it
    rows = model_api.shape_flow(model_api.build_functional(), batch=5)
    assert [r["layer"] for r in rows] == ["hidden_1", "dropout", "hidden_2", "output"]
    assert [r["input"] for r in rows] == ["(None, 8)", "(None, 16)", "(None, 16)", "(None, 8)"]
    assert [r["output (symbolic)"] for r in rows] == ["(None, 16)", "(None, 16)", "(None, 8)", "(None, 3)"]
    assert [r["output (batch of 5)"] for r in rows] == ["(5, 16)", "(5, 16)", "(5, 8)", "(5, 3)"]
    assert [r["params"] for r in rows] == [144, 0, 136, 27]


def test_initializers_give_their_textbook_spread():
    rows = {r["initializer"]: r for r in model_api.initializer_table(fan_in=256, fan_out=256)}
    for name in ("glorot_uniform", "he_normal", "lecun_normal", "random_uniform"):
        assert rows[name]["measured std"] == pytest.approx(rows[name]["expected"], rel=0.03)
    assert rows["zeros"]["measured std"] == 0.0
    assert rows["lecun_normal"]["output std (x ~ N(0,1))"] == pytest.approx(1.0, abs=0.05)


def test_two_input_model_shapes_and_parameters():
    model = model_api.build_two_input_model()
    assert {k: tuple(v.shape) for k, v in zip(model.output_names, model.outputs)} == \
        {"label": (None, 3), "value": (None, 1)}
    # Embedding 5*4 = 20; shared (6 + 4)*32 + 32 = 352; label 32*3 + 3 = 99; value 32 + 1 = 33
    assert model.count_params() == 20 + 352 + 99 + 33
    x, y = model_api.make_two_input_data(7)
    out = model.predict(x, verbose=0)
    assert out["label"].shape == (7, 3) and out["value"].shape == (7, 1)
    np.testing.assert_allclose(out["label"].sum(axis=1), 1.0, rtol=1e-5)  # softmax rows
    assert y["label"].shape == (7,) and y["value"].shape == (7, 1)


def test_two_input_model_learns_both_outputs():
    _, history, metrics = model_api.train_two_input(epochs=3, samples=600, show=False)
    assert history["label_loss"].iloc[-1] < history["label_loss"].iloc[0]
    assert history["value_loss"].iloc[-1] < history["value_loss"].iloc[0]
    assert metrics["label_accuracy"] > 0.6  # 3 classes: chance is about 0.33
    assert {"label_accuracy", "value_mae", "label_loss", "value_loss", "loss"} <= set(metrics)


def test_sparse_and_one_hot_targets_give_the_same_losses():
    # The same data and the same start: class indices with sparse_categorical_crossentropy
    # and one-hot rows with categorical_crossentropy are the same loss, written two ways.
    # (Every example's falling loss is checked on the end-to-end run below.)
    rows, histories = model_api.train_loss_examples(epochs=2, samples=400, show=False,
                                                    keys=("multiclass", "multiclass_onehot"))
    assert [r["loss"] for r in rows] == ["sparse_categorical_crossentropy", "categorical_crossentropy"]
    np.testing.assert_allclose(histories["multiclass"]["loss"], histories["multiclass_onehot"]["loss"],
                               rtol=1e-4)
    assert all(r["last-epoch loss"] < r["first-epoch loss"] for r in rows)


def test_last_layer_matches_the_table():
    for example in model_api.LOSS_EXAMPLES:
        model = model_api.build_loss_example(example)
        assert model.layers[-1].activation.__name__ == example.last_activation
        assert model.output_shape == (None, example.units)


def test_autodiff_derivatives_are_right():
    x = np.linspace(-3, 3, 13, dtype="float32")
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(model_api.derivative(model_api.ACTIVATIONS["sigmoid"][0], x), s * (1 - s),
                               atol=1e-5)
    np.testing.assert_allclose(model_api.derivative(model_api.ACTIVATIONS["tanh"][0], x),
                               1 - np.tanh(x) ** 2, atol=1e-5)
    np.testing.assert_allclose(model_api.derivative(model_api.ACTIVATIONS["relu"][0], np.array([-1.0, 2.0])),
                               [0.0, 1.0])
    # two-class softmax is the sigmoid, derivative included
    np.testing.assert_allclose(model_api.derivative(model_api.ACTIVATIONS["softmax([x, 0])[0]"][0], x),
                               s * (1 - s), atol=1e-5)


def test_activation_table_agrees_with_numeric_derivatives():
    rows = model_api.activation_table()
    assert {r["activation"] for r in rows} >= {"sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu",
                                               "softplus", "softsign", "silu (swish)", "gelu", "linear",
                                               "hard_sigmoid", "exponential", "softmax([x, 0])[0]"}
    for row in rows:
        assert row["autodiff vs numeric"] < 2e-3, row["activation"]
    sigmoid = next(r for r in rows if r["activation"] == "sigmoid")
    assert sigmoid["max f'"] == pytest.approx(0.25, abs=1e-3)  # why deep sigmoid stacks learn slowly


def test_activation_plot_is_written(tmp_path):
    x = np.linspace(-4, 4, 41, dtype="float32")
    path = model_api.plot_activations(model_api.activation_curves(x), x, tmp_path / "a.png", "test")
    assert path.read_bytes().startswith(PNG)


def test_every_part_end_to_end(tmp_path, capsys):
    # In-process: main(argv) as the script calls it (the script as typed is run below).
    assert model_api.main(["--epochs", "2", "--output-dir", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "307" in out and "all agree" in out
    (run_dir,) = (tmp_path / "model_api").iterdir()
    for name in ("run.json", "history.csv", "activations.png", "activations.csv", "losses.csv",
                 "loss_curves.png", "model.keras", "report.html"):
        assert (run_dir / name).is_file(), name
    record = json.loads((run_dir / "run.json").read_text())
    assert record["metrics"]["params_subclassed"] == HAND_COUNT and record["parts"] == list(model_api.PARTS)
    losses = pd.read_csv(run_dir / "losses.csv")  # one row per problem in the table
    assert list(losses["last activation"]) == ["sigmoid", "softmax", "softmax", "sigmoid", "linear",
                                              "sigmoid"]
    assert (losses["last-epoch loss"] < losses["first-epoch loss"]).all(), losses
    by_problem = losses.set_index("problem")["test metric"]
    assert by_problem["binary classification"] > 0.7  # accuracy; chance is about 0.5
    assert by_problem["regression to values in [0, 1]"] < 0.15  # mae
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert {"two_inputs.label_accuracy", "two_inputs.value_mae", "regression.mae"} <= set(history.columns)
    assert (run_dir / "activations.png").read_bytes().startswith(PNG)
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()


def test_one_part_from_inside_the_folder(run, tmp_path):
    result = run("model_api.py", "--part", "api", "--output-dir", str(tmp_path), "--quiet",
                 cwd=Path(model_api.__file__).parent)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "model_api").iterdir()
    assert run_dir.name.endswith("_api")
    assert json.loads((run_dir / "run.json").read_text())["parts"] == ["api"]
    assert not (run_dir / "losses.csv").exists()


def test_bad_flag_exits_2(tmp_path, capsys):
    assert exit_code(model_api.main, ["--part", "everything", "--output-dir", str(tmp_path)]) == 2
    assert "invalid choice: 'everything'" in capsys.readouterr().err
    assert not (tmp_path / "model_api").exists()


def test_zero_epochs_exits_2_before_any_run_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        model_api.main(["--epochs", "0", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "model_api").exists()
