"""Images for the MNIST chapter: MNIST, Fashion-MNIST, scikit-learn's digits, or your own.

Every dataset arrives the same way: float32 pixels in [0, 1] of shape
(n, height, width, channels) ("channels last"; 28x28x1 for the built-in
datasets), integer labels 0..K-1 of shape (n,), and three disjoint parts. The
validation part is cut from the training images; the test images are touched
once, after training.

``--data-dir`` reads your own images: a folder of MNIST-format IDX files
(``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
``t10k-images-...``, ``t10k-labels-...``; colour images as ``idx4``), or an
``.npz`` file (or a folder holding one) with the arrays ``x_train``,
``y_train``, ``x_test`` and ``y_test``. The number of classes K comes from
the labels; a ``classes.txt`` beside the data names them, one per line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from utils import cli
from utils.errors import TutorialError
from utils.lazy import lazy

np, datasets = lazy("numpy"), lazy("utils.datasets")  # imported on first use: --help stays fast
train_test_split = lazy("sklearn.model_selection", "train_test_split")

DATASETS = ("auto", "mnist", "fashion_mnist", "digits")
DIGIT_NAMES = [str(d) for d in range(10)]
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CLASSES_FILE = "classes.txt"  # optional, beside your own data: one class name per line
VAL_FRACTION = 0.1

def add_data_arguments(parser, *, limit: int | None = None) -> None:
    """The flags that choose the images: --dataset, --data-dir and --limit.

    ``limit`` is the script's default for --limit (None: every image).
    """
    parser.add_argument("--dataset", choices=DATASETS, default="auto",
                        help="auto: MNIST when it can be had, else local Fashion-MNIST, else "
                             "scikit-learn's digits")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="your own images: a folder of MNIST-format IDX files, or an .npz file "
                             "(or a folder holding one) with x_train, y_train, x_test, y_test; "
                             "class names from an optional classes.txt in that folder "
                             "(default: none, the dataset chosen by --dataset)")
    parser.add_argument("--limit", type=cli.positive_int, default=limit, metavar="N",
                        help="use only the first N training images (10%% of them for validation) "
                             "and N/5 test images, for quick tries"
                             + ("" if limit else " (default: all of them)"))

@dataclass
class ImageData:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    note: str = ""  # why this dataset was used, for the console and run.json

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def describe(self) -> str:
        return (f"dataset {self.name}: train {self.x_train.shape}, validation {self.x_val.shape}, "
                f"test {self.x_test.shape}, {len(self.class_names)} classes")


def load_digits_28() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's 1,797 real 8x8 handwritten digits, made to look like MNIST.

    Each 8x8 image (values 0-16) is enlarged to 20x20 and centred in a 28x28
    frame, as MNIST centres its digits in a 20x20 box; 20% are held out as test.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = (digits.images * (255 / 16)).astype("uint8")
    big = np.stack([np.asarray(Image.fromarray(im).resize((20, 20), Image.BILINEAR)) for im in small])
    framed = np.pad(big, ((0, 0), (4, 4), (4, 4)))
    x_train, x_test, y_train, y_test = train_test_split(
        framed, digits.target.astype("uint8"), test_size=0.2, stratify=digits.target, random_state=0)
    return (x_train, y_train), (x_test, y_test)


def _raw(name: str):
    if name == "mnist":
        return datasets.load_mnist(), DIGIT_NAMES
    if name == "fashion_mnist":
        return datasets.load_fashion_mnist(), FASHION_NAMES
    if name == "digits":
        return load_digits_28(), DIGIT_NAMES
    raise TutorialError(f"unknown dataset {name!r}: choose from {', '.join(DATASETS)}")


def _pick(dataset: str):
    """Resolve ``auto``: MNIST if it can be had, else local Fashion-MNIST, else digits."""
    if dataset != "auto":
        return dataset, _raw(dataset), ""
    try:
        return "mnist", _raw("mnist"), "auto: MNIST found"
    except TutorialError:
        reason = "MNIST is not available (no local copy, and the download failed or is disabled)"
    try:
        fashion = datasets.load_fashion_mnist(download=False), FASHION_NAMES
        return "fashion_mnist", fashion, f"auto: {reason}; using local Fashion-MNIST instead"
    except TutorialError:
        return "digits", _raw("digits"), (f"auto: {reason} and no local Fashion-MNIST; "
                                          "using scikit-learn's 8x8 digits, upscaled")


# --- your own data (--data-dir) --------------------------------------------------------

def _own_files(data_dir: Path) -> tuple[Path | None, dict[str, str], Path]:
    """What ``--data-dir`` points at: (the .npz file or None for IDX, a source name per array,
    the folder that may hold classes.txt)."""
    if not data_dir.exists():
        raise TutorialError(f"--data-dir {data_dir} does not exist: give a folder of MNIST-format "
                            "IDX files or an .npz file")
    if data_dir.is_file():
        return data_dir, {key: f"{data_dir} ({key})" for key in datasets.NPZ_KEYS}, data_dir.parent
    if datasets.holds_idx(data_dir):
        return None, {k: str(v) for k, v in datasets.idx_files(data_dir).items()}, data_dir
    npz = sorted(data_dir.glob("*.npz"))
    if len(npz) > 1:
        raise TutorialError(f"--data-dir {data_dir} holds several .npz files "
                            f"({', '.join(p.name for p in npz)}): give the one to use")
    if not npz:
        raise TutorialError(f"--data-dir {data_dir} holds no dataset: it needs MNIST-format IDX files "
                            "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...) "
                            "or an .npz file with x_train, y_train, x_test, y_test")
    return npz[0], {key: f"{npz[0]} ({key})" for key in datasets.NPZ_KEYS}, data_dir


def check_data_dir(data_dir: Path | None) -> None:
    """Fail fast (before Keras starts) when ``--data-dir`` names nothing readable."""
    if data_dir is not None:
        _own_files(data_dir)


def _read_class_names(folder: Path, classes: int) -> list[str] | None:
    path = folder / CLASSES_FILE
    if not path.is_file():
        return None
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise TutorialError(f"cannot read {path}: {err}") from None
    if len(names) != classes:
        raise TutorialError(f"{path} names {len(names)} classes but the labels hold {classes} "
                            f"(0..{classes - 1}): write one name per line, in label order")
    if len(set(names)) != len(names):
        raise TutorialError(f"{path} names a class twice: each line must be a different name")
    return names


def load_own(data_dir: Path | str, dataset: str = "auto"):
    """Your own images from ``--data-dir``: (name, raw arrays, their sources, class names, note).

    ``dataset`` only lends its class names (``fashion_mnist``'s ten, for a
    10-class folder without classes.txt); the data always comes from the folder.
    """
    data_dir = Path(data_dir).expanduser()
    if dataset == "digits":
        raise TutorialError("--dataset digits comes from scikit-learn and reads no folder: leave out "
                            "--data-dir, or choose --dataset auto to train on the folder")
    npz, sources, folder = _own_files(data_dir)
    arrays = datasets.load_npz(npz) if npz else datasets.load_idx_dir(data_dir)
    name = dataset if dataset != "auto" else (data_dir.stem if data_dir.is_file() else data_dir.name)
    note = f"your own data from {data_dir}"
    return name or "own", arrays, sources, folder, note


def _labels(y: np.ndarray, source: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise TutorialError(f"labels in {source} have shape {y.shape}: expected one integer per image, "
                            "shape (n,)")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise TutorialError(f"labels in {source} are not whole numbers: use class numbers 0..K-1")
    elif y.dtype.kind not in "iu":
        raise TutorialError(f"labels in {source} are of type {y.dtype}: use integer class numbers 0..K-1")
    if len(y) and y.min() < 0:
        raise TutorialError(f"labels in {source} include {int(y.min())}: class numbers start at 0")
    return y.astype("int64")


def _images(x: np.ndarray, source: str) -> tuple[np.ndarray, float]:
    """(n, height, width, channels) images and the number that scales them to [0, 1]:
    255 for uint8 (0-255) pixels, 1 for floats already in 0-1."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise TutorialError(f"images in {source} have shape {x.shape}: expected (n, height, width) "
                            "for grayscale or (n, height, width, 3) for colour")
    if x.dtype.kind not in "uif":
        raise TutorialError(f"images in {source} are of type {x.dtype}: expected numbers (uint8 0-255 "
                            "or floats 0-1)")
    if x.dtype == np.uint8 or x.size == 0:
        return x, 255.0
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise TutorialError(f"images in {source} hold NaN or infinite pixels")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 255:
        raise TutorialError(f"pixels in {source} run from {low:g} to {high:g}: expected 0-255 or 0-1")
    return x, (1.0 if x.dtype.kind == "f" and high <= 1.0 else 255.0)


def _scaled(x: np.ndarray, scale: float) -> np.ndarray:
    return (x.astype("float32") / np.float32(scale)).astype("float32", copy=False)


def check_arrays(arrays, sources: dict[str, str]):
    """Images and labels as the chapter expects them, or one line naming the file at fault.

    Returns (x_train, y_train, x_test, y_test, K, scales): images still as stored, with a
    channel axis, and the divisor of each that gives pixels in [0, 1].
    """
    (x_train, y_train), (x_test, y_test) = arrays
    (x_train, train_scale), (x_test, test_scale) = (_images(x_train, sources["x_train"]),
                                                    _images(x_test, sources["x_test"]))
    y_train, y_test = _labels(y_train, sources["y_train"]), _labels(y_test, sources["y_test"])
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise TutorialError(f"{sources['x_' + split]} holds {len(x)} images but "
                                f"{sources['y_' + split]} holds {len(y)} labels: each image needs one label")
        if not len(x):
            raise TutorialError(f"{sources['x_' + split]} holds no images")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise TutorialError(f"training images are {'x'.join(map(str, x_train.shape[1:]))} but test images "
                            f"are {'x'.join(map(str, x_test.shape[1:]))} ({sources['x_test']}): "
                            "both must have one size")
    present = np.unique(y_train)
    classes = int(present[-1]) + 1
    if classes < 2:
        raise TutorialError(f"labels in {sources['y_train']} hold a single class: a classifier needs "
                            "at least 2 (labels 0..K-1)")
    if len(present) != classes:
        gaps = sorted(set(range(classes)) - set(present.tolist()))
        shown = ", ".join(map(str, gaps[:5])) + (", ..." if len(gaps) > 5 else "")
        raise TutorialError(f"labels in {sources['y_train']} skip class {shown} of 0..{classes - 1}: "
                            "number the classes 0..K-1 with no gaps, each with training images")
    if y_test.max() >= classes:
        raise TutorialError(f"labels in {sources['y_test']} include {int(y_test.max())}, a class the "
                            f"training labels (0..{classes - 1}) do not have")
    return x_train, y_train, x_test, y_test, classes, (train_scale, test_scale)


def smallest_limit(y_train: np.ndarray, classes: int, val_fraction: float = VAL_FRACTION) -> int | None:
    """The smallest --limit whose first N training images give every class two images (one
    for training, one for validation) and a validation part with room for every class."""
    second = []
    for c in range(classes):
        where = np.flatnonzero(y_train == c)
        if len(where) < 2:
            return None
        second.append(int(where[1]) + 1)
    n = max(max(second), 2 * classes)
    while math.ceil(val_fraction * n) < classes:
        n += 1
    return n


def _split(x_train, y_train, classes: int, class_names: list[str], source: str, val_fraction: float,
           seed: int, limit: int | None = None, full_labels: np.ndarray | None = None):
    """Cut the validation part, every class in proportion; or say which flag or file is short."""
    counts = np.bincount(y_train, minlength=classes)
    if not ((counts < 2).any() or math.ceil(val_fraction * len(y_train)) < classes):
        return train_test_split(x_train, y_train, test_size=val_fraction, stratify=y_train,
                                random_state=seed)
    short = class_names[int(np.argmin(counts))]
    if limit:
        needed = smallest_limit(full_labels, classes, val_fraction)
        if needed is not None:
            raise TutorialError(f"--limit {limit} is too small for {classes} classes: every class needs "
                                f"a training and a validation image (class {short!r} has "
                                f"{int(counts.min())} among the first {limit}); use --limit {needed} "
                                "or more")
    raise TutorialError(f"{source}: class {short!r} has {int(counts.min())} training image(s) of "
                        f"{len(y_train)}; every one of the {classes} classes needs at least 2 (one "
                        f"for validation) and the set at least {math.ceil(classes / val_fraction)} "
                        "images")


def load_images(dataset: str = "auto", data_dir: Path | None = None, val_fraction: float = VAL_FRACTION,
                seed: int = 0, limit: int | None = None) -> ImageData:
    """Load, scale, check and split a dataset.

    ``data_dir`` reads your own images and is never replaced by another
    dataset. ``limit`` keeps only the first N training and N // 5 test
    images, for quick experiments and tests.
    """
    if data_dir is not None:
        name, arrays, sources, folder, note = load_own(data_dir, dataset)
    else:
        name, (arrays, builtin_names), note = _pick(dataset)
        sources = {key: f"the {name} dataset ({key})" for key in datasets.NPZ_KEYS}
    x_train, y_train, x_test, y_test, classes, (train_scale, test_scale) = check_arrays(arrays, sources)
    if data_dir is not None:
        class_names = _read_class_names(folder, classes)
        if class_names is None:
            named = {"mnist": DIGIT_NAMES, "fashion_mnist": FASHION_NAMES}.get(dataset)
            class_names = named if named and len(named) == classes else [str(i) for i in range(classes)]
    else:
        class_names = builtin_names
    full_labels = y_train
    if limit:
        x_train, y_train, x_test, y_test = x_train[:limit], y_train[:limit], x_test[:max(1, limit // 5)], \
            y_test[:max(1, limit // 5)]
    x_train, x_val, y_train, y_val = _split(x_train, y_train, classes, class_names, sources["y_train"],
                                            val_fraction, seed, limit, full_labels)
    return ImageData(name, _scaled(x_train, train_scale), y_train, _scaled(x_val, train_scale), y_val,
                     _scaled(x_test, test_scale), y_test, class_names, note)
