"""A run on the learner's own images, used downstream: the service names its classes from
run.json, and filters.py follows one of the run's own test images through the network."""

import json

import numpy as np
import pytest

from cnn import filters
from mnist import mnist
from serving import loading

from .conftest import exit_code

NAMES = ["circle", "square", "star", "cross", "ring"]


def _own_npz(folder, shape=(24, 24, 3), classes=5):
    """A tiny colour dataset: each class a bright band at its own height; classes.txt names them."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 150), ("test", 40)):
        labels = np.arange(n) % classes
        images = rng.integers(0, 40, (n, *shape), dtype="uint8")
        for i, label in enumerate(labels):
            top = label * shape[0] // (classes + 1)
            images[i, top:top + shape[0] // 5] = 220
        arrays[f"x_{split}"], arrays[f"y_{split}"] = images, labels.astype("uint8")
    folder.mkdir(parents=True)
    np.savez(folder / "shapes.npz", **arrays)
    (folder / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return folder


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """One conv_net trained briefly on the own colour images: (run folder, data folder)."""
    root = tmp_path_factory.mktemp("own_run")
    data_dir = _own_npz(root / "mine")
    assert mnist.main(["-m", "conv_net", "--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "32",
                       "--quiet", "--output-dir", str(root / "out")]) == 0
    (run_dir,) = (root / "out" / "mnist").glob("*_conv_net")
    return run_dir, data_dir


def test_service_takes_the_class_names_the_run_recorded(own_run):
    run_dir, _ = own_run
    assert json.loads((run_dir / "run.json").read_text())["class_names"] == NAMES
    served = loading.load_from_path(run_dir)
    assert served.class_names == NAMES
    assert any("class names from run.json" in note for note in served.notes)


def test_labels_file_still_wins_over_run_json(own_run, tmp_path):
    run_dir, _ = own_run
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\nd\ne\n")
    assert loading.load_from_path(run_dir, labels=labels).class_names == list("abcde")


def test_filters_shows_one_of_the_runs_own_images(own_run, tmp_path):
    run_dir, data_dir = own_run
    assert exit_code(filters.main, [str(run_dir), "--index", "3", "--output-dir", str(tmp_path)]) == 0
    (pictures,) = (tmp_path / "cnn").glob("*_filters_*")
    record = json.loads((pictures / "run.json").read_text())
    assert record["data_dir"] == str(data_dir)
    assert record["label"] == NAMES[3]  # test image 3 is class 3 (labels cycle 0..4)
    for picture in ("filters.png", "feature_maps.png"):
        assert (pictures / picture).stat().st_size > 0


def test_filters_with_images_of_another_size_is_one_line(own_run, tmp_path, capsys):
    run_dir, _ = own_run
    code = exit_code(filters.main, [str(run_dir), "--dataset", "digits", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "(24, 24, 3)" in err and "(28, 28, 1)" in err and "--data-dir" in err
    assert not (tmp_path / "cnn").exists()  # nothing written for a refused run


def test_filters_with_a_missing_data_dir_is_one_line(own_run, tmp_path, capsys):
    run_dir, _ = own_run
    code = exit_code(filters.main, [str(run_dir), "--data-dir", str(tmp_path / "gone"),
                                    "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "gone" in err
    assert not (tmp_path / "cnn").exists()
