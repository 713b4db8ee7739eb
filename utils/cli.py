"""The flags every chapter shares, the backend switch, and friendly errors.

Every chapter builds its parser with :func:`make_parser`, so ``--epochs``,
``--batch-size``, ``--seed``, ``--output-dir``, ``--backend`` and ``--quiet``
are spelt and explained the same way everywhere, each help line ending with
its default.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import sys
from pathlib import Path

from utils import ROOT
from utils.errors import BackendError, TutorialError

BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT_OUTPUT_DIR = ROOT / "outputs"


def keras_home() -> Path:
    """Where Keras keeps ``keras.json`` and its download cache."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def configured_backend() -> str:
    """The backend Keras would pick now: ``KERAS_BACKEND``, then keras.json."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    try:
        config = json.loads((keras_home() / "keras.json").read_text())
        return str(config.get("backend", "tensorflow"))
    except (OSError, ValueError):
        return "tensorflow"


def select_backend(name: str | None) -> str:
    """Make ``name`` the Keras backend; must run before ``import keras``.

    ``None`` keeps whatever is configured. Raises :class:`BackendError` for a
    backend that is not installed, or when Keras is already running another.
    """
    name = name or configured_backend()
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if importlib.util.find_spec(name) is None:
        raise BackendError(
            f"backend {name!r} is not installed: `pip install {name}` "
            "(see requirements-backends.txt), or pick another with --backend"
        )
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != name:
        raise BackendError(
            f"Keras is already running on {keras.backend.backend()!r}; the backend is "
            f"fixed when Keras is first imported, so start a new process for {name!r}"
        )
    os.environ["KERAS_BACKEND"] = name
    return name


def preselect_backend(argv: list[str]) -> None:
    """Read ``--backend`` from raw arguments before Keras is imported.

    A chapter script calls this at import time when run as ``__main__``; a bad
    choice ends the process with one line and exit code 2.
    """
    value = None
    for i, arg in enumerate(argv):
        if arg == "--backend" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--backend="):
            value = arg.split("=", 1)[1]
    try:
        select_backend(value)
    except BackendError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show "(default: X)" after every option and keep the description's lines."""

    def _get_help_string(self, action):
        # An option whose help already states its default (because the stored
        # default is None and the effective one is chosen later) says it once.
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def make_parser(
    description: str,
    *,
    epochs: int | None,
    batch_size: int | None,
    seed: int = 0,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """A parser holding the common flags; the chapter adds its own after.

    A script that trains nothing (it only predicts or inspects) passes
    ``epochs=None`` and/or ``batch_size=None`` to leave those flags out.
    """
    parser = argparse.ArgumentParser(
        description=description, epilog=epilog, formatter_class=_HelpFormatter
    )
    common = parser.add_argument_group("common options")
    if epochs is not None:
        common.add_argument("--epochs", type=positive_int, default=epochs,
                            help="passes over the training data")
    if batch_size is not None:
        common.add_argument("--batch-size", type=positive_int, default=batch_size,
                            help="samples per weight update")
    common.add_argument("--seed", type=int, default=seed,
                        help="seed for Python, NumPy and the backend (keras.utils.set_random_seed)")
    common.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                        help="where run folders are written, as <dir>/<chapter>/<time>_<model>/")
    common.add_argument("--backend", choices=BACKENDS, default=configured_backend(),
                        help="Keras backend; sets KERAS_BACKEND before Keras is imported "
                             "(the default comes from KERAS_BACKEND or ~/.keras/keras.json)")
    common.add_argument("--quiet", action="store_true",
                        help="print only the final results, no per-epoch progress")
    return parser


def friendly_errors(main):
    """Decorate a chapter's ``main``: a :class:`TutorialError` becomes one line
    on stderr and exit code 2, Ctrl-C becomes exit code 130, bugs keep their
    traceback."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv) or 0
        except TutorialError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
