"""utils.inspect (layers, weights, activations of a saved model) and utils.diagram."""

import sys

import numpy as np
import pytest
from PIL import Image

from mnist import mnist, models
from mnist.data import ImageData
from utils import diagram, inspect
from utils.errors import ImageReadError, ModelLoadError, ShapeMismatchError, TutorialError
from utils.quiet import import_keras

from .conftest import exit_code

keras = import_keras()

CONV_NET_KERNELS = [(3, 3, 1, 32), (3, 3, 32, 64), (3, 3, 64, 64), (576, 64), (64, 10)]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder as the MNIST chapter leaves it, holding an untrained conv_net."""
    folder = tmp_path_factory.mktemp("run") / "20260101-000000_conv_net"
    folder.mkdir()
    models.build_model("conv_net").save(folder / "model.keras")
    return folder


@pytest.fixture
def photo(tmp_path):
    """A colour picture of the wrong size with an alpha channel: nothing like MNIST."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(45, 60, 4), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def test_layers_and_weights_of_a_saved_conv_net(run_folder):
    model, file = inspect.load_model(run_folder)
    assert file.name == "model.keras"
    layers = inspect.describe_layers(model)
    assert [row["class"] for row in layers][:3] == ["Conv2D", "MaxPooling2D", "Conv2D"]
    assert layers[0]["input_shape"] == (None, 28, 28, 1)
    assert layers[0]["output_shape"] == (None, 26, 26, 32)
    assert layers[-1]["output_shape"] == (None, 10) and layers[-1]["activation"] == "softmax"

    weights = inspect.weight_stats(model)
    kernels = [row["shape"] for row in weights if row["weight"].endswith("kernel")]
    assert kernels == CONV_NET_KERNELS
    assert sum(row["count"] for row in weights) == model.count_params() == 93_322
    bias = next(row for row in weights if row["weight"].endswith("bias"))
    assert bias["min"] == bias["max"] == 0.0  # Keras starts biases at zero
    kernel = weights[0]
    assert kernel["min"] < kernel["mean"] < kernel["max"] and kernel["std"] > 0

    counts = inspect.parameter_counts(model)
    assert counts == {"trainable": 93_322, "frozen": 0, "statistic": 0, "non_trainable": 0,
                      "total": 93_322}


def test_frozen_layers_and_batch_norm_statistics_are_counted_apart():
    model = models.build_model("conv_net_batch_norm")
    model.layers[0].trainable = False  # the first convolution: 3*3*1*32 + 32 = 320
    counts = inspect.parameter_counts(model)
    assert counts["frozen"] == 320
    assert counts["statistic"] == 2 * (32 + 64)  # moving mean and variance of both BN layers
    assert counts["trainable"] == 93_706 - 320 - 192
    assert counts["total"] == model.count_params() == 93_706
    kinds = {row["weight"]: row["kind"] for row in inspect.weight_stats(model)}
    conv, norm = model.layers[0].name, model.layers[2].name
    assert kinds[f"{conv}/kernel"] == kinds[f"{conv}/bias"] == "frozen"
    assert kinds[f"{norm}/gamma"] == "trainable" and kinds[f"{norm}/moving_mean"] == "statistic"

    model.layers[2].trainable = False  # a frozen batch norm: gamma and beta join the frozen
    counts = inspect.parameter_counts(model)
    assert counts["frozen"] == 320 + 64 and counts["statistic"] == 192


def test_any_image_becomes_one_mnist_input(photo, run_folder):
    model, _ = inspect.load_model(run_folder)
    x, note = inspect.image_input(model, photo)
    assert x.shape == (1, 28, 28, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert "60x45 RGBA -> 28x28 grayscale" in note
    inverted, _ = inspect.image_input(model, photo, invert=True)
    np.testing.assert_allclose(inverted, 1.0 - x, atol=1e-6)

    flat, note = inspect.image_input(models.build_model("mlp_one_layer"), photo)
    assert flat.shape == (1, 784) and "flattened to 784" in note


def test_activation_statistics_for_one_image(photo, run_folder):
    model, _ = inspect.load_model(run_folder)
    x, _ = inspect.image_input(model, photo)
    rows = inspect.activation_stats(model, x)
    assert [r["layer"] for r in rows] == [layer.name for layer in model.layers]
    assert rows[0]["shape"] == (1, 26, 26, 32) and rows[-1]["shape"] == (1, 10)
    assert rows[0]["activation"] == "relu" and rows[0]["min"] >= 0.0
    assert 0.0 <= rows[0]["zeros"] <= 1.0
    assert rows[-1]["mean"] == pytest.approx(0.1, abs=1e-5)  # ten softmax outputs sum to 1

    # A relu layer whose every unit is pushed below zero outputs nothing but zeros.
    first = model.layers[0]
    kernel, bias = first.get_weights()
    first.set_weights([np.zeros_like(kernel), np.full_like(bias, -1.0)])
    dead = inspect.activation_stats(model, x)[0]
    assert dead["zeros"] == 1.0 and dead["max"] == 0.0


def test_errors_name_what_is_wrong(tmp_path, run_folder):
    with pytest.raises(ModelLoadError, match="no such file or folder"):
        inspect.load_model(tmp_path / "missing")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ModelLoadError, match="no model.keras or best.keras in"):
        inspect.load_model(tmp_path / "empty_run")
    model, _ = inspect.load_model(run_folder)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    with pytest.raises(ImageReadError, match="broken.png"):
        inspect.image_input(model, broken)
    with pytest.raises(ImageReadError, match="nothing.png: no such file"):
        inspect.image_input(model, tmp_path / "nothing.png")
    xor_like = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    Image.new("L", (8, 8)).save(tmp_path / "small.png")
    with pytest.raises(ShapeMismatchError, match=r"\(2,\)"):
        inspect.image_input(xor_like, tmp_path / "small.png")
    with pytest.raises(TutorialError, match="no layer named 'conv9'"):
        inspect.check_layer_names(model, ["conv9"])


def test_command_prints_the_tables_and_saves_them(run_folder, photo, tmp_path, capsys):
    code = inspect.main([str(run_folder), "--activations", str(photo), "--save",
                         "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "parameters: 93,322 total = 93,322 trainable + 0 non-trainable" in out
    for shape in CONV_NET_KERNELS:
        assert str(shape) in out
    assert "activations for image photo.png" in out
    saved = next((tmp_path / "inspect").iterdir())
    assert {p.name for p in saved.iterdir()} == {"layers.csv", "weights.csv", "activations.csv"}
    assert "(3, 3, 1, 32)" in (saved / "weights.csv").read_text()


def test_command_shows_only_the_chosen_layers(run_folder, capsys):
    model, _ = inspect.load_model(run_folder)
    dense = model.layers[-1].name
    assert inspect.main([str(run_folder / "model.keras"), "--layer", dense]) == 0
    out = capsys.readouterr().out
    assert f"{dense}/kernel" in out and "(64, 10)" in out
    assert "(3, 3, 1, 32)" not in out
    assert inspect.main([str(run_folder), "--layer", "nonsense"]) == 2
    assert "no layer named 'nonsense'" in capsys.readouterr().err


def test_bad_path_is_one_line_and_exit_code_2(tmp_path, capsys):
    # in-process; tests/test_bad_input.py runs `python -m utils.inspect` in a real process
    assert exit_code(inspect.main, [str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: no such file or folder: {tmp_path / 'nowhere'}"]


# --- diagrams -------------------------------------------------------------------------------

def test_diagram_is_a_small_png(tmp_path, capsys):
    if diagram.drawing_tools_missing():
        pytest.skip(f"{diagram.drawing_tools_missing()} missing: cannot draw models here")
    path = diagram.plot_model_png(models.build_model("conv_net"), tmp_path / "model.png")
    assert path == tmp_path / "model.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 5_000 < len(data) < 150_000


def test_diagram_without_pydot_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pydot", None)  # makes `import pydot` fail
    assert diagram.plot_model_png(models.build_model("conv_net"), tmp_path / "model.png") is None
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "pip install pydot" in out[0] and "apt-get install graphviz" in out[0]
    assert not (tmp_path / "model.png").exists()


def _report_inputs(folder):
    """What mnist.training.write_run_report is handed, for a tiny untrained run."""
    from utils.runs import RunResult

    models.build_model("le_net").save(folder / "model.keras")
    images = np.zeros((2, 28, 28, 1), "float32")
    labels = np.zeros(2, "int64")
    data = ImageData("digits", images, labels, images, labels, images, labels, list("0123456789"))
    args = mnist.parse_args(["--epochs", "1", "--output-dir", str(folder)])
    return RunResult(folder, None, {"test_accuracy": 0.5}), models.get_spec("le_net"), data, args


@pytest.mark.parametrize("tools", ["present", "missing"])
def test_run_report_shows_the_diagram_when_it_can_be_drawn(tools, tmp_path, monkeypatch):
    if tools == "missing":
        monkeypatch.setitem(sys.modules, "pydot", None)
    elif diagram.drawing_tools_missing():
        pytest.skip(f"{diagram.drawing_tools_missing()} missing: cannot draw models here")
    result, spec, data, args = _report_inputs(tmp_path)
    page = mnist.training.write_run_report(result, spec, data, args, "summary", "report").read_text()
    assert ("Model diagram" in page) == (tools == "present")
    assert (tmp_path / "model.png").is_file() == (tools == "present")
