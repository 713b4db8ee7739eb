"""Where the tutorial's data comes from: a registry, a search order, an IDX reader.

Each dataset names its files, with a source URL and SHA-256 checksum. A file
is looked for, in this order:

1. an explicit path given on the command line (``--data``, ``--data-dir``);
2. the directory in ``KERAS_TUTORIAL_DATA``;
3. the repository's ``data/`` folder;
4. the Keras download cache (``$KERAS_HOME/datasets``, by default ``~/.keras``);
5. known system locations (Debian's ``dataset-fashion-mnist`` package);
6. a download through ``keras.utils.get_file``, which checks the hash
   (skipped when ``KERAS_TUTORIAL_OFFLINE=1``).

A file found in places 2-5 must match its checksum: a mismatch is reported,
never used and never deleted. A file given explicitly is the learner's own and
is used as it is.

Run ``python -m utils.datasets`` to list the registry and see where each file
would come from.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import math
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils import ROOT
from utils.cli import keras_home
from utils.errors import ChecksumMismatchError, DatasetNotFoundError, TutorialError

PROJECT_DATA_DIR = ROOT / "data"
KERAS_DATASETS = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


@dataclass(frozen=True)
class DataFile:
    name: str
    sha256: str | None
    url: str | None


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    files: tuple[DataFile, ...]
    cache_subdir: str = ""  # below <keras home>/datasets/
    system_dirs: tuple[str, ...] = ()

    def file(self, name: str) -> DataFile:
        for data_file in self.files:
            if data_file.name == name:
                return data_file
        raise KeyError(name)


def _fashion(name: str, sha256: str) -> DataFile:
    return DataFile(name, sha256, KERAS_DATASETS + name)


REGISTRY: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "churn",
            "10,000 bank customers and whether they left (the MLP chapter)",
            (DataFile(
                "Churn_Modelling.csv",
                "3996cd1fa372e0db0cd9c0ebac35bbd4e8e3c65fb942bb010c826e7b1eeef0a0",
                "https://raw.githubusercontent.com/fractus-io/keras-tutorial/"
                "master/src/mlp/Churn_Modelling.csv",
            ),),
        ),
        Dataset(
            "mnist",
            "70,000 handwritten digits, 28x28 grayscale (Keras's mnist.npz)",
            (DataFile(
                "mnist.npz",
                "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
                KERAS_DATASETS + "mnist.npz",
            ),),
        ),
        Dataset(
            "fashion_mnist",
            "70,000 Zalando clothing images, 28x28 grayscale, 10 classes (IDX files)",
            (
                _fashion("train-images-idx3-ubyte.gz",
                         "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
                _fashion("train-labels-idx1-ubyte.gz",
                         "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
                _fashion("t10k-images-idx3-ubyte.gz",
                         "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
                _fashion("t10k-labels-idx1-ubyte.gz",
                         "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
            ),
            cache_subdir="fashion-mnist",
            system_dirs=("/usr/share/datasets/fashion-mnist",),
        ),
    )
}


def get_dataset(name: str) -> Dataset:
    try:
        return REGISTRY[name]
    except KeyError:
        raise TutorialError(
            f"unknown dataset {name!r}: known datasets are {', '.join(sorted(REGISTRY))}"
        ) from None


def sha256sum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def search_dirs(dataset: Dataset) -> list[tuple[str, Path]]:
    """Places 2-5 of the search order, each with a label for messages."""
    places = []
    if os.environ.get("KERAS_TUTORIAL_DATA"):
        places.append(("KERAS_TUTORIAL_DATA", Path(os.environ["KERAS_TUTORIAL_DATA"])))
    places.append(("project data/", PROJECT_DATA_DIR))
    cache = keras_home() / "datasets"
    if dataset.cache_subdir:
        places.append(("Keras cache", cache / dataset.cache_subdir))
    places.append(("Keras cache", cache))
    places += [("system", Path(d)) for d in dataset.system_dirs]
    return places


def _checked(path: Path, data_file: DataFile) -> Path:
    if data_file.sha256 and (actual := sha256sum(path)) != data_file.sha256:
        raise ChecksumMismatchError(
            f"{path} is not the expected {data_file.name}: its sha256 is {actual[:16]}..., "
            f"the registry expects {data_file.sha256[:16]}...; the file was left untouched - "
            "move or delete it to fetch a fresh copy, or pass your own file explicitly"
        )
    return path


def _download(dataset: Dataset, data_file: DataFile) -> Path:
    import keras  # imported late: only a download needs Keras

    subdir = "datasets/" + dataset.cache_subdir if dataset.cache_subdir else "datasets"
    try:
        return Path(keras.utils.get_file(
            fname=data_file.name, origin=data_file.url, file_hash=data_file.sha256,
            cache_subdir=subdir, cache_dir=str(keras_home()),
        ))
    except ValueError as err:  # get_file's "Incomplete or corrupted file"
        raise ChecksumMismatchError(f"downloaded {data_file.name} failed its checksum: {err}") from None


def locate(dataset_name: str, file_name: str | None = None, explicit: Path | str | None = None,
           download: bool = True) -> Path:
    """Path to one file of a dataset, following the module's search order.

    ``explicit`` may be the file itself or a directory holding it.
    """
    dataset = get_dataset(dataset_name)
    data_file = dataset.file(file_name) if file_name else dataset.files[0]
    looked = []
    if explicit is not None:
        explicit = Path(explicit).expanduser()
        candidate = explicit / data_file.name if explicit.is_dir() else explicit
        if candidate.is_file():
            return candidate
        raise DatasetNotFoundError(
            f"{candidate} does not exist: check the path you gave for {data_file.name}"
        )
    for label, directory in search_dirs(dataset):
        candidate = directory / data_file.name
        looked.append(f"{directory} ({label})")
        if candidate.is_file():
            return _checked(candidate, data_file)
    offline = os.environ.get("KERAS_TUTORIAL_OFFLINE", "") not in ("", "0")
    reason = "downloads are off (KERAS_TUTORIAL_OFFLINE=1)" if offline else "no source URL"
    if download and data_file.url and not offline:
        try:
            return _download(dataset, data_file)
        except ChecksumMismatchError:
            raise
        except Exception as err:  # get_file raises a bare Exception on network errors
            detail = str(err).splitlines()[0].split(" -- ")[-1]
            reason = f"download from {data_file.url} failed ({detail})"
    raise DatasetNotFoundError(
        f"cannot find {data_file.name} (dataset {dataset.name!r}); looked in "
        f"{'; '.join(looked)}; {reason}. Fix: download {data_file.url or 'the file'} into "
        f"{PROJECT_DATA_DIR}, or set KERAS_TUTORIAL_DATA to a folder holding it, "
        "or pass its path on the command line"
    )


def locate_all(dataset_name: str, explicit: Path | str | None = None,
               download: bool = True) -> dict[str, Path]:
    """Paths to every file of a dataset, by file name."""
    dataset = get_dataset(dataset_name)
    return {f.name: locate(dataset_name, f.name, explicit, download) for f in dataset.files}


# --- IDX, the MNIST file format -------------------------------------------------
# Header: two zero bytes, a type code, the number of dimensions, then each
# dimension as a big-endian uint32; the values follow, big-endian, row-major.

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in IDX_TYPES.items()}


def _open(path: Path, mode: str):
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, mode) if gzipped else open(path, mode)


def read_idx(path: Path | str) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw, into a NumPy array.

    The header's dimensions are checked against the file's size, so a file cut
    short (an interrupted download or copy) is reported, never half-read.
    """
    path = Path(path)
    try:
        with _open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise TutorialError(f"cannot read IDX file {path}: {err}") from None
    if len(raw) < 4 or raw[0:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        raise TutorialError(f"{path} is not an IDX file (bad header)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise TutorialError(f"{path} is truncated: its header announces {ndim} dimensions "
                            f"but the file ends after {len(raw)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != expected:
        shape = "x".join(map(str, dims))
        problem = "is truncated" if len(body) < expected else "has extra bytes"
        raise TutorialError(f"{path} {problem}: its header promises {shape} values "
                            f"({expected} bytes), the file holds {len(body)}")
    return np.frombuffer(body, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: Path | str, array: np.ndarray) -> Path:
    """Write an array as IDX (gzip-compressed when the name ends in .gz)."""
    path = Path(path)
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"IDX cannot store {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    body = array.astype(IDX_TYPES[code]).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(header + body)
    return path


IDX_SPLITS = ("train", "t10k")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _idx_candidates(directory: Path, split: str, kind: str) -> list[Path]:
    # The names MNIST mirrors use: "-idx3-ubyte" or ".idx3-ubyte", gzip or not;
    # colour images (n, height, width, 3) are stored with four dimensions, idx4.
    ranks = (3, 4) if kind == "images" else (1,)
    return [directory / f"{split}-{kind}{sep}idx{rank}-ubyte{ext}"
            for rank in ranks for sep in ("-", ".") for ext in (".gz", "")]


def _find_idx(directory: Path, split: str, kind: str) -> Path:
    for candidate in _idx_candidates(directory, split, kind):
        if candidate.is_file():
            return candidate
    rank = 3 if kind == "images" else 1
    raise DatasetNotFoundError(
        f"{directory} holds no {split}-{kind}-idx{rank}-ubyte[.gz]: an MNIST-format folder needs "
        "train-images, train-labels, t10k-images and t10k-labels IDX files"
    )


def holds_idx(directory: Path | str) -> bool:
    """Whether ``directory`` holds at least one IDX file of an MNIST-format dataset."""
    return any(c.is_file() for split in IDX_SPLITS for kind in ("images", "labels")
               for c in _idx_candidates(Path(directory), split, kind))


def idx_files(directory: Path | str) -> dict[str, Path]:
    """The four IDX files of an MNIST-format folder, keyed like an npz: x_train, y_train, ..."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetNotFoundError(f"{directory} is not a folder")
    return {f"{xy}_{'test' if split == 't10k' else split}": _find_idx(directory, split, kind)
            for split in IDX_SPLITS for xy, kind in (("x", "images"), ("y", "labels"))}


def load_idx_dir(directory: Path | str):
    """Load an MNIST-format folder: ``((x_train, y_train), (x_test, y_test))``."""
    arrays = {key: read_idx(path) for key, path in idx_files(directory).items()}
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def load_npz(path: Path | str):
    """Load an ``.npz`` holding x_train, y_train, x_test and y_test (Keras's mnist.npz layout).

    Pickled Python objects are refused (``allow_pickle=False``): loading them could run code.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} does not exist")
    if not zipfile.is_zipfile(path):
        raise TutorialError(f"{path} is not an .npz file (not a zip archive of arrays): save the "
                            "dataset with numpy.savez(path, x_train=..., y_train=..., ...)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in NPZ_KEYS if key not in npz.files]
            if missing:
                found = ", ".join(npz.files) or "nothing"
                raise TutorialError(f"{path} lacks {', '.join(missing)}: an .npz dataset needs the "
                                    f"arrays {', '.join(NPZ_KEYS)} (it holds {found})")
            arrays = {key: npz[key] for key in NPZ_KEYS}
    except ValueError as err:
        if "pickle" in str(err):
            raise TutorialError(f"{path} holds pickled Python objects, which are not loaded (they "
                                "could run code): save plain numeric arrays with numpy.savez") from None
        raise TutorialError(f"cannot read {path}: {err}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise TutorialError(f"cannot read {path} as an .npz file: {err}") from None
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def load_fashion_mnist(explicit_dir: Path | str | None = None, download: bool = True):
    """Fashion-MNIST as uint8 arrays, from wherever the search order finds it."""
    if explicit_dir is not None:
        return load_idx_dir(explicit_dir)
    paths = locate_all("fashion_mnist", download=download)
    (first,) = {p.parent for p in paths.values()} or {None}
    return load_idx_dir(first)


def load_mnist(explicit: Path | str | None = None, download: bool = True):
    """MNIST as uint8 arrays: an MNIST-format folder, or Keras's ``mnist.npz``."""
    if explicit is not None and Path(explicit).is_dir() and not (Path(explicit) / "mnist.npz").is_file():
        return load_idx_dir(explicit)
    return load_npz(locate("mnist", "mnist.npz", explicit, download))


# --- command line ----------------------------------------------------------------

def describe(dataset: Dataset) -> list[str]:
    """One line per file: where it would be taken from right now."""
    lines = [f"{dataset.name}: {dataset.description}"]
    for data_file in dataset.files:
        try:
            where = str(locate(dataset.name, data_file.name, download=False))
        except TutorialError as err:
            where = "not found locally" if isinstance(err, DatasetNotFoundError) else str(err)
        lines.append(f"  {data_file.name}: {where}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.datasets",
        description="List the tutorial's datasets and where each file is found, or fetch one.",
    )
    parser.add_argument("action", nargs="?", choices=("list", "fetch"), default="list",
                        help="list: show where each file is found; fetch: find or download "
                             "a dataset (default: list)")
    parser.add_argument("name", nargs="?", help="dataset name (default: all, for list)")
    args = parser.parse_args(argv)
    try:
        if args.action == "fetch":
            if not args.name:
                parser.error("fetch needs a dataset name")
            for name, path in locate_all(args.name).items():
                print(f"{name}: {path}")
        else:
            names = [args.name] if args.name else sorted(REGISTRY)
            for name in names:
                print("\n".join(describe(get_dataset(name))))
    except TutorialError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
