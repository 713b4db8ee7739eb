import gzip

import numpy as np
import pytest

from utils import datasets
from utils.errors import ChecksumMismatchError, DatasetNotFoundError, TutorialError

from .conftest import ROOT, run_script

CONTENT = b"a,b\n1,2\n"


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """A one-file dataset registered for the test, with no project data/ copy."""
    good = datasets.DataFile("toy.csv", datasets.hashlib.sha256(CONTENT).hexdigest(),
                             "http://127.0.0.1:9/toy.csv")
    monkeypatch.setitem(datasets.REGISTRY, "toy", datasets.Dataset("toy", "test data", (good,)))
    monkeypatch.setattr(datasets, "PROJECT_DATA_DIR", tmp_path / "project_data")
    monkeypatch.delenv("KERAS_TUTORIAL_DATA", raising=False)
    return tmp_path


def test_found_in_keras_tutorial_data(toy, monkeypatch):
    folder = toy / "mine"
    folder.mkdir()
    (folder / "toy.csv").write_bytes(CONTENT)
    monkeypatch.setenv("KERAS_TUTORIAL_DATA", str(folder))
    assert datasets.locate("toy") == folder / "toy.csv"


def test_found_in_keras_cache(toy):
    cache = datasets.keras_home() / "datasets"
    cache.mkdir(parents=True)
    (cache / "toy.csv").write_bytes(CONTENT)
    assert datasets.locate("toy") == cache / "toy.csv"


def test_env_dir_wins_over_project_data(toy, monkeypatch):
    for name in ("env", "project_data"):
        (toy / name).mkdir()
        (toy / name / "toy.csv").write_bytes(CONTENT)
    monkeypatch.setenv("KERAS_TUTORIAL_DATA", str(toy / "env"))
    assert datasets.locate("toy").parent == toy / "env"


def test_explicit_path_is_used_as_is_without_checksum(toy):
    mine = toy / "edited.csv"
    mine.write_bytes(b"other,content\n")
    assert datasets.locate("toy", explicit=mine) == mine
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        datasets.locate("toy", explicit=toy / "nope.csv")


def test_checksum_mismatch_is_reported_and_file_kept(toy):
    (toy / "project_data").mkdir()
    bad = toy / "project_data" / "toy.csv"
    bad.write_bytes(b"tampered\n")
    with pytest.raises(ChecksumMismatchError, match="left untouched") as err:
        datasets.locate("toy")
    assert str(bad) in str(err.value)
    assert bad.read_bytes() == b"tampered\n"


def test_nothing_found_offline_names_file_places_and_fix(toy):
    with pytest.raises(DatasetNotFoundError) as err:
        datasets.locate("toy")
    message = str(err.value)
    assert "toy.csv" in message and "project_data" in message
    assert "KERAS_TUTORIAL_OFFLINE" in message and "KERAS_TUTORIAL_DATA" in message
    assert "\n" not in message


def test_failed_download_is_a_named_error(toy, monkeypatch):
    monkeypatch.setenv("KERAS_TUTORIAL_OFFLINE", "0")
    with pytest.raises(DatasetNotFoundError, match="download from http://127.0.0.1:9/toy.csv failed"):
        datasets.locate("toy")
    assert not (datasets.keras_home() / "datasets" / "toy.csv").exists()


def test_unknown_dataset_name():
    with pytest.raises(TutorialError, match="known datasets are"):
        datasets.locate("imagenet")


def test_cli_exits_2_with_one_line_when_nothing_is_found(tmp_path):
    result = run_script("-m", "utils.datasets", "fetch", "churn",
                        env={"KERAS_TUTORIAL_DATA": str(tmp_path), "KERAS_HOME": str(tmp_path)})
    # data/ of a developer's checkout may hold the CSV; then fetch succeeds.
    if (ROOT / "data" / "Churn_Modelling.csv").exists():
        pytest.skip("data/ holds a copy of the churn CSV")
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Churn_Modelling.csv" in error_lines[0]
    assert "Traceback" not in result.stderr


def test_cli_finds_the_shared_churn_csv(shared_data):
    result = run_script("-m", "utils.datasets", "fetch", "churn",
                        env={"KERAS_TUTORIAL_DATA": str(shared_data)})
    assert result.returncode == 0, result.stderr
    assert str(shared_data / "Churn_Modelling.csv") in result.stdout


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, dtype, name):
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    path = datasets.write_idx(tmp_path / name, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = datasets.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, array)


def test_idx_reader_rejects_bad_files(tmp_path):
    (tmp_path / "text").write_bytes(b"hello world")
    with pytest.raises(TutorialError, match="not an IDX file"):
        datasets.read_idx(tmp_path / "text")
    path = datasets.write_idx(tmp_path / "short", np.zeros((4, 4), "uint8"))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(TutorialError, match="truncated"):
        datasets.read_idx(path)


def test_load_idx_dir_accepts_mnist_style_folders(tmp_path):
    rng = np.random.default_rng(0)
    x_train, y_train = rng.integers(0, 256, (5, 28, 28), dtype="uint8"), np.arange(5, dtype="uint8")
    x_test, y_test = rng.integers(0, 256, (2, 28, 28), dtype="uint8"), np.arange(2, dtype="uint8")
    datasets.write_idx(tmp_path / "train-images-idx3-ubyte.gz", x_train)
    datasets.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y_train)
    datasets.write_idx(tmp_path / "t10k-images.idx3-ubyte", x_test)  # unzipped, dotted name
    datasets.write_idx(tmp_path / "t10k-labels.idx1-ubyte", y_test)
    (a, b), (c, d) = datasets.load_idx_dir(tmp_path)
    np.testing.assert_array_equal(a, x_train)
    np.testing.assert_array_equal(d, y_test)
    (tmp_path / "t10k-labels.idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError, match="t10k-labels"):
        datasets.load_idx_dir(tmp_path)


def test_load_mnist_reads_an_idx_folder(tmp_path):
    for split, n in (("train", 3), ("t10k", 2)):
        datasets.write_idx(tmp_path / f"{split}-images-idx3-ubyte", np.ones((n, 28, 28), "uint8"))
        datasets.write_idx(tmp_path / f"{split}-labels-idx1-ubyte", np.zeros(n, "uint8"))
    (x_train, _), (x_test, _) = datasets.load_mnist(tmp_path)
    assert x_train.shape == (3, 28, 28) and x_test.shape == (2, 28, 28)


def test_fashion_mnist_from_the_debian_package(monkeypatch, tmp_path):
    system = datasets.REGISTRY["fashion_mnist"].system_dirs[0]
    if not datasets.Path(system).is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    monkeypatch.setattr(datasets, "PROJECT_DATA_DIR", tmp_path)
    monkeypatch.delenv("KERAS_TUTORIAL_DATA", raising=False)
    (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist(download=False)
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28)
    assert sorted(np.unique(y_train)) == list(range(10))


def test_gzip_detection_does_not_trust_the_suffix(tmp_path):
    raw = datasets.write_idx(tmp_path / "x-idx1-ubyte", np.arange(3, dtype="uint8"))
    disguised = tmp_path / "x-idx1-ubyte.bin"
    with gzip.open(disguised, "wb") as handle:
        handle.write(raw.read_bytes())
    np.testing.assert_array_equal(datasets.read_idx(disguised), [0, 1, 2])


def test_colour_idx_folders_use_four_dimensions(tmp_path):
    for split, n in (("train", 3), ("t10k", 2)):
        datasets.write_idx(tmp_path / f"{split}-images-idx4-ubyte.gz", np.ones((n, 8, 6, 3), "uint8"))
        datasets.write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.zeros(n, "uint8"))
    assert datasets.holds_idx(tmp_path) and not datasets.holds_idx(tmp_path / "nothing")
    (x_train, _), (x_test, _) = datasets.load_idx_dir(tmp_path)
    assert x_train.shape == (3, 8, 6, 3) and x_test.shape == (2, 8, 6, 3)


def test_idx_header_dimensions_are_checked_against_the_file_size(tmp_path):
    path = datasets.write_idx(tmp_path / "x-idx3-ubyte", np.zeros((2, 3, 4), "uint8"))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(TutorialError, match=r"x-idx3-ubyte has extra bytes: its header promises 2x3x4"):
        datasets.read_idx(path)
    path.write_bytes(b"\0\0\x08\x03" + b"\0\0\0\x02")  # three dimensions announced, one given
    with pytest.raises(TutorialError, match="truncated: its header announces 3 dimensions"):
        datasets.read_idx(path)


def test_npz_datasets_are_checked_before_use(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, x_train=np.zeros((2, 4, 4), "uint8"), y_train=[0, 1], x_test=np.zeros((1, 4, 4), "uint8"),
             y_test=[1])
    (x_train, y_train), (_, y_test) = datasets.load_npz(good)
    assert x_train.shape == (2, 4, 4) and list(y_test) == [1]
    np.savez(tmp_path / "keys.npz", x=np.zeros(2))
    with pytest.raises(TutorialError, match=r"keys.npz lacks x_train, y_train, x_test, y_test.*holds x\)"):
        datasets.load_npz(tmp_path / "keys.npz")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        datasets.load_npz(tmp_path / "absent.npz")
