"""Find and load a saved Keras model: from a ``.keras`` file or a run folder.

Every tool that reads a model another chapter saved (the inspector, the
diagram, the feature-map plots, the server, the save/load demo, the churn
predictor) goes through these functions, so a wrong path or an unreadable file
gives the same one-line message everywhere, naming the file.

A ``.keras`` file is a zip archive holding ``config.json`` (the architecture),
``metadata.json`` and ``model.weights.h5``. It is checked before Keras is
imported: an empty file, a file cut short by an interrupted copy, something
that is not a zip at all, or a zip of something else each get their own line,
so a mistyped path fails at once.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from utils.errors import ModelLoadError

#: What a run folder holds, preferred first (the final model, then the best
#: checkpoint a chapter keeps while training).
MODEL_FILES = ("model.keras", "best.keras")
#: What every archive written by ``model.save("x.keras")`` contains.
KERAS_MEMBERS = ("config.json", "metadata.json")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
#: Added to the refusal of a model with Python code in it.
UNSAFE_ADVICE = "if you trust whoever made the file, add --unsafe"


def add_path_argument(parser) -> None:
    """The positional ``path`` argument of a tool that reads one saved model."""
    parser.add_argument("path", type=Path,
                        help="a .keras file, or a run folder holding model.keras (or best.keras)")


def add_unsafe_argument(parser) -> None:
    """``--unsafe``: let a model file with Lambda layers load (their code runs)."""
    parser.add_argument("--unsafe", action="store_true",
                        help="load a model holding Lambda layers, whose Python code runs on loading; "
                             "only for files you trust")


def find_model_file(path: str | Path) -> Path:
    """The ``.keras`` (or legacy ``.h5``) file that ``path`` is, or that the run folder ``path`` holds."""
    path = Path(path)
    if path.is_dir():
        for name in MODEL_FILES:
            if (path / name).is_file():
                return path / name
        if (path / "saved_model.pb").is_file():
            raise ModelLoadError(f"{path} is a TensorFlow SavedModel, made for TF Serving; give the "
                                 ".keras file it was exported from")
        raise ModelLoadError(f"no {' or '.join(MODEL_FILES)} in {path}: give a run folder that "
                             "finished training, or a .keras file")
    if path.is_file():
        if path.name.endswith(".weights.h5"):
            raise ModelLoadError(f"{path} holds weights only, no architecture: give a .keras file")
        if path.suffix not in (".keras", ".h5", ".hdf5"):
            raise ModelLoadError(f"{path} is not a Keras model file: expected .keras (or legacy .h5)")
        return path
    raise ModelLoadError(f"no such file or folder: {path}")


def _retrain_hint() -> str:
    return "train the model again, or copy the file again if it came from elsewhere"


def check_model_file(file: str | Path) -> dict | None:
    """Check that ``file`` is a whole ``.keras`` archive (or an HDF5 file) before Keras reads it.

    Returns the architecture from the archive's ``config.json`` (``None`` for
    ``.h5``); raises :class:`ModelLoadError` naming the file and the problem.
    """
    file = Path(file)
    try:
        size = file.stat().st_size
        with open(file, "rb") as handle:
            head = handle.read(8)
    except OSError as err:
        raise ModelLoadError(f"could not load {file}: {err.strerror or err}") from None
    if size == 0:
        raise ModelLoadError(f"could not load {file}: it is empty (0 bytes); {_retrain_hint()}")
    if file.suffix in (".h5", ".hdf5"):
        if not head.startswith(HDF5_SIGNATURE):
            raise ModelLoadError(f"could not load {file}: it is not an HDF5 file, so not a legacy .h5 "
                                 f"model; {_retrain_hint()}")
        return None
    if not zipfile.is_zipfile(file):
        if head.startswith(ZIP_SIGNATURE):
            raise ModelLoadError(f"could not load {file}: it is truncated or damaged ({size:,} bytes, "
                                 f"its zip directory is missing); {_retrain_hint()}")
        what = "an HDF5 file (rename it to .h5)" if head.startswith(HDF5_SIGNATURE) else "not a zip archive"
        raise ModelLoadError(f"could not load {file}: it is {what}, and a .keras model is a zip "
                             "archive written by model.save()")
    try:
        with zipfile.ZipFile(file) as archive:
            names = set(archive.namelist())
            missing = [m for m in KERAS_MEMBERS if m not in names]
            if missing:
                raise ModelLoadError(f"could not load {file}: it is a zip archive but not a Keras model "
                                     f"(no {' or '.join(missing)}); give a file written by model.save()")
            config = json.loads(archive.read("config.json"))
    except ModelLoadError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"could not load {file}: it is damaged ({' '.join(str(err).split())[:120]}); "
                             f"{_retrain_hint()}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"could not load {file}: its config.json does not describe a model; "
                             f"{_retrain_hint()}")
    return config


def lambda_layers(config) -> list[str]:
    """Names of the Lambda layers anywhere in a model's architecture (nested models too)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                found.append(str((node.get("config") or {}).get("name", "lambda")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def load_model_file(file: str | Path, *, safe_mode: bool = True, compile: bool = False,
                    advice: str = UNSAFE_ADVICE):
    """``keras.saving.load_model`` with its failures turned into one-line errors naming ``file``.

    Tools that only predict or inspect need no optimizer, so by default the
    model comes back uncompiled. ``advice`` ends the refusal of a model with
    Lambda layers in safe mode (what the calling script offers instead).
    """
    config = check_model_file(file)  # before importing Keras, so a broken file fails at once
    if safe_mode and config is not None:
        lambdas = lambda_layers(config)
        if lambdas:
            raise ModelLoadError(f"{file} contains Python code (Lambda layer {', '.join(lambdas)}), "
                                 f"which Keras does not run in safe mode; {advice}")
    from utils.quiet import import_keras

    keras = import_keras()
    try:
        return keras.saving.load_model(file, compile=compile, safe_mode=safe_mode)
    except Exception as err:  # Keras raises ValueError, OSError, KeyError, zipfile errors...
        text = " ".join(str(err).split())
        if "lambda" in text.lower() and "safe_mode" in text:
            raise ModelLoadError(f"{file} contains Python code (a Lambda layer), which Keras does not "
                                 f"run in safe mode; {advice}") from None
        raise ModelLoadError(f"could not load {file} ({type(err).__name__}: {text[:240]}); it may be "
                             f"damaged or written by another Keras version: {_retrain_hint()}") from None


def load_model(path: str | Path, *, safe_mode: bool = True, compile: bool = False,
               advice: str = UNSAFE_ADVICE):
    """The model ``path`` names (file or run folder): returns ``(model, file)``."""
    file = find_model_file(path)  # before importing Keras, so a wrong path fails at once
    return load_model_file(file, safe_mode=safe_mode, compile=compile, advice=advice), file


def input_count(model) -> int:
    return len(model.inputs) if getattr(model, "inputs", None) else 1


def output_count(model) -> int:
    return len(model.outputs) if getattr(model, "outputs", None) else 1


def require_one_input_output(model, file, what: str) -> None:
    """Refuse a model with several inputs or outputs, for a tool that feeds one and reads one."""
    inputs, outputs = input_count(model), output_count(model)
    if inputs != 1 or outputs != 1:
        raise ModelLoadError(f"{file}: model {model.name} has {inputs} input(s) and {outputs} output(s); "
                             f"{what} works with models of one input and one output")


def check_weights_file(file: str | Path) -> Path:
    """A weights file for ``model.load_weights`` (``.weights.h5``, legacy ``.h5``, or ``.keras``),
    checked for being whole before Keras reads it; returns its path."""
    file = Path(file).expanduser()
    if file.is_dir():
        raise ModelLoadError(f"{file} is a folder; give a weights file (.weights.h5, .h5 or .keras)")
    if not file.is_file():
        raise ModelLoadError(f"no such weights file: {file}")
    if file.suffix == ".keras":
        check_model_file(file)
        return file
    if file.suffix not in (".h5", ".hdf5"):
        raise ModelLoadError(f"{file} is not a weights file: Keras reads weights from .weights.h5, "
                             ".h5 or .keras files")
    check_model_file(file)  # empty, or no HDF5 signature
    try:
        import h5py

        with h5py.File(file, "r"):
            pass
    except OSError as err:
        raise ModelLoadError(f"could not load {file}: it is truncated or damaged "
                             f"({' '.join(str(err).split())[:160]}); {_retrain_hint()}") from None
    return file
