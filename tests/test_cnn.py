"""The CNN chapter: shape arithmetic, ImageNet classification, transfer learning."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cnn import applications, classify, filters, folder_transfer, shapes, transfer
from cnn.images import load_image
from mnist import models
from utils.errors import ImageReadError, ShapeMismatchError, TutorialError, WeightsNotAvailableError

# --- shapes.py -------------------------------------------------------------------------


def test_conv_net_shapes_and_parameters_follow_the_formulas():
    rows = shapes.analyse(models.build_model("conv_net"))
    assert [r.output_shape for r in rows] == [(26, 26, 32), (13, 13, 32), (11, 11, 64), (5, 5, 64),
                                              (3, 3, 64), (576,), (64,), (10,)]
    assert [r.params for r in rows] == [320, 0, 18_496, 0, 36_928, 0, 36_928, 650]
    assert rows[0].params_working == "3*3*1*32 + 32 = 320"
    assert rows[1].shape_working == "(26 - 2) // 2 + 1 = 13"


def test_le_net_same_padding_keeps_28_pixels():
    rows = shapes.analyse(models.build_model("le_net"))
    assert rows[0].output_shape == (28, 28, 6) and rows[0].shape_working == "ceil(28 / 1) = 28"
    assert rows[2].output_shape == (10, 10, 16) and rows[2].params == 5 * 5 * 6 * 16 + 16
    assert sum(r.params for r in rows) == 61_706


@pytest.mark.parametrize("name", list(models.REGISTRY))
def test_every_registry_model_agrees_with_keras(name):
    model = models.build_model(name)
    rows = shapes.analyse(model)
    shapes.check(rows, model)  # raises on any disagreement
    assert all(r.agrees for r in rows)
    assert sum(r.non_trainable for r in rows) == sum(
        int(np.prod(w.shape)) for w in model.non_trainable_weights)


@pytest.mark.parametrize("size,kernel,stride,padding,expected", [
    (28, 3, 1, "valid", 26), (13, 2, 2, "valid", 6), (11, 2, 2, "valid", 5), (28, 5, 1, "same", 28),
    (7, 3, 2, "same", 4), (10, 3, 1, "valid", 8)])
def test_conv_length(size, kernel, stride, padding, expected):
    assert shapes.conv_length(size, kernel, stride, padding) == expected


def test_a_wrong_formula_is_caught(monkeypatch):
    model = models.build_model("conv_net")
    monkeypatch.setattr(shapes, "conv_length", lambda n, k, s, p, d=1: (n - k) // s)  # off by one
    rows = shapes.analyse(model)
    with pytest.raises(ShapeMismatchError, match=r"layer conv_1.*26x26x32"):
        shapes.check(rows, model)


def test_shapes_script_prints_the_table_and_checks(run):
    result = run("cnn/shapes.py", "-m", "le_net", "--input-shape", "32", "32", "1")
    assert result.returncode == 0, result.stderr
    assert "(32 - 2) // 2 + 1 = 16" in result.stdout  # LeNet's original 32x32 input
    assert "MISMATCH" not in result.stdout and "agrees with Keras" in result.stdout


def test_shapes_errors_are_one_line(capsys):
    assert shapes.main(["-m", "vgg99"]) == 2
    assert shapes.main(["--input-shape", "8", "8", "1"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "unknown model 'vgg99'" in errors[0] and "8x8x1" in errors[1]


# --- images and classify.py ------------------------------------------------------------


def test_images_of_any_mode_become_rgb_squares(tmp_path):
    Image.fromarray(np.full((30, 60), 100, "uint8"), "L").save(tmp_path / "grey.png")
    rgba = np.zeros((40, 20, 4), "uint8")  # fully transparent black: should turn white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    Image.fromarray(np.arange(50 * 50, dtype="uint16").reshape(50, 50)).save(tmp_path / "deep.png")
    grey, _ = load_image(tmp_path / "grey.png", 32)
    clear, _ = load_image(tmp_path / "clear.png", 32)
    deep, _ = load_image(tmp_path / "deep.png", 32)
    assert grey.shape == clear.shape == deep.shape == (32, 32, 3) and grey.dtype == np.float32
    assert np.all(grey == 100) and np.all(clear == 255)
    assert deep.min() < 20 and deep.max() > 235  # 16-bit values stretched onto 0-255


@pytest.mark.parametrize("content,message", [(b"not a picture", "not an image"),
                                             (None, "no such file")])
def test_unreadable_images_are_named(tmp_path, content, message):
    path = tmp_path / "photo.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message):
        load_image(path, 32)


@pytest.fixture
def photo_folder(tmp_path, shared_data):
    """cat.jpg and dog.jpg, a greyscale and an RGBA image, a text file and a truncated JPEG."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.tile(np.arange(64, dtype="uint8"), (48, 1)), "L").save(folder / "grey.png")
    Image.fromarray(np.full((20, 30, 4), 128, "uint8"), "RGBA").save(folder / "rgba.png")
    (folder / "notes.jpg").write_text("shopping list")
    (folder / "cut.jpg").write_bytes((shared_data / "cat.jpg").read_bytes()[:2000])
    return [shared_data / "cat.jpg", shared_data / "dog.jpg", folder / "grey.png", folder / "rgba.png",
            folder / "notes.jpg", folder / "cut.jpg"]


def test_classify_prints_top5_per_image_and_skips_bad_files(capsys, photo_folder, tmp_path):
    code = classify.main([*map(str, photo_folder), "-m", "mobilenet_v2", "--weights", "none",
                          "--output-dir", str(tmp_path / "out")])
    assert code == 2  # some input was bad, but the rest was classified
    out, err = capsys.readouterr()
    skipped = err.strip().splitlines()
    assert len(skipped) == 2 and all(line.startswith("error: skipped") for line in skipped)
    assert "notes.jpg is not an image" in skipped[0] and "cut.jpg is damaged or truncated" in skipped[1]
    for name in ("cat.jpg", "dog.jpg", "grey.png", "rgba.png"):
        assert f"\n{name} " in out
    (folder,) = (tmp_path / "out" / "cnn").glob("*_classify_mobilenet_v2")
    table = pd.read_csv(folder / "predictions.csv")
    assert len(table) == 4 * 5 and list(table["rank"][:5]) == [1, 2, 3, 4, 5]
    for _, top in table.groupby("image"):
        probs = top["probability"].to_numpy()
        assert np.all(np.diff(probs) <= 0) and 0 < probs.sum() <= 1
    with Image.open(folder / "predictions_mobilenet_v2.png") as figure:
        assert figure.size[1] > 4 * 150  # one row per classified image
    record = json.loads((folder / "run.json").read_text())
    assert len(record["skipped"]) == 2 and record["weights"] == "none"


def test_offline_without_cached_weights_names_the_file(capsys, shared_data, tmp_path):
    code = classify.main([str(shared_data / "cat.jpg"), "-m", "resnet50", "--output-dir", str(tmp_path)])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "resnet50_weights_tf_dim_ordering_tf_kernels.h5" in line
    assert "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" in line
    assert str(applications.cache_dirs()[0]) in line
    assert not (tmp_path / "cnn").exists()  # nothing was started


def test_cached_weights_are_found_without_downloading(monkeypatch):
    arch = applications.ARCHITECTURES["mobilenet"]
    assert arch.weights_file(include_top=False, size=160) == "mobilenet_1_0_160_tf_no_top.h5"
    target = applications.cache_dirs()[0] / arch.weights_file()
    target.parent.mkdir(parents=True)
    target.write_bytes(b"stand-in")  # KERAS_HOME is a temporary folder in tests
    assert applications.resolve_weights(arch, "imagenet") == "imagenet"
    assert applications.resolve_weights(arch, "none") is None


def test_a_weights_file_is_loaded_or_rejected(tmp_path, shared_data):
    arch = applications.ARCHITECTURES["mobilenet"]
    model = arch.constructor(weights=None, input_shape=(32, 32, 3), include_top=False)
    model.save_weights(tmp_path / "good.weights.h5")
    reloaded = applications.build(arch, str(tmp_path / "good.weights.h5"), input_shape=(32, 32, 3),
                                  include_top=False)
    np.testing.assert_array_equal(reloaded.get_weights()[0], model.get_weights()[0])
    (tmp_path / "bad.h5").write_text("no weights here")
    with pytest.raises(WeightsNotAvailableError, match="cannot load"):
        applications.build(arch, str(tmp_path / "bad.h5"), input_shape=(32, 32, 3), include_top=False)
    with pytest.raises(WeightsNotAvailableError, match="does not exist"):
        applications.resolve_weights(arch, str(tmp_path / "missing.h5"))


def test_random_weights_never_try_to_download_the_class_index(run, shared_data, tmp_path):
    # Downloads allowed, as for a learner, but nothing cached: --weights none must not even try.
    result = run("cnn/classify.py", str(shared_data / "cat.jpg"), "--weights", "none",
                 "--output-dir", str(tmp_path / "out"),
                 env={"KERAS_TUTORIAL_OFFLINE": "0", "KERAS_HOME": str(tmp_path / "keras_home")})
    assert result.returncode == 0, result.stderr
    assert "Downloading" not in result.stdout + result.stderr
    assert "class 0" in result.stdout and applications.CLASS_INDEX_FILE in result.stdout


def test_a_cached_class_index_names_the_classes_with_random_weights(monkeypatch, capsys, shared_data,
                                                                    tmp_path):
    monkeypatch.setenv("KERAS_TUTORIAL_OFFLINE", "0")
    calls = []
    monkeypatch.setattr(applications.keras.utils, "get_file", lambda *a, **k: calls.append(a))
    index = applications.cache_dirs()[0] / applications.CLASS_INDEX_FILE
    index.parent.mkdir(parents=True)
    index.write_text(json.dumps({str(i): [f"n{i:08d}", f"thing_{i}"] for i in range(1000)}))
    assert classify.main([str(shared_data / "dog.jpg"), "--weights", "none", "--top", "3",
                          "--output-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "thing_" in out and "class 0" not in out and "not found" not in out
    assert calls == []  # read from the cache, nothing fetched
    (folder,) = (tmp_path / "out" / "cnn").iterdir()
    record = json.loads((folder / "run.json").read_text())
    assert len(record["predictions"]) == 3  # the top 3 classes of the one image
    assert record["backend"] == keras.backend.backend()


def test_classify_rejects_unknown_models_and_all_bad_images(capsys, tmp_path):
    (tmp_path / "a.txt").write_text("x")
    assert classify.main([str(tmp_path / "a.txt"), "-m", "alexnet", "--weights", "none"]) == 2
    assert classify.main([str(tmp_path / "a.txt"), "--weights", "none",
                          "--output-dir", str(tmp_path)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert "unknown model 'alexnet'" in errors[0] and "no image could be read" in errors[1]
    assert not list((tmp_path / "cnn").glob("*"))  # no empty run folder left behind


def test_top_k_orders_and_names():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    assert classify.top_k(probs, 2, ["a", "b", "c"]) == [[("b", 0.6), ("c", 0.3)], [("a", 0.5), ("c", 0.3)]]
    assert classify.top_k(probs, 1, None)[0] == [("class 1", 0.6)]


# --- transfer.py -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_task():
    return transfer.load_data(transfer.TASKS["digits_split"], seed=0)


def test_target_classes_are_renumbered_and_disjoint(digits_task):
    assert set(np.unique(digits_task["source_train"].y)) == set(range(5))
    assert set(np.unique(digits_task["target_pool"].y)) == set(range(5))
    picked = transfer.few_labels(digits_task["target_pool"], 7, seed=1)
    assert np.all(np.bincount(picked.y) == 7)
    labelled, validation = transfer.few_labels(digits_task["target_pool"], 7, seed=1, validation_per_class=4)
    np.testing.assert_array_equal(labelled.x, picked.x)  # the same draw, with or without validation
    assert np.all(np.bincount(validation.y) == 4)
    flat = lambda split: {image.tobytes() for image in split.x}  # noqa: E731
    assert not flat(labelled) & flat(validation)  # no validation image is a training image
    with pytest.raises(TutorialError, match="more than"):
        transfer.few_labels(digits_task["target_pool"], 10_000, seed=1)


def test_frozen_base_stays_put_and_fine_tuning_moves_only_the_top(digits_task):
    source = models.build_model("conv_net", classes=5)  # trained or not, its base must be copied
    model, n_base = transfer.transferred(source, "conv_net", 5)
    labelled = transfer.few_labels(digits_task["target_pool"], 5, seed=0)
    transfer._fit_steps(model, labelled, 10, 1e-3, 32, seed=0)
    convs = [i for i in range(n_base) if model.layers[i].weights]
    for i in convs:  # the head trained, the base did not
        np.testing.assert_array_equal(model.layers[i].get_weights()[0], source.layers[i].get_weights()[0])
    assert transfer.unfreeze_top(model, n_base, 1) == [model.layers[convs[-1]].name]
    transfer._fit_steps(model, labelled, 10, 1e-4, 32, seed=0)
    np.testing.assert_array_equal(model.layers[convs[0]].get_weights()[0],
                                  source.layers[convs[0]].get_weights()[0])
    assert not np.array_equal(model.layers[convs[-1]].get_weights()[0],
                              source.layers[convs[-1]].get_weights()[0])


def test_keep_best_restores_the_best_checkpoint():
    model = models.build_model("conv_net", classes=5)
    keep = transfer.KeepBest(best=0.3)
    keep.set_model(model)
    first = [w.copy() for w in model.get_weights()]
    keep.on_epoch_end(0, {"val_accuracy": 0.6})
    model.set_weights([w + 1 for w in first])
    keep.on_epoch_end(1, {"val_accuracy": 0.5})  # worse: not kept
    keep.on_train_end()
    assert keep.best == 0.6
    np.testing.assert_array_equal(model.get_weights()[0], first[0])
    never = transfer.KeepBest(best=0.9)  # nothing beats the accuracy to beat: weights untouched
    never.set_model(model)
    model.set_weights([w + 1 for w in first])
    never.on_epoch_end(0, {"val_accuracy": 0.8})
    never.on_train_end()
    np.testing.assert_array_equal(model.get_weights()[0], first[0] + 1)


def test_summary_gain_spread_is_that_of_the_paired_differences():
    results = pd.DataFrame({"labels_per_class": [10] * 3 + [50] * 2, "train_images": [50] * 3 + [250] * 2,
                            "scratch": [0.5, 0.7, 0.6, 0.8, 0.8], "frozen_base": [0.6, 0.8, 0.7, 0.8, 0.8],
                            "fine_tuned": [0.6, 0.8, 0.7, 0.79, 0.81]})
    results["gain"] = results["fine_tuned"] - results["scratch"]
    summary = transfer.summarise(results)
    first = summary.iloc[0]
    assert first["gain"] == pytest.approx(0.1) and first["gain_std"] == pytest.approx(0.0, abs=1e-12)
    assert first["scratch_std"] > 0.08  # each method varies a lot; their difference does not
    assert (first["wins"], first["draws"]) == (3, 3) and summary.iloc[1]["wins"] == 1
    table = transfer.format_summary(summary, 3)
    assert "+10.0 ±0.0" in table and "3/3" in table


def test_transfer_quick_run_writes_table_plot_and_run_folder(tmp_path, capsys):
    code = transfer.main(["--quick", "--quiet", "--steps", "20", "--labels-per-class", "3",
                          "--output-dir", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "labels/class" in out and "from scratch" in out
    (folder,) = (tmp_path / "cnn").glob("*_transfer_digits_split")
    summary = pd.read_csv(folder / "summary.csv")
    assert list(summary["labels_per_class"]) == [3] and int(summary["train_images"][0]) == 15
    for column in ("scratch", "frozen_base", "fine_tuned"):
        assert 0.0 <= summary[column][0] <= 1.0
    for name in ("transfer.png", "accuracy.png", "history.csv", "model.keras", "results.csv"):
        assert (folder / name).is_file(), name
    assert list(pd.read_csv(folder / "results.csv")["gain"].round(6)) == list(
        (summary["fine_tuned"] - summary["scratch"]).round(6))
    record = json.loads((folder / "run.json").read_text())
    assert record["metrics"]["smallest_budget"] == 3
    # Twice chance (5 classes): the source task learned, and so did its transfer (the backend
    # matrix's checks, applied here on this process's backend).
    assert record["metrics"]["source_val_accuracy"] > 2 / 5
    assert record["metrics"]["fine_tuned_at_smallest"] > 2 / 5
    assert record["backend"] == keras.backend.backend()
    assert {"gain_std_at_smallest", "wins_at_smallest"} <= set(record["metrics"])


@pytest.fixture
def image_folder(tmp_path):
    """Two classes of small generated photos, one of them greyscale."""
    rng = np.random.default_rng(0)
    for name, channel in (("red", 0), ("blue", 2)):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 60, (24, 30, 3), dtype="uint8")
            pixels[..., channel] = 220
            Image.fromarray(pixels).save(tmp_path / "photos" / name / f"{i}.png")
    Image.fromarray(np.full((20, 20), 90, "uint8"), "L").save(tmp_path / "photos" / "red" / "grey.png")
    return tmp_path / "photos"


def test_mobilenet_v2_fine_tunes_on_an_image_folder(image_folder, tmp_path, capsys):
    code = transfer.main(["--base", "mobilenet_v2", "--images", str(image_folder), "--weights", "none",
                          "--image-size", "32", "--epochs", "1", "--fine-tune-layers", "3", "--quiet",
                          "--output-dir", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    (folder,) = (tmp_path / "out" / "cnn").glob("*_transfer_mobilenet_v2")
    history = pd.read_csv(folder / "history.csv")
    assert list(history["phase"]) == ["head", "fine-tune"]
    record = json.loads((folder / "run.json").read_text())
    assert record["class_names"] == ["blue", "red"] and record["images_per_class"] == {"blue": 5, "red": 6}


def test_image_folder_errors(image_folder, tmp_path, capsys):
    (image_folder / "red" / "broken.jpg").write_text("not a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        folder_transfer.check_folder(image_folder)
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(TutorialError, match="at least two sub-folders"):
        folder_transfer.check_folder(tmp_path / "one")
    assert transfer.main(["--images", str(image_folder)]) == 2  # needs --base mobilenet_v2
    assert transfer.main(["--base", "mobilenet_v2", "--images", str(image_folder),
                          "--image-size", "100"]) == 2  # no ImageNet weights for 100x100
    assert transfer.main(["--base", "mobilenet_v2", "--images", str(image_folder)]) == 2  # offline
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "--base mobilenet_v2" in errors[0] and "96, 128" in errors[1]
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5" in errors[2]


# --- filters.py ------------------------------------------------------------------------


def test_filters_and_feature_maps_of_a_run_folder(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    model = models.build_model("conv_net")
    model.save(folder / "model.keras")
    (folder / "run.json").write_text(json.dumps({"dataset": "digits"}))
    out_dir = tmp_path / "out"
    assert filters.main([str(folder), "--index", "3", f"--output-dir={out_dir}"]) == 0  # the = form
    out = capsys.readouterr().out
    (written,) = (out_dir / "cnn").glob("*_filters_conv_net")  # a run folder of its own
    record = json.loads((written / "run.json").read_text())
    assert record["dataset"] == "digits" and record["index"] == 3
    assert not (folder / "filters.png").exists()  # the training run is left as it was
    folder = written
    # Layer names carry a per-process counter, so read the third one's from the model.
    third = [layer.name for layer in model.layers if "conv" in layer.name][2]
    assert third in out and "3x3x64" in out  # the third convolution's maps
    with Image.open(folder / "filters.png") as picture:
        assert picture.size[0] > 300
    assert (folder / "feature_maps.png").is_file()


def test_filters_errors(tmp_path, capsys):
    models.build_model("mlp_one_layer").save(tmp_path / "mlp.keras")
    assert filters.main([str(tmp_path / "mlp.keras"), "--dataset", "digits"]) == 2
    assert filters.main([str(tmp_path / "nowhere")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert "no convolutional layer" in errors[0] and "no such file or folder" in errors[1]
