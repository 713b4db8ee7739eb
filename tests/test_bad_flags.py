"""A mistake on the command line is answered in one line, before any work starts.

The scripts' ``main`` is called in-process: parsing happens before Keras is
imported, so these cases cost milliseconds.
"""

from __future__ import annotations

import os

import pytest

from cnn import shapes
from mlp import mlp
from mnist import mnist
from xor import xor

MAINS = {"xor": xor.main, "mlp": mlp.main, "mnist": mnist.main}


def one_error_line(capsys, main, argv) -> str:
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and "usage:" not in lines[0] and "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("script", sorted(MAINS))
@pytest.mark.parametrize("argv,words", [
    (["--seed", "-1"], ["--seed", "0 to 4,294,967,295"]),
    (["--seed", str(2**32)], ["--seed", "too large"]),
    (["--epochs", "0"], ["--epochs", "1 to"]),
    (["--batch-size", "-3"], ["--batch-size", "1 to"]),
    (["--epochs", "many"], ["--epochs", "not a whole number"]),
    (["--output-dir", ""], ["--output-dir", "empty"]),
    (["--output-dir", "/proc/runs"], ["--output-dir", "/proc"]),
    (["--output-dir", "/sys/kernel/runs"], ["--output-dir", "/sys"]),
    (["--backend", "theano"], ["--backend"]),
])
def test_common_flags(script, argv, words, capsys):
    line = one_error_line(capsys, MAINS[script], argv)
    for word in words:
        assert word in line


@pytest.mark.parametrize("script", ["xor", "mlp", "mnist"])
@pytest.mark.parametrize("value", ["inf", "nan", "0", "-0.1", "-inf"])
def test_learning_rate_must_be_finite_and_positive(script, value, capsys):
    line = one_error_line(capsys, MAINS[script], [f"--learning-rate={value}"])
    assert "--learning-rate" in line and "finite number greater than 0" in line


@pytest.mark.parametrize("script", ["xor", "mlp"])
def test_absurd_layer_size_is_refused_with_its_range(script, capsys):
    line = one_error_line(capsys, MAINS[script], ["--hidden", "1000000000"])
    assert "--hidden" in line and "1 to 10,000" in line


@pytest.mark.parametrize("limit", ["5", "30"])
def test_limit_too_small_for_a_validation_image_per_class(limit, capsys):
    line = one_error_line(capsys, mnist.main, ["--limit", limit])
    assert "--limit" in line and "or more" in line


def test_output_dir_that_is_a_file(tmp_path, capsys):
    file = tmp_path / "results.txt"
    file.write_text("not a folder")
    assert "is a file" in one_error_line(capsys, xor.main, ["--output-dir", str(file)])
    line = one_error_line(capsys, xor.main, ["--output-dir", str(file / "below")])
    assert "which is a file" in line and str(file) in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_output_dir_that_cannot_be_written(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        line = one_error_line(capsys, xor.main, ["--output-dir", str(locked / "runs")])
    finally:
        locked.chmod(0o755)
    assert "cannot write" in line and not (locked / "runs").exists()


def test_writable_output_dir_is_checked_without_leaving_folders(tmp_path):
    args = xor.parse_args(["--output-dir", str(tmp_path / "a" / "b")])
    assert args.output_dir == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []  # the probe cleaned up after itself


def test_scripts_without_training_flags_share_the_checks(capsys):
    line = one_error_line(capsys, shapes.main, ["--seed", "99999999999"])
    assert "--seed" in line
