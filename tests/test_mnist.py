import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from mnist import data as image_data
from mnist import mnist, models
from utils import datasets

from .conftest import ROOT, exit_code

EXPECTED_PARAMS = {
    "mlp_one_layer": 407_050, "mlp_two_layers": 669_706, "mlp_two_layers_dropout": 669_706,
    "conv_net": 93_322, "conv_net_dropout": 93_322, "conv_net_batch_norm": 93_706,
    "conv_net_l1": 93_322, "conv_net_l2": 93_322, "le_net": 61_706, "best_conv_net": 391_850,
}


@pytest.fixture(scope="module")
def digits():
    return image_data.load_images("digits", limit=400)


def test_registry_holds_exactly_the_expected_models():
    assert set(models.REGISTRY) == set(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", EXPECTED_PARAMS)
def test_model_builds_with_its_parameter_count(name):
    model = models.build_model(name)
    assert model.count_params() == EXPECTED_PARAMS[name]
    assert model.output_shape == (None, 10)
    expected_input = (None, 784) if models.REGISTRY[name].flat_input else (None, 28, 28, 1)
    assert model.input_shape == expected_input


def test_digits_look_like_mnist(digits):
    assert digits.x_train.shape[1:] == (28, 28, 1) and digits.x_train.dtype == np.float32
    assert 0.0 <= digits.x_train.min() and digits.x_train.max() <= 1.0
    # a frame of empty pixels around a centred 20x20 digit, as in MNIST
    assert digits.x_train[:, :4].max() == 0 and digits.x_train[:, 10:18, 10:18].mean() > 0.1
    assert len(digits.x_val) + len(digits.x_train) == 400 and len(digits.x_test) == 80


def test_auto_falls_back_to_digits_offline_without_fashion(monkeypatch, tmp_path):
    fashion = datasets.REGISTRY["fashion_mnist"]
    monkeypatch.setitem(datasets.REGISTRY, "fashion_mnist",
                        datasets.Dataset(fashion.name, fashion.description, fashion.files,
                                         fashion.cache_subdir, system_dirs=(str(tmp_path),)))
    monkeypatch.setattr(datasets, "PROJECT_DATA_DIR", tmp_path)
    monkeypatch.delenv("KERAS_TUTORIAL_DATA", raising=False)
    data = image_data.load_images("auto", limit=200)
    assert data.name == "digits"
    assert "MNIST is not available" in data.note


@pytest.mark.parametrize("name", EXPECTED_PARAMS)
def test_every_model_trains_one_short_epoch(name, digits, tmp_path):
    args = mnist.parse_args(["--epochs", "1", "--batch-size", "64", "--quiet",
                             "--output-dir", str(tmp_path), "-m", name])
    result = mnist.train_and_evaluate(models.get_spec(name), digits, args)
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0
    assert len(result.history) == 1
    for file in ("model.keras", "history.csv", "confusion_matrix.png", "misclassified.png",
                 "classification_report.txt", "report.html", "accuracy.png"):
        assert (result.run_dir / file).is_file(), file
    assert not (result.run_dir / "backup").exists()  # removed once training completes


def test_training_learns_digits(digits, tmp_path):
    args = mnist.parse_args(["--epochs", "8", "--batch-size", "32", "--quiet",
                             "--output-dir", str(tmp_path)])
    result = mnist.train_and_evaluate(models.get_spec("mlp_one_layer"), digits, args)
    assert result.history["loss"].iloc[-1] < result.history["loss"].iloc[0]
    assert result.metrics["test_accuracy"] > 0.8  # chance is 0.1


def test_several_models_make_a_comparison_report(tmp_path, capsys):
    # In-process: the script as typed is run by the resume-after-kill test below.
    assert mnist.main(["-m", "mlp_one_layer", "-m", "le_net", "--dataset", "digits",
                       "--epochs", "1", "--quiet", "--output-dir", str(tmp_path)]) == 0
    assert "*** dataset digits" in capsys.readouterr().out
    (comparison,) = (tmp_path / "mnist").glob("*_comparison")
    page = (comparison / "report.html").read_text()
    assert "mlp_one_layer" in page and "le_net" in page
    assert page.count("data:image/png;base64,") >= 1
    single = next((tmp_path / "mnist").glob("*_le_net"))
    page = (single / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and 'src="http' not in page
    record = json.loads((single / "run.json").read_text())
    assert record["dataset"] == "digits" and "test_accuracy" in record["metrics"]


def test_unknown_model_is_one_line_and_exit_2(capsys, tmp_path):
    assert exit_code(mnist.main, ["-m", "resnet", "--output-dir", str(tmp_path)]) == 2
    stderr = capsys.readouterr().err
    (error,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "unknown model 'resnet'" in error and "conv_net" in error
    assert "Traceback" not in stderr
    assert not (tmp_path / "mnist").exists()


def test_list_shows_every_model_with_its_size(capsys):
    assert exit_code(mnist.main, ["--list"]) == 0
    stdout = capsys.readouterr().out
    for name, params in EXPECTED_PARAMS.items():
        line = next(line for line in stdout.splitlines() if line.startswith(name + " "))
        assert f"{params:,}" in line


def test_resume_continues_after_a_killed_run_with_no_epoch_lost_or_repeated(tmp_path):
    command = [sys.executable, str(ROOT / "mnist" / "mnist.py"), "-m", "conv_net", "--dataset",
               "fashion_mnist", "--limit", "2000", "--epochs", "5", "--quiet",
               "--output-dir", str(tmp_path)]
    if not datasets.Path("/usr/share/datasets/fashion-mnist").is_dir():
        command[command.index("fashion_mnist")] = "digits"
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    log = None
    while time.time() < deadline and process.poll() is None:
        logs = list((tmp_path / "mnist").glob("*_conv_net/epochs.csv"))
        if logs and len(logs[0].read_text().splitlines()) >= 2:  # header + one finished epoch
            log = logs[0]
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert log is not None, "the first run never finished an epoch"
    interrupted = len(pd.read_csv(log))
    if interrupted >= 5:
        pytest.skip("the first run finished before it could be interrupted")
    assert (log.parent / "backup").is_dir()

    # The killed run was the script as a learner types it; resuming it in this process
    # reads the same folder and needs no second start of Python and TensorFlow.
    assert mnist.main([*command[2:], "--resume"]) == 0
    epochs = pd.read_csv(log)["epoch"].tolist()
    assert epochs == [0, 1, 2, 3, 4]
    assert pd.read_csv(log.parent / "history.csv")["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert not (log.parent / "backup").exists()


def test_resume_without_an_interrupted_run_is_a_clear_error(capsys, tmp_path):
    assert exit_code(mnist.main, ["-m", "conv_net", "--resume", "--dataset", "digits",
                                  "--limit", "400", "--output-dir", str(tmp_path)]) == 2
    assert "no interrupted conv_net run" in capsys.readouterr().err


def test_cosine_schedule_falls_from_the_start_rate_to_zero():
    from mnist import training

    args = mnist.parse_args(["--schedule", "cosine", "--epochs", "4", "--learning-rate", "0.01"])
    optimizer = training.make_optimizer(args, steps=25)
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    optimizer.iterations.assign(50)  # half-way through 4 epochs of 25 steps
    assert float(optimizer.learning_rate) == pytest.approx(0.005, rel=1e-3)
    optimizer.iterations.assign(100)
    assert float(optimizer.learning_rate) == pytest.approx(0.0, abs=1e-6)
    constant = training.make_optimizer(mnist.parse_args(["--optimizer", "sgd"]), steps=25)
    assert float(constant.learning_rate) == pytest.approx(0.01)  # SGD's Keras default


def test_augmentations_alter_training_images_but_keep_their_shape_and_range():
    from mnist import training

    rng = np.random.default_rng(0)
    images = np.zeros((16, 28, 28, 1), "float32")
    images[:, 4:24, 2:10, :] = rng.uniform(0.5, 1.0, (16, 20, 8, 1))  # a bright bar on the left
    for kind in training.AUGMENTATIONS:
        out = np.asarray(training.augmenter(kind)(images, training=True))
        assert out.shape == images.shape, kind
        assert out.min() >= 0.0 and out.max() <= 1.0 + 1e-6, kind
        assert not np.allclose(out, images), kind
        # Not used at inference: the same layers leave images untouched.
        assert np.allclose(np.asarray(training.augmenter(kind)(images, training=False)), images)
    # The flips mirror some images: then the bar's mass moves to the right half.
    for kind in ("flip", "flip_shift"):
        flipped = np.asarray(training.augmenter(kind)(np.repeat(images, 4, axis=0), training=True))
        right = flipped[:, :, 14:, :].sum(axis=(1, 2, 3)) > flipped[:, :, :14, :].sum(axis=(1, 2, 3))
        assert 0 < right.sum() < len(flipped), kind


def test_augment_flag_accepts_a_bare_flag_a_kind_and_rejects_others(capsys, tmp_path):
    assert mnist.parse_args(["--augment"]).augment == "original"
    assert mnist.parse_args(["--augment", "flip_shift"]).augment == "flip_shift"
    assert mnist.parse_args([]).augment is None
    assert exit_code(mnist.main, ["--augment", "rotate", "--output-dir", str(tmp_path)]) == 2
    assert "invalid choice: 'rotate'" in capsys.readouterr().err
