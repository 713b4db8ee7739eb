"""Chapter 2 (churn MLP): preparation on generated frames, both modes on the real CSV,
prediction from a saved run, and every bad input ending in one line and exit code 2."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlp import data, predict
from tests.conftest import SHARED_DATA, run_script
from utils.errors import ChurnDataError

SCRIPT = "mlp/mlp.py"
CUSTOMER = ["CreditScore=600", "Geography=France", "Gender=Male", "Age=40", "Tenure=3",
            "Balance=60000", "NumOfProducts=2", "HasCrCard=1", "IsActiveMember=1", "EstimatedSalary=50000"]
PNG = b"\x89PNG\r\n\x1a\n"


def fake_customers(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """A frame with the real schema and made-up customers (about 20% leave)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "RowNumber": np.arange(1, rows + 1),
        "CustomerId": rng.integers(15_000_000, 16_000_000, rows),
        "Surname": rng.choice(["Hill", "Chu", "Boni"], rows),
        "CreditScore": rng.integers(350, 851, rows),
        "Geography": rng.choice(["France", "Germany", "Spain"], rows),
        "Gender": rng.choice(["Female", "Male"], rows),
        "Age": rng.integers(18, 93, rows),
        "Tenure": rng.integers(0, 11, rows),
        "Balance": rng.choice([0.0, 1.0], rows) * rng.uniform(0, 250_000, rows),
        "NumOfProducts": rng.integers(1, 5, rows),
        "HasCrCard": rng.integers(0, 2, rows),
        "IsActiveMember": rng.integers(0, 2, rows),
        "EstimatedSalary": rng.uniform(10, 200_000, rows),
        "Exited": (rng.random(rows) < 0.2).astype(int),
    })


def churn_csv() -> Path:
    folder = Path(os.environ.get("KERAS_TUTORIAL_DATA") or SHARED_DATA)
    path = folder / "Churn_Modelling.csv"
    if not path.is_file():
        pytest.skip(f"{path} is missing: the smoke tests train on the real churn table")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short default-mode run (2 epochs) on the real CSV, shared by the tests below."""
    out = tmp_path_factory.mktemp("mlp_out")
    done = run_script(SCRIPT, "--data", str(churn_csv()), "--epochs", "2", "--output-dir", str(out),
                      env={"KERAS_HOME": str(out / "keras_home")})
    assert done.returncode == 0, done.stderr
    (run_dir,) = (out / "mlp").iterdir()
    return run_dir, done


@pytest.fixture(scope="module")
def chapter():
    """``main`` of mlp/mlp.py, in-process (no process start per case), on the backend
    Keras was imported with."""
    from mlp import mlp

    class Chapter:
        @staticmethod
        def main(argv):
            return mlp.main([*argv, "--backend", mlp.keras.backend.backend()])

    return Chapter


# --- preparation ---------------------------------------------------------------------

def test_encoding_gives_11_columns_and_drops_one_dummy():
    frame = data.check_table(fake_customers())
    x, y = data.features_and_target(data.make_preprocessor(), frame, fit=True)
    assert x.shape == (400, 11) and y.shape == (400, 1) and x.dtype == np.float32
    names = list(data.make_preprocessor().fit(frame).get_feature_names_out())
    assert names[:3] == ["Geography_Germany", "Geography_Spain", "Gender_Male"]
    assert not {"Geography_France", "Gender_Female", "Surname", "CustomerId", "Exited"} & set(names)


def test_scaler_is_fitted_on_training_rows_only():
    frame = data.check_table(fake_customers())
    train, validation, test = data.split(frame)
    preprocessor = data.make_preprocessor()
    x_train, _ = data.features_and_target(preprocessor, train, fit=True)
    scaler = preprocessor.named_transformers_["numeric"]
    numeric = list(data.NUMERIC)
    np.testing.assert_allclose(scaler.mean_, train[numeric].mean().to_numpy())
    assert not np.allclose(scaler.mean_, frame[numeric].mean().to_numpy())
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(axis=0), 1, atol=1e-4)
    x_test, _ = data.features_and_target(preprocessor, test)
    assert np.abs(x_test.mean(axis=0)).max() > 1e-3  # test rows are scaled with the training statistics


def test_split_is_stratified_and_disjoint():
    frame = data.check_table(fake_customers(1000))
    train, validation, test = data.split(frame)
    assert (len(train), len(validation), len(test)) == (720, 80, 200)
    assert not (set(train.index) & set(test.index) or set(validation.index) & set(test.index)
                or set(train.index) & set(validation.index))
    share = frame["Exited"].mean()
    for part in (train, validation, test):
        assert abs(part["Exited"].mean() - share) < 0.015


def test_table_checks_name_the_problem(tmp_path):
    frame = fake_customers(30).drop(columns=["Age", "Balance"])
    with pytest.raises(ChurnDataError, match="lacks the column.*Age, Balance"):
        data.check_table(frame)
    frame = fake_customers(30).astype({"Tenure": object})
    frame.loc[4, "Tenure"] = "ten"
    with pytest.raises(ChurnDataError, match="column Tenure, row 5 holds 'ten'"):
        data.check_table(frame)
    header_only = tmp_path / "header.csv"
    fake_customers(1).head(0).to_csv(header_only, index=False)
    with pytest.raises(ChurnDataError, match="no customers"):
        data.read_table(header_only)


# --- both modes on the real CSV ---------------------------------------------------------

def test_default_mode_writes_a_complete_run(trained):
    run_dir, done = trained
    for name in ("model.keras", "preprocess.json", "history.csv", "run.json", "accuracy.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "confusion_matrix.png").read_bytes()[:8] == PNG
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds"} <= set(history.columns)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["rows"] == {"train": 7200, "validation": 800, "test": 2000}
    assert np.array(record["confusion_matrix"]).sum() == 2000
    metrics = record["metrics"]
    assert 0.7 < metrics["accuracy"] <= 1 and 0.5 < metrics["roc_auc"] <= 1
    assert record["backend"] in ("jax", "tensorflow", "torch")
    # the saved encoding was fitted on the 7,200 training rows, not on all 10,000
    scaler = predict.load_preprocessor(run_dir / "preprocess.json").named_transformers_["numeric"]
    train, _, _ = data.split(data.read_table(churn_csv()))
    np.testing.assert_allclose(scaler.mean_, train[list(data.NUMERIC)].mean().to_numpy())
    assert "Total params: 121" in done.stdout and "ROC AUC" in done.stdout and "truly left" in done.stdout


def test_no_split_mode_reports_training_accuracy(tmp_path, chapter, capfd):
    # batch size 7 leaves a short last batch (10,000 = 7 * 1,428 + 4), the fast path's edge case.
    # In-process (the script as typed is the `trained` fixture); capfd also sees what native code
    # writes to file descriptor 2.
    code = chapter.main(["--no-split", "--data", str(churn_csv()), "--epochs", "1", "--batch-size", "7",
                         "--output-dir", str(tmp_path), "--quiet"])
    done = capfd.readouterr()
    assert code == 0, done.err
    assert "training accuracy" in done.out and done.err == ""
    (run_dir,) = (tmp_path / "mlp").iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["rows"]["train"] == 10_000 and 0.7 < record["metrics"]["train_accuracy"] <= 1


def test_seeds_prints_mean_and_spread(tmp_path, chapter, capsys):
    code = chapter.main(["--seeds", "2", "--epochs", "1", "--data", str(churn_csv()), "--quiet",
                         "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "seed 0:" in out and "seed 1:" in out
    assert "2 seeds, mean +- std" in out and "roc_auc" in out
    assert len(list((tmp_path / "mlp").iterdir())) == 2


# --- prediction ---------------------------------------------------------------------------

def test_predict_scores_one_customer_and_a_csv(trained, chapter, capsys, tmp_path):
    run_dir, _ = trained
    assert chapter.main(["--predict", *CUSTOMER, "--model", str(run_dir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    probability = float(lines[-1].split()[1])
    assert 0 <= probability <= 1 and lines[-1].split()[2] in ("stays", "leaves")
    csv = tmp_path / "new.csv"
    fake_customers(3).drop(columns="Exited").to_csv(csv, index=False)
    assert chapter.main(["--predict", str(csv), "--model", str(run_dir)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2 + 3  # model line, header, 3 rows


@pytest.mark.parametrize("values, message", [
    ([c.replace("France", "Italy") for c in CUSTOMER], "Geography='Italy'.*knows France, Germany, Spain"),
    ([*CUSTOMER, "Colour=red"], "unknown key 'Colour'"),
    ([c.replace("40", "forty") for c in CUSTOMER], "column Age, row 1 holds 'forty'"),
])
def test_predict_bad_input_is_one_line(trained, chapter, capsys, values, message):
    run_dir, _ = trained
    before = sorted(p.name for p in run_dir.parent.iterdir())
    assert chapter.main(["--predict", *values, "--model", str(run_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("error: ") and re.search(message, captured.err), captured.err
    assert sorted(p.name for p in run_dir.parent.iterdir()) == before


def test_saved_encoding_is_json_and_rebuilds_the_same_transformation(tmp_path):
    frame = data.check_table(fake_customers(300))
    fitted = data.make_preprocessor().fit(frame)
    path = predict.save_preprocessor(fitted, tmp_path / "preprocess.json")
    record = json.loads(path.read_text())  # plain data: nothing in it can run
    assert record["categories"] == {"Geography": ["France", "Germany", "Spain"], "Gender": ["Female", "Male"]}
    rebuilt = predict.load_preprocessor(path)
    customers = data.check_table(fake_customers(40, seed=1))
    np.testing.assert_allclose(rebuilt.transform(customers), fitted.transform(customers), rtol=1e-12)
    assert list(rebuilt.get_feature_names_out()) == list(fitted.get_feature_names_out())


@pytest.mark.parametrize("damage, message", [
    ("model empty", "model.keras: it is empty"),
    ("model truncated", "model.keras: it is truncated"),
    ("encoding text", "preprocess.json is damaged \\(not valid JSON"),
    ("encoding wrong", "preprocess.json is damaged"),
    ("old pickle", "preprocess.joblib is a pickle.*re-run training"),
])
def test_predict_with_a_damaged_run_folder_is_one_line(trained, chapter, capsys, tmp_path, damage, message):
    import shutil

    run_dir = shutil.copytree(trained[0], tmp_path / "copy")
    model, encoding = run_dir / "model.keras", run_dir / "preprocess.json"
    if damage == "model empty":
        model.write_bytes(b"")
    elif damage == "model truncated":
        model.write_bytes(model.read_bytes()[:2000])
    elif damage == "encoding text":
        encoding.write_text("{not json")
    elif damage == "encoding wrong":
        record = json.loads(encoding.read_text())
        record["scalers"]["numeric"]["mean"] = ["a"]
        encoding.write_text(json.dumps(record))
    elif damage == "old pickle":
        encoding.rename(run_dir / "preprocess.joblib")
    assert chapter.main(["--predict", *CUSTOMER, "--model", str(run_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert re.search(message, captured.err), captured.err


# --- bad training tables: one line, exit code 2, no run folder ---------------------------------

def _write(path: Path, frame: pd.DataFrame | None) -> Path:
    if frame is None:
        path.write_text("")
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "lacks the column.*Gender, Tenure"),
    ("empty", "is empty"),
    ("text", "column Balance, row 3 holds 'n/a'"),
    ("inf", "column Balance, row 3 holds 'inf', which is infinite"),
    ("1e400", "column EstimatedSalary, row 3 holds '1e400', which is infinite"),  # float64 overflows
    ("1e300", "column Balance, row 3 holds '1e300', too large to scale"),  # would give a NaN loss
    ("one gender", "column Gender holds the single value 'Male' in all 50 rows"),
    ("one country", "column Geography holds the single value 'Spain'"),
    ("nobody left", r"nobody left \(Exited is 0 in all 50 rows\).*ROC AUC is undefined"),
])
def test_bad_table_is_one_line_and_writes_nothing(tmp_path, chapter, capsys, case, message):
    frame = fake_customers(50)
    if case == "missing":
        frame = frame.drop(columns=["Gender", "Tenure"])
    elif case in ("text", "inf", "1e400", "1e300"):
        column = "EstimatedSalary" if case == "1e400" else "Balance"
        frame = frame.astype({column: object})
        frame.loc[2, column] = {"text": "n/a"}.get(case, case)
    elif case == "one gender":
        frame["Gender"] = "Male"
    elif case == "one country":
        frame["Geography"] = "Spain"
    elif case == "nobody left":
        frame["Exited"] = 0
    csv = _write(tmp_path / "bad.csv", None if case == "empty" else frame)
    out = tmp_path / "out"
    assert chapter.main(["--data", str(csv), "--output-dir", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured.err
    assert re.search(message, captured.err), captured.err
    assert not out.exists()


def test_script_exit_code_and_clean_stderr(tmp_path, run):
    """The same, as a learner sees it: a process, exit code 2, one stderr line, no traceback."""
    frame = fake_customers(50).astype({"Age": object})
    frame.loc[6, "Age"] = "forty"
    csv = _write(tmp_path / "bad.csv", frame)
    done = run(SCRIPT, "--data", str(csv), "--output-dir", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: {csv}: column Age, row 7 holds 'forty', but Age must be a "
                                        "number; correct that cell or remove the row"]
    assert not (tmp_path / "out").exists()
