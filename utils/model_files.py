"""Find and load a saved Keras model: from a ``.keras`` file or a run folder.

Every tool that reads a model another chapter saved (the inspector, the
diagram, the feature-map plots, the server, the save/load demo) goes through
these two functions, so a wrong path or an unreadable file gives the same
one-line message everywhere. Keras is imported only once the file is found,
so a mistyped path fails at once.
"""

from __future__ import annotations

from pathlib import Path

from utils.errors import ModelLoadError

#: What a run folder holds, preferred first (the final model, then the best
#: checkpoint a chapter keeps while training).
MODEL_FILES = ("model.keras", "best.keras")


def add_path_argument(parser) -> None:
    """The positional ``path`` argument of a tool that reads one saved model."""
    parser.add_argument("path", type=Path,
                        help="a .keras file, or a run folder holding model.keras (or best.keras)")


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


def load_model_file(file: str | Path, *, safe_mode: bool = True, compile: bool = False):
    """``keras.saving.load_model`` with its failures turned into one-line errors.

    Tools that only predict or inspect need no optimizer, so by default the
    model comes back uncompiled.
    """
    from utils.quiet import import_keras

    keras = import_keras()
    try:
        return keras.saving.load_model(file, compile=compile, safe_mode=safe_mode)
    except Exception as err:  # Keras raises ValueError, OSError, zipfile errors...
        text = " ".join(str(err).split())
        if "lambda" in text.lower() and "safe_mode" in text:
            raise ModelLoadError(f"{file} contains Python code (a Lambda layer), which Keras does not "
                                 "run in safe mode; if you trust whoever made the file, add --unsafe") \
                from None
        raise ModelLoadError(f"could not load {file}: {text[:300]}") from None


def load_model(path: str | Path, *, safe_mode: bool = True, compile: bool = False):
    """The model ``path`` names (file or run folder): returns ``(model, file)``."""
    file = find_model_file(path)  # before importing Keras, so a wrong path fails at once
    return load_model_file(file, safe_mode=safe_mode, compile=compile), file
