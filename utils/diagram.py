"""Draw a model as a PNG: one box per layer with its input and output shapes.

    python -m utils.diagram outputs/mnist/<run>/            # writes <run>/model.png
    python -m utils.diagram model.keras -o conv_net.png

``keras.utils.plot_model`` needs two things Keras does not install: the
``pydot`` package and Graphviz's ``dot`` program. Without them
:func:`plot_model_png` prints one line saying what to install and returns
``None``, so a chapter that draws its model keeps working.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from utils import cli, model_files, runs
from utils.errors import TutorialError

MISSING = "install graphviz (apt-get install graphviz) and pydot (pip install pydot) to draw models"
#: Graphviz's resolution; 200 (Keras' default) gives a PNG of several hundred KB.
DPI = 60
#: Picture formats Graphviz writes (the file's extension picks one).
FORMATS = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".gif")


def drawing_tools_missing() -> str | None:
    """What is missing to draw models ("pydot", "graphviz dot" or both), or None."""
    missing = []
    try:
        import pydot  # noqa: F401
    except ImportError:
        missing.append("pydot")
    if shutil.which("dot") is None:
        missing.append("graphviz's dot program")
    return " and ".join(missing) or None


def plot_model_png(model, path: str | Path, dpi: int = DPI) -> Path | None:
    """Draw ``model`` into the PNG ``path``; None (and one printed line) when
    pydot or Graphviz is missing."""
    missing = drawing_tools_missing()
    if missing:
        print(f"no model diagram ({missing} missing): {MISSING}")
        return None
    import keras

    path = Path(path)
    try:
        keras.utils.plot_model(model, to_file=str(path), show_shapes=True, show_layer_names=True,
                               show_layer_activations=True, show_trainable=True, dpi=dpi)
    except (ImportError, OSError) as err:  # a pydot or Graphviz that is there but broken
        print(f"no model diagram ({' '.join(str(err).split())[:200]}): {MISSING}")
        return None
    return path if path.is_file() else None


def parse_args(argv=None):
    parser = cli.make_parser(__doc__.split("\n\n")[0], epochs=None, batch_size=None)
    parser.prog = "python -m utils.diagram"
    model_files.add_path_argument(parser)
    model_files.add_unsafe_argument(parser)
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="PNG",
                        help="where to write the picture (default: model.png in the run folder, "
                             "or <name>.png beside a .keras file)")
    return parser.parse_args(argv)


def check_output(path: Path | None) -> None:
    """Refuse an ``-o`` that cannot become a picture, before the model is loaded."""
    if path is None:
        return
    if path.is_dir():
        raise TutorialError(f"-o {path} is a folder: give a file name in it, e.g. -o {path / 'model.png'}")
    if path.suffix.lower() not in FORMATS:
        raise TutorialError(f"-o {path}: unknown picture type {path.suffix or '(no extension)'!r}; "
                            f"end the name with one of {', '.join(FORMATS)}")
    parent = path.parent
    if not parent.is_dir():
        what = "is a file" if parent.exists() else "does not exist"
        raise TutorialError(f"-o {path}: the folder {parent} {what}; create it first or pick another")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TutorialError(f"-o {path}: cannot write there (permission denied); pick another place")


@cli.friendly_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    check_output(args.output)
    cli.select_backend(args.backend)
    model, file = model_files.load_model(args.path, safe_mode=not args.unsafe)
    output = args.output or (file.parent / "model.png" if Path(args.path).is_dir()
                             else file.with_suffix(".png"))
    drawn = plot_model_png(model, output)
    if drawn is None:
        return 1
    print(f"{model.name}: {runs.shown_path(drawn)} ({drawn.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    cli.preselect_backend(sys.argv[1:])  # the backend is fixed when Keras is imported
    sys.exit(main())
