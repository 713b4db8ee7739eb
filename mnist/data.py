"""Images for the MNIST chapter: MNIST, Fashion-MNIST, or scikit-learn's digits.

Every dataset arrives the same way: float32 pixels in [0, 1] of shape
(n, 28, 28, 1) ("channels last": height, width, channels), integer labels of
shape (n,), and three disjoint parts. The validation part is cut from the
training images; the test images are touched once, after training.
"""

from __future__ import annotations

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



def add_data_arguments(parser, *, limit: int | None = None) -> None:
    """The flags that choose the images: --dataset, --data-dir and --limit.

    ``limit`` is the script's default for --limit (None: every image).
    """
    parser.add_argument("--dataset", choices=DATASETS, default="auto",
                        help="auto: MNIST when it can be had, else local Fashion-MNIST, else "
                             "scikit-learn's digits")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="an MNIST-format folder (IDX files) or one holding mnist.npz")
    parser.add_argument("--limit", type=cli.image_limit(), default=limit, metavar="N",
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


def _raw(name: str, data_dir: Path | None):
    if name == "mnist":
        return datasets.load_mnist(data_dir), DIGIT_NAMES
    if name == "fashion_mnist":
        return datasets.load_fashion_mnist(data_dir), FASHION_NAMES
    if name == "digits":
        return load_digits_28(), DIGIT_NAMES
    raise TutorialError(f"unknown dataset {name!r}: choose from {', '.join(DATASETS)}")


def _pick(dataset: str, data_dir: Path | None):
    """Resolve ``auto``: MNIST if it can be had, else local Fashion-MNIST, else digits."""
    if dataset != "auto":
        return dataset, _raw(dataset, data_dir), ""
    try:
        return "mnist", _raw("mnist", data_dir), "auto: MNIST found"
    except TutorialError:
        reason = "MNIST is not available (no local copy, and the download failed or is disabled)"
    try:
        fashion = datasets.load_fashion_mnist(download=False), FASHION_NAMES
        return "fashion_mnist", fashion, f"auto: {reason}; using local Fashion-MNIST instead"
    except TutorialError:
        return "digits", _raw("digits", None), (f"auto: {reason} and no local Fashion-MNIST; "
                                                "using scikit-learn's 8x8 digits, upscaled")


def load_images(dataset: str = "auto", data_dir: Path | None = None, val_fraction: float = 0.1,
                seed: int = 0, limit: int | None = None) -> ImageData:
    """Load, scale and split a dataset.

    ``limit`` keeps only the first N training and N // 5 test images, for quick
    experiments and tests.
    """
    name, (arrays, class_names), note = _pick(dataset, data_dir)
    (x_train, y_train), (x_test, y_test) = arrays
    if limit:
        x_train, y_train, x_test, y_test = x_train[:limit], y_train[:limit], x_test[:limit // 5], \
            y_test[:limit // 5]
    # The validation part keeps every class in proportion; the test set stays untouched.
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=val_fraction, stratify=y_train, random_state=seed)
    scale = lambda x: (x.astype("float32") / 255.0)[..., np.newaxis]  # noqa: E731
    return ImageData(name, scale(x_train), y_train.astype("int64"), scale(x_val), y_val.astype("int64"),
                     scale(x_test), y_test.astype("int64"), class_names, note)
