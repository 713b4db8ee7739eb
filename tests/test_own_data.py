"""Chapter 4 on the learner's own data: any K classes, other sizes, colour, and one-line errors."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from mnist import data as image_data
from mnist import mnist, models, training
from utils import datasets, runs
from utils.errors import TutorialError

from .conftest import exit_code

CLASSES = 5


def make_images(n: int, shape: tuple, classes: int = CLASSES, seed: int = 0):
    """``n`` uint8 images, each class a bright square in its own place, plus labels 0..classes-1."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    images = rng.integers(0, 40, (n, *shape), dtype="uint8")
    height, width = shape[:2]
    for i, label in enumerate(labels):
        top = (label * height) // (classes + 1)
        images[i, top:top + height // 4, : width // 2] = 230
    return images, labels.astype("uint8")


def write_idx_dataset(folder, shape=(32, 32), train=200, test=50, classes=CLASSES, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    rank = 3 if len(shape) == 2 else 4
    for split, n, seed in (("train", train, 0), ("t10k", test, 1)):
        x, y = make_images(n, shape, classes, seed)
        datasets.write_idx(folder / f"{split}-images-idx{rank}-ubyte{ext}", x)
        datasets.write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", y)
    return folder


def write_npz_dataset(path, shape, train=200, test=50, classes=CLASSES, names=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    x_train, y_train = make_images(train, shape, classes, 0)
    x_test, y_test = make_images(test, shape, classes, 1)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    if names:
        (path.parent / "classes.txt").write_text("\n".join(names) + "\n")
    return path


@pytest.fixture(scope="module")
def idx5(tmp_path_factory):
    return write_idx_dataset(tmp_path_factory.mktemp("own") / "shapes5")


def quick_args(tmp_path, *extra):
    return ["--epochs", "1", "--batch-size", "32", "--quiet", "--output-dir", str(tmp_path), *extra]


def confusion(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "confusion_matrix.csv", index_col=0)


def test_five_classes_of_32x32_train_conv_net_and_le_net(idx5, tmp_path):
    code = mnist.main(quick_args(tmp_path, "--data-dir", str(idx5), "-m", "conv_net", "-m", "le_net"))
    assert code == 0
    for name in ("conv_net", "le_net"):
        (run_dir,) = (tmp_path / "mnist").glob(f"*_{name}")
        matrix = confusion(run_dir)
        assert matrix.shape == (CLASSES, CLASSES)
        assert matrix.to_numpy().sum() == 50  # every test image, once
        record = json.loads((run_dir / "run.json").read_text())
        assert record["class_names"] == [str(c) for c in range(CLASSES)]
        assert record["image_shape"] == [32, 32, 1] and record["dataset"] == "shapes5"
        report = (run_dir / "classification_report.txt").read_text()
        assert [line.split()[0] for line in report.splitlines()[2:2 + CLASSES]] == list("01234")
        assert keras.saving.load_model(run_dir / "model.keras").output_shape == (None, CLASSES)
        assert (run_dir / "report.html").is_file() and not (run_dir / "backup").exists()
    assert len(list((tmp_path / "mnist").glob("*_comparison"))) == 1


@pytest.mark.parametrize("shape,model", [((20, 24), "conv_net"), ((20, 24, 3), "le_net"),
                                         ((32, 32, 3), "mlp_one_layer")])
def test_npz_with_class_names_other_sizes_and_colour(tmp_path, shape, model):
    names = ["circle", "square", "star", "moon", "heart"]
    path = write_npz_dataset(tmp_path / "mine" / "toys.npz", shape, names=names)
    data = image_data.load_images(data_dir=path.parent)  # the folder holding one .npz
    assert data.class_names == names and data.image_shape == (*shape[:2], shape[2] if len(shape) > 2 else 1)
    assert data.x_train.dtype == np.float32 and data.x_train.max() <= 1.0
    args = mnist.parse_args(quick_args(tmp_path, "-m", model, "--data-dir", str(path)))
    result = training.train_and_evaluate(models.get_spec(model), data, args)
    assert list(confusion(result.run_dir).index) == names
    assert json.loads((result.run_dir / "run.json").read_text())["class_names"] == names


def test_images_too_small_for_a_model_are_one_line_before_training(tmp_path, capsys):
    folder = write_idx_dataset(tmp_path / "tiny", shape=(10, 12), train=60, test=10)
    assert mnist.main(quick_args(tmp_path / "out", "--data-dir", str(folder), "-m", "mlp_one_layer",
                                 "-m", "conv_net")) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "conv_net cannot read 10x12x1 images" in line and "18x18" in line
    assert not (tmp_path / "out" / "mnist").exists()  # not even the MLP trained first


def _idx_variant(tmp_path, change):
    folder = write_idx_dataset(tmp_path / "bad", train=40, test=10, gz=False)
    return change(folder) or folder


def _truncate(path, keep=-100):
    path.write_bytes(path.read_bytes()[:keep])


def _relabel(folder, split, labels):
    datasets.write_idx(folder / f"{split}-labels-idx1-ubyte", np.asarray(labels, "uint8"))


BAD = {
    "no such folder": (lambda t: t / "nowhere", "nowhere does not exist"),
    "no dataset": (lambda t: (t / "empty").mkdir() or t / "empty", "holds no dataset"),
    "missing test labels": (lambda t: _idx_variant(
        t, lambda f: (f / "t10k-labels-idx1-ubyte").unlink()), "t10k-labels"),
    "counts differ": (lambda t: _idx_variant(t, lambda f: _relabel(f, "train", np.arange(30) % 5)),
                      "train-images-idx3-ubyte holds 40 images but"),
    "test label outside": (lambda t: _idx_variant(t, lambda f: _relabel(f, "t10k", [7] * 10)),
                           "t10k-labels-idx1-ubyte include 7"),
    "labels with a gap": (lambda t: _idx_variant(t, lambda f: _relabel(f, "train", [0, 1, 3, 4] * 10)),
                          "train-labels-idx1-ubyte skip class 2"),
    "truncated images": (lambda t: _idx_variant(t, lambda f: _truncate(f / "train-images-idx3-ubyte")),
                         "train-images-idx3-ubyte is truncated"),
    "truncated header": (lambda t: _idx_variant(t, lambda f: _truncate(f / "t10k-images-idx3-ubyte", 9)),
                         "t10k-images-idx3-ubyte is truncated"),
    "npz wrong keys": (lambda t: np.savez(t / "d.npz", images=np.zeros(3)) or t / "d.npz",
                       "d.npz lacks x_train, y_train, x_test, y_test"),
    "npz pickled": (lambda t: np.savez(t / "p.npz", x_train=np.array([{}], dtype=object), y_train=[0],
                                       x_test=[0], y_test=[0]) or t / "p.npz", "p.npz holds pickled"),
    "npz not a zip": (lambda t: (t / "n.npz").write_text("x") and t / "n.npz", "n.npz is not an .npz"),
    "classes.txt short": (lambda t: write_npz_dataset(t / "c" / "c.npz", (28, 28), train=40, test=10,
                                                      names=["a", "b"]),
                          "classes.txt names 2 classes but the labels hold 5"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_own_data_is_one_line_naming_the_file(tmp_path, case):
    make, expected = BAD[case]
    with pytest.raises(TutorialError) as err:
        image_data.load_images("auto", make(tmp_path))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_an_explicit_folder_is_never_replaced_by_another_dataset(tmp_path, capsys):
    code = exit_code(mnist.main, ["--dataset", "auto", "--data-dir", str(tmp_path / "no"),
                                  "--epochs", "1", "--output-dir", str(tmp_path)])
    result = capsys.readouterr()
    assert code == 2
    assert [line for line in result.err.splitlines() if line.strip()] == [
        f"error: --data-dir {tmp_path / 'no'} does not exist: give a folder of MNIST-format IDX files "
        "or an .npz file"]
    assert "*** dataset" not in result.out and not (tmp_path / "mnist").exists()


def test_limit_too_small_for_the_classes_names_the_flag_and_the_minimum():
    with pytest.raises(TutorialError, match=r"--limit 30 is too small for 10 classes.*use --limit") as err:
        image_data.load_images("digits", limit=30)
    minimum = int(str(err.value).split("use --limit ")[1].split()[0])
    image_data.load_images("digits", limit=minimum)  # the stated minimum works
    with pytest.raises(TutorialError, match="--limit"):
        image_data.load_images("digits", limit=minimum - 1)


@pytest.fixture
def three_steps():
    keras.config.set_max_steps_per_epoch(3)  # what KERAS_MAX_STEPS_PER_EPOCH=3 sets at import
    yield 3
    keras.config.set_max_steps_per_epoch(None)


def test_a_run_limited_by_max_steps_per_epoch_finishes_on_one_set_of_images(idx5, tmp_path, three_steps):
    data = image_data.load_images(data_dir=idx5)
    args = mnist.parse_args(quick_args(tmp_path, "--batch-size", "8", "-m", "mlp_one_layer"))
    result = training.train_and_evaluate(models.get_spec("mlp_one_layer"), data, args)
    assert result.metrics["test_images"] == 3 * 8 < len(data.y_test)
    assert confusion(result.run_dir).to_numpy().sum() == 24


def _interrupted_after_the_last_epoch(data, args, monkeypatch):
    class Killed(Exception):
        pass

    def killed(*_, **__):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(runs.Run, "finish", killed)
        with pytest.raises(Killed):
            training.train_and_evaluate(models.get_spec("mlp_one_layer"), data, args)


def test_resume_finishes_a_run_killed_before_run_json_and_refuses_other_flags(idx5, tmp_path, monkeypatch,
                                                                              capsys):
    data = image_data.load_images(data_dir=idx5)
    argv = quick_args(tmp_path, "--data-dir", str(idx5), "-m", "mlp_one_layer", "--epochs", "2")
    _interrupted_after_the_last_epoch(data, mnist.parse_args(argv), monkeypatch)
    (run_dir,) = (tmp_path / "mnist").glob("*_mlp_one_layer")
    assert not (run_dir / "run.json").exists() and (run_dir / "backup").is_dir()

    assert mnist.main(argv + ["--resume", "--optimizer", "sgd", "--batch-size", "16"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--optimizer adam, --batch-size 32" in line and "--optimizer sgd, --batch-size 16" in line

    assert mnist.main(argv + ["--resume"]) == 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["metrics"]["epochs"] == 2
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == [1, 2]
    assert not (run_dir / "backup").exists()
