"""--resume compares the flags of the interrupted run with the new ones (mnist/training.check_resume)."""

import json

import pytest

from mnist import training
from utils.errors import TutorialError


def _started(tmp_path, **flags):
    backup = tmp_path / training.BACKUP
    backup.mkdir()
    record = {"dataset": "digits", "data_dir": None, "limit": 400, "optimizer": "adam", "learning_rate": None,
              "batch_size": 32, "schedule": "constant", "augment": None, "epochs": 5, **flags}
    (backup / training.STARTED).write_text(json.dumps(record))
    return record


def test_the_same_flags_resume(tmp_path):
    training.check_resume(tmp_path, _started(tmp_path))


def test_more_epochs_at_a_constant_rate_make_the_run_longer(tmp_path):
    started = _started(tmp_path)
    training.check_resume(tmp_path, {**started, "epochs": 80})


def test_more_epochs_under_a_schedule_are_refused(tmp_path):
    started = _started(tmp_path, schedule="cosine")  # the rate's curve depends on the total epochs
    with pytest.raises(TutorialError, match="--epochs 5, not --epochs 80"):
        training.check_resume(tmp_path, {**started, "epochs": 80})


def test_another_batch_size_is_refused_with_both_values(tmp_path):
    started = _started(tmp_path)
    with pytest.raises(TutorialError, match="--batch-size 32, not --batch-size 64"):
        training.check_resume(tmp_path, {**started, "batch_size": 64})
    with pytest.raises(TutorialError, match="--batch-size"):  # epochs too: still refused, naming both
        training.check_resume(tmp_path, {**started, "batch_size": 64, "epochs": 80})
