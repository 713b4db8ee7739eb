"""The flags every chapter shares, the backend switch, and friendly errors.

Every chapter builds its parser with :func:`make_parser`, so ``--epochs``,
``--batch-size``, ``--seed``, ``--output-dir``, ``--backend`` and ``--quiet``
are spelt and explained the same way everywhere, each help line ending with
its default.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

from utils import ROOT
from utils.errors import BackendError, OutputDirError, TutorialError

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


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


_UNBOUNDED = 2**62


def int_in(low: int, high: int):
    """argparse type: a whole number from ``low`` to ``high``; the error names the range.

    The upper bounds keep an absurd value (``--hidden 1000000000``) from
    reaching Keras, which would try to allocate it and be killed for memory.
    """

    def check(text: str) -> int:
        value = _whole_number(text)
        allowed = "" if high >= _UNBOUNDED else f" (allowed {low:,} to {high:,})"
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be at least {low:,}{allowed}")
        if value > high:
            raise argparse.ArgumentTypeError(f"{value} is too large{allowed}")
        return value

    check.__name__ = f"int_in_{low}_{high}"  # argparse shows the name on a bad value
    return check


MAX_EPOCHS = 1_000_000
MAX_BATCH_SIZE = 1 << 20
MAX_UNITS = 10_000  # units of one Dense layer: 10,000 x 10,000 weights is already 400 MB
MAX_SEED = 2**32 - 1  # what NumPy's and the backends' seeds accept

positive_int = int_in(1, 2**63 - 1)
positive_int.__doc__ = "argparse type: an integer of at least 1."
epochs_int = int_in(1, MAX_EPOCHS)
batch_size_int = int_in(1, MAX_BATCH_SIZE)
units_int = int_in(1, MAX_UNITS)
seed_int = int_in(0, MAX_SEED)


def positive_float(text: str) -> float:
    """argparse type: a finite number greater than 0 (not inf, not nan)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} is out of range: must be a finite number greater than 0")
    return value


# Pseudo-filesystems of the kernel: nothing a run writes can live there.
_SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def output_dir(text: str) -> Path:
    """argparse type for ``--output-dir``: a folder that is, or can become, a folder.

    Catches at once what would otherwise fail after training: an empty value,
    an existing file, a path below a file, a kernel pseudo-filesystem.
    Whether the folder can be written is checked by :func:`check_writable`.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a folder, e.g. --output-dir outputs")
    path = Path(text).expanduser()
    absolute = Path(os.path.abspath(path))
    if any(absolute == root or root in absolute.parents for root in _SYSTEM_ROOTS):
        raise argparse.ArgumentTypeError(f"{text} is inside /{absolute.parts[1]}, "
                                         "where no folder can be created: choose another folder")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder: choose a folder")
    for parent in absolute.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text} lies under {parent}, which is a file: "
                                                 "choose a folder")
            break
    return path


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and write (then remove) a probe file in it.

    Raises :class:`OutputDirError` in one line when that fails, so a run learns
    before training, not after, that its results could not be saved. Folders
    created only for the probe are removed again.
    """
    folder = Path(folder)
    created = []
    for path in [*reversed(folder.parents), folder]:
        if not path.exists():
            created.append(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputDirError(f"--output-dir {folder}: cannot write there ({err.strerror or err}); "
                             "choose a folder you can write to") from None
    finally:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()


class ArgumentParser(argparse.ArgumentParser):
    """argparse, answering a bad command line in exactly one line.

    ``error: <problem> (see --help)`` on stderr and exit code 2, the rule for
    every mistake in the tutorial; argparse's own usage block is left out.
    After parsing, an ``--output-dir`` is checked to be writable.
    """

    def error(self, message: str):
        text = " ".join(message.split())
        self.exit(2, f"error: {text} (see --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        folder = getattr(namespace, "output_dir", None)
        if isinstance(folder, Path):
            try:
                check_writable(folder)
            except OutputDirError as err:
                self.exit(2, f"error: {err}\n")
        return namespace, extras


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
    parser = ArgumentParser(
        description=description, epilog=epilog, formatter_class=_HelpFormatter
    )
    common = parser.add_argument_group("common options")
    if epochs is not None:
        common.add_argument("--epochs", type=epochs_int, default=epochs,
                            help=f"passes over the training data, 1 to {MAX_EPOCHS:,}")
    if batch_size is not None:
        common.add_argument("--batch-size", type=batch_size_int, default=batch_size,
                            help=f"samples per weight update, 1 to {MAX_BATCH_SIZE:,}")
    common.add_argument("--seed", type=seed_int, default=seed,
                        help="seed for Python, NumPy and the backend (keras.utils.set_random_seed), "
                             "0 to 2**32-1")
    common.add_argument("--output-dir", type=output_dir, default=DEFAULT_OUTPUT_DIR,
                        help="where run folders are written, as <dir>/<chapter>/<time>_<model>/")
    common.add_argument("--backend", choices=BACKENDS, default=configured_backend(),
                        help="Keras backend; sets KERAS_BACKEND before Keras is imported "
                             "(the default comes from KERAS_BACKEND or ~/.keras/keras.json)")
    common.add_argument("--quiet", action="store_true",
                        help="print only the final results, no per-epoch progress")
    return parser


def friendly_errors(main):
    """Decorate a chapter's ``main``: the one way a script fails.

    - a :class:`TutorialError` (the learner can fix it) becomes one line
      ``error: ...`` on stderr and exit code 2;
    - running out of memory becomes one line with advice, exit code 2;
    - a closed pipe (``python x.py | head``) ends quietly with exit code 0;
    - Ctrl-C becomes exit code 130;
    - anything else is a bug and keeps its traceback.
    """

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv) or 0
        except TutorialError as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            return 2
        except MemoryError:
            print("error: out of memory: try a smaller --batch-size, fewer or smaller layers, "
                  "or --limit to use fewer images", file=sys.stderr)
            return 2
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): say nothing, and keep Python
            # from complaining when it flushes stdout at exit.
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            return 0
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
