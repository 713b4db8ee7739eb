"""Write a few test images to send to the service, so the curl examples work offline.

    python serving/samples.py                    # -> outputs/serving/samples/
    python serving/samples.py --output-dir OUT   # -> OUT/serving/samples/

From the held-out test part of scikit-learn's digits (the data the MNIST
chapter falls back to, always available): ``digit-<label>.png``, exactly as the
model sees them (28x28, white on black), and ``photo-<label>.jpg``, the same
digit as a 300x300 black-on-white colour JPEG, the way a photo of paper would
arrive. The service converts the second kind into the first.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `utils` imports from any folder

from utils import cli, runs  # noqa: E402
from utils.errors import TutorialError  # noqa: E402
from utils.lazy import lazy  # noqa: E402

np, Image = lazy("numpy"), lazy("PIL.Image")  # imported on first use: --help stays fast


def write_samples(folder: Path, labels=(3, 7)) -> list[Path]:
    from mnist.data import load_digits_28  # sklearn's digits, framed like MNIST

    _, (x_test, y_test) = load_digits_28()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for label in labels:
        pixels = x_test[int(np.flatnonzero(y_test == label)[0])]  # (28, 28) uint8, white on black
        Image.fromarray(pixels, "L").save(folder / f"digit-{label}.png")
        photo = Image.fromarray(255 - pixels, "L").resize((300, 300), Image.BICUBIC).convert("RGB")
        photo.save(folder / f"photo-{label}.jpg", quality=90)
        written += [folder / f"digit-{label}.png", folder / f"photo-{label}.jpg"]
    return written


def parse_args(argv=None):
    parser = cli.make_parser("Write sample digit images for the serving chapter.", epochs=None,
                             batch_size=None)
    parser.add_argument("folder", nargs="?", type=Path, default=None,
                        help="write them into exactly this folder instead "
                             "(default: <output-dir>/serving/samples/)")
    return parser.parse_args(argv)


@cli.friendly_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    folder = args.folder if args.folder is not None else Path(args.output_dir) / "serving" / "samples"
    if folder.exists() and not folder.is_dir():
        raise TutorialError(f"{folder} is a file; the samples need a folder")
    try:
        written = write_samples(folder)
    except OSError as err:
        raise TutorialError(f"cannot write the samples into {folder}: {err.strerror or err}") from None
    if args.quiet:
        print(runs.shown_path(folder))
    else:
        for path in written:
            print(runs.shown_path(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
