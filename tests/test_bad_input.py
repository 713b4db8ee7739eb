"""Bad input to every script that reads a model, an image or a run folder: exit code 2,
one ``error:`` line on stderr, no traceback, and nothing half-written in the output folder.

Most cases call the script's ``main(argv)`` in this process (one Keras import for all);
a few start a real process, to show what a learner's terminal gets.
(The churn CSV, ``rnn/forecast.py --csv`` and ``utils.compare`` cases live beside
their chapters: tests/test_mlp.py, tests/test_rnn.py, tests/test_compare.py.)
"""

from __future__ import annotations

import socket
import zipfile

import numpy as np
import pytest
from PIL import Image

from cnn import classify, filters, shapes
from serving import samples, save_load
from utils import diagram, inspect
from utils.quiet import import_keras

keras = import_keras()
BACKEND = keras.backend.backend()


# --- files, made once ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and damaged models, weights and images, by name."""
    folder = tmp_path_factory.mktemp("bad_input")
    made = {}

    def save(name, model):
        model.save(folder / name)
        made[name.split(".")[0]] = folder / name

    layers = keras.layers
    save("conv.keras", keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(4, 3, activation="relu"),
                                         layers.Flatten(), layers.Dense(10, activation="softmax")],
                                        name="small_conv"))
    save("lambda.keras", keras.Sequential([keras.Input((28, 28, 1)), layers.Lambda(lambda x: x * 2.0),
                                           layers.Conv2D(2, 3), layers.Flatten(), layers.Dense(3)],
                                          name="with_lambda"))
    a, b = keras.Input((28, 28, 1)), keras.Input((28, 28, 1))
    joined = layers.Concatenate()([layers.Conv2D(2, 3)(a), layers.Conv2D(2, 3)(b)])
    save("two_inputs.keras", keras.Model([a, b], layers.Dense(2)(layers.Flatten()(joined)), name="two_in"))
    x = keras.Input((28, 28, 1))
    flat = layers.Flatten()(layers.Conv2D(2, 3)(x))
    save("two_outputs.keras", keras.Model(x, [layers.Dense(2)(flat), layers.Dense(3)(flat)], name="two_out"))

    whole = made["conv"].read_bytes()
    for name, content in (("truncated", whole[: len(whole) // 2]), ("empty", b""),
                          ("text", b"this is no model")):
        (folder / f"{name}.keras").write_bytes(content)
        made[name] = folder / f"{name}.keras"
    with zipfile.ZipFile(folder / "other_zip.keras", "w") as archive:
        archive.writestr("notes.txt", "a zip, but not of a model")
    made["other_zip"] = folder / "other_zip.keras"

    weights = folder / "w.weights.h5"
    keras.Sequential([keras.Input((2,)), layers.Dense(1)]).save_weights(weights)
    (folder / "truncated.weights.h5").write_bytes(weights.read_bytes()[:600])
    (folder / "empty.weights.h5").write_bytes(b"")
    made["truncated_weights"], made["empty_weights"] = (folder / "truncated.weights.h5",
                                                        folder / "empty.weights.h5")

    # 12,000 x 10,000 one-bit pixels: a few kilobytes on disk, 120 million pixels decoded
    Image.new("1", (12_000, 10_000)).save(folder / "bomb.png")
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype="uint8")
    Image.fromarray(pixels).save(folder / "photo.jpg", quality=95)
    (folder / "truncated.jpg").write_bytes((folder / "photo.jpg").read_bytes()[:700])
    (folder / "notes.png").write_text("not a picture at all")
    for name in ("bomb", "truncated", "notes"):
        made[f"{name}_image"] = folder / (f"{name}.png" if name != "truncated" else "truncated.jpg")
    made["folder"] = folder
    return made


# --- the cases ------------------------------------------------------------------------------

# (script, arguments with {file} placeholders, what the line must say)
CASES = [
    # every tool that loads a model
    (inspect, ["{truncated}"], "truncated.keras: it is truncated or damaged"),
    (inspect, ["{empty}"], "empty.keras: it is empty (0 bytes)"),
    (inspect, ["{text}"], "text.keras: it is not a zip archive"),
    (inspect, ["{other_zip}"], "other_zip.keras: it is a zip archive but not a Keras model"),
    (inspect, ["{lambda}"], "lambda.keras contains Python code (Lambda layer"),
    (diagram, ["{truncated}"], "truncated.keras: it is truncated"),
    (diagram, ["{lambda}"], "add --unsafe"),
    (filters, ["{truncated}"], "truncated.keras: it is truncated"),
    (filters, ["{lambda}"], "add --unsafe"),
    (filters, ["{two_inputs}"], "has 2 input(s) and 1 output(s)"),
    (filters, ["{two_outputs}"], "has 1 input(s) and 2 output(s)"),
    (save_load, ["--model", "{other_zip}"], "it is a zip archive but not a Keras model"),
    (save_load, ["--model", "{two_outputs}"], "has 1 input(s) and 2 output(s)"),
    (shapes, ["--model-file", "{empty}"], "empty.keras: it is empty"),
    (classify, ["{folder}/photo.jpg", "--weights", "{truncated_weights}"],
     "truncated.weights.h5: it is truncated or damaged"),
    (classify, ["{folder}/photo.jpg", "--weights", "{empty_weights}"], "empty.weights.h5: it is empty"),
    # images
    (inspect, ["{conv}", "--activations", "{bomb_image}"], "claims 12000x10000 = 120,000,000 pixels"),
    (inspect, ["{conv}", "--activations", "{truncated_image}"], "truncated.jpg is damaged or truncated"),
    (inspect, ["{conv}", "--activations", "{notes_image}"], "notes.png is not an image"),
    (classify, ["{bomb_image}", "--weights", "none"], "claims 12000x10000"),
    (classify, ["{truncated_image}", "--weights", "none"], "damaged or truncated"),
    (classify, ["{notes_image}", "--weights", "none"], "notes.png is not an image"),
    # output paths and sizes
    (diagram, ["{conv}", "-o", "{folder}/diagram.txt"], "unknown picture type '.txt'"),
    (diagram, ["{conv}", "-o", "{folder}"], "is a folder"),
    (diagram, ["{conv}", "-o", "{folder}/no/such/diagram.png"], "does not exist"),
    (shapes, ["--input-shape", "100000", "100000", "1"], "give a smaller --input-shape"),
    (samples, ["{folder}/photo.jpg"], "photo.jpg is a file"),
]


def _argv(args, files, out):
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    return [*argv, "--output-dir", str(out), "--backend", BACKEND]


def _written(folder):
    return sorted(str(p) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("script, args, message", CASES,
                         ids=[f"{c[0].__name__.split('.')[-1]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_and_exit_code_2(files, tmp_path, capsys, script, args, message):
    out = tmp_path / "out"
    code = script.main(_argv(args, files, out))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]
    assert "Traceback" not in err
    assert _written(out) == []  # nothing half-written


def test_unsafe_loads_a_model_with_a_lambda_layer(files, tmp_path, capsys):
    assert inspect.main([str(files["lambda"]), "--quiet", "--backend", BACKEND]) == 2
    assert "add --unsafe" in capsys.readouterr().err
    assert inspect.main([str(files["lambda"]), "--quiet", "--unsafe", "--backend", BACKEND]) == 0
    assert "model with_lambda from" in capsys.readouterr().out
    out = tmp_path / "out"
    assert filters.main([str(files["lambda"]), "--unsafe", "--dataset", "digits", "--output-dir", str(out),
                         "--backend", BACKEND]) == 0, capsys.readouterr().err
    (folder,) = (out / "cnn").glob("*_filters_with_lambda")
    assert (folder / "filters.png").is_file() and (folder / "run.json").is_file()


def test_save_load_round_trips_a_trusted_lambda_model(files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--model", str(files["lambda"]), "--output-dir", str(out), "--quiet", "--backend", BACKEND]
    assert save_load.main(argv) == 2 and "add --unsafe" in capsys.readouterr().err
    assert save_load.main([*argv, "--unsafe"]) == 0, capsys.readouterr().err
    (folder,) = (out / "serving").iterdir()
    assert (folder / "model.keras").is_file() and (folder / "run.json").is_file()


def test_models_with_two_inputs_or_outputs_can_still_be_inspected(files, capsys):
    for name in ("two_inputs", "two_outputs"):
        assert inspect.main([str(files[name]), "--quiet", "--backend", BACKEND]) == 0
    assert capsys.readouterr().out.count("parameters:") == 2


def test_the_size_estimate_matches_keras_below_the_limit():
    """The estimate shapes.py refuses with is the count Keras builds."""
    from mnist import models

    spec = models.get_spec("conv_net")
    params, largest = shapes.estimate_size(spec, (64, 48, 1), 10)
    assert params == spec.build((64, 48, 1), 10).count_params()
    assert largest == 62 * 46 * 32  # the first convolution's output
    with pytest.raises(shapes.TutorialError, match="give a smaller --input-shape"):
        shapes.check_fits_in_memory(spec, (64, 48, 1), 10, memory=params * 4 * 3)  # < 4x the weights


def test_coordinator_must_be_an_address(capsys):
    from mnist import mnist

    code = mnist.main(["--coordinator", "not-an-address", "--num-processes", "2", "--backend", BACKEND])
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines() == [
        "error: --coordinator 'not-an-address' is not HOST:PORT (e.g. 127.0.0.1:12345 or "
        "node0.example.org:12345, a port from 1 to 65535)"], err


# --- as a learner's terminal sees it -------------------------------------------------------

def test_truncated_model_from_the_command_line(run, files):
    result = run("-m", "utils.inspect", str(files["truncated"]))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: could not load {files['truncated']}: it is truncated or damaged "
        f"({files['truncated'].stat().st_size:,} bytes, its zip directory is missing); train the model "
        "again, or copy the file again if it came from elsewhere"]


def test_a_lonely_process_gives_up_after_the_join_timeout(run, tmp_path):
    if BACKEND != "jax":
        pytest.importorskip("jax")
    with socket.socket() as probe:  # a free port, so nothing answers on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run("mnist/mnist.py", "--backend", "jax", "--num-processes", "2", "--process-id", "0",
                 "--coordinator", f"127.0.0.1:{port}", "--join-timeout", "2", "--dataset", "digits",
                 "--limit", "300", "--epochs", "1", "--output-dir", str(tmp_path / "out"), timeout=240)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "waited 2 s for the other 1 process(es) to join" in errors[0]
    assert "Traceback" not in result.stderr
    assert _written(tmp_path / "out") == []
