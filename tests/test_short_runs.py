"""KERAS_MAX_STEPS_PER_EPOCH (Keras's way to shorten every loop): a shortened churn run scores
one consistent set of rows, and predictions for a learner's customers are never cut short."""

import json

import keras
import pandas as pd
import pytest

from mlp import mlp, predict

from .conftest import exit_code


@pytest.fixture
def one_step_loops():
    keras.config.set_max_steps_per_epoch(1)
    yield
    keras.config.set_max_steps_per_epoch(None)


def test_a_shortened_churn_run_scores_what_it_predicted_and_answers_every_customer(
        one_step_loops, shared_data, tmp_path):
    code = exit_code(mlp.main, ["--data", str(shared_data / "Churn_Modelling.csv"), "--epochs", "1",
                                "--quiet", "--output-dir", str(tmp_path)])
    assert code == 0
    (run_dir,) = (tmp_path / "mlp").iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert sum(map(sum, record["confusion_matrix"])) == 1024  # one predict batch, scored against its labels
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
    # a learner's own customers, more than one batch of them: every one gets an answer
    model, preprocessor = predict.load_run(run_dir)
    customers = pd.read_csv(shared_data / "Churn_Modelling.csv").head(2500)
    probability = predict.predict(customers, model, preprocessor)
    assert probability.shape == (2500,) and ((probability >= 0) & (probability <= 1)).all()
