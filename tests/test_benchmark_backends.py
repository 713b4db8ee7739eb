"""benchmarks/backends.py, benchmarks/rnn_torch_epochs.py and benchmarks/gpu_check.sh, without training."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import backends as bench
from benchmarks import rnn_torch_epochs as epochs

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_run_every_chapter_on_every_backend():
    args = bench.parse_args([])
    assert args.chapters == list(bench.NAMES) and len(bench.NAMES) == len(bench.CHAPTERS) == 9
    assert args.backends == ["tensorflow", "jax", "torch"] and not args.quick and args.deadline is None


def test_flags_choose_chapters_backends_and_mode():
    args = bench.parse_args(["--quick", "--chapters", "xor", "rnn", "--backends", "jax", "--timeout", "60",
                             "--deadline", "500", "--devices"])
    assert args.quick and args.chapters == ["xor", "rnn"] and args.backends == ["jax"]
    assert (args.timeout, args.deadline, args.devices) == (60.0, 500.0, True)


@pytest.mark.parametrize("argv", [["--chapters", "nope"], ["--backends", "theano"], ["--timeout", "0"],
                                  ["--deadline", "-5"]])
def test_bad_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        bench.parse_args(argv)
    assert stop.value.code == 2 and "error:" in capsys.readouterr().err


def test_command_is_the_chapter_command_plus_backend_and_output(tmp_path):
    mnist = bench.chapter_by_key("mnist")
    full = bench.command(mnist, "torch", False, tmp_path)
    assert full[1:] == ["mnist/mnist.py", "-m", "conv_net", "--backend", "torch",
                        "--output-dir", str(tmp_path), "--quiet"]
    quick = bench.command(mnist, "torch", True, tmp_path)
    assert "--dataset" in quick and quick.index("--backend") > quick.index("conv_net")
    shapes = bench.command(bench.chapter_by_key("cnn_shapes"), "jax", True, tmp_path)
    assert "--output-dir" not in shapes  # it writes no run folder


def test_every_chapter_script_exists():
    for chapter in bench.CHAPTERS:
        assert (ROOT / chapter.script).is_file(), chapter.script


def test_table_has_a_row_per_chapter_and_a_column_per_backend():
    results = {
        "xor": {"tensorflow": {"status": "works", "seconds": 12.34, "metric": 1.0},
                "jax": {"status": "exit 2", "seconds": 1.0, "error": "error: a | b"},
                "torch": {"status": "not installed"}},
        "cnn_shapes": {"tensorflow": {"status": "works", "seconds": 3.0, "metric": None},
                       "jax": {"status": "timeout", "seconds": 60.0}, "torch": {"status": "not run"}},
    }
    lines = bench.markdown_table(results, ("tensorflow", "jax", "torch")).splitlines()
    assert lines[0] == "| chapter | metric | tensorflow | jax | torch |" and len(lines) == 4
    assert all(line.count("|") == 6 for line in lines)  # a "|" in an error message is escaped
    assert lines[2].startswith("| 1 xor | accuracy | 12.3 s (1) | fails (exit 2): error: a / b")
    assert lines[2].endswith("| not installed |")
    assert lines[3] == "| 5 cnn shapes | - | 3.0 s | timeout after 60 s | not run |"


def test_device_table_has_a_row_per_chapter_and_backend():
    results = {"rnn": {"jax": {"status": "works", "seconds": 20.0, "metric": 0.5, "device": "cuda:0",
                               "s_per_epoch": 0.1234},
                       "torch": {"status": "exit 1", "error": "boom"}}}
    lines = bench.device_table(results).splitlines()
    assert lines[2] == "| 6 rnn | jax | cuda:0 | 0.123 | test_rmse | 0.5 | 20.0 |"
    assert lines[3].startswith("| 6 rnn | torch | fails (exit 1): boom")


def test_run_folder_is_read_for_metric_device_and_epoch_time(tmp_path):
    run_dir = tmp_path / "rnn" / "20260101-000000_lstm_32"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text('{"device": "cpu", "metrics": {"test_rmse": 0.25}}')
    (run_dir / "history.csv").write_text("epoch,loss,epoch_seconds\n1,2.0,5.0\n2,1.0,1.0\n3,0.5,2.0\n")
    found = bench.read_run(bench.chapter_by_key("rnn"), tmp_path)
    assert found == {"metric": 0.25, "device": "cpu", "s_per_epoch": 2.0}
    assert bench.read_run(bench.chapter_by_key("xor"), tmp_path) == {}


# --- rnn_torch_epochs.py --------------------------------------------------------------------

def test_epoch_benchmark_summary_and_table():
    rows = epochs.summarise([{"variant": "default", "epoch_seconds": [9.0, 4.0, 80.0, 4.0], "wall": 120.0,
                              "cpu": 200.0},
                             {"variant": "passive", "epoch_seconds": [9.0, 4.0, 4.0, 4.0], "wall": 30.0}])
    assert rows[0]["median"] == 4.0 and rows[0]["slowest"] == 80.0 and rows[1]["ratio"] == 1.0
    table = epochs.markdown_table(rows).splitlines()
    assert len(table) == 4
    assert table[2] == "| default | 9.0, 4.0, 80.0, 4.0 | 4.00 | 80.0 | 1.00x | 120 | 200 |"


def test_epoch_benchmark_flags_and_wrapper():
    args = epochs.parse_args(["--epochs", "3", "--variants", "default", "passive"])
    assert args.epochs == 3 and args.variants == ["default", "passive"]
    with pytest.raises(SystemExit):
        epochs.parse_args(["--variants", "fastest"])
    code = epochs.wrapper_code("default", ["--epochs", "3"])
    compile(code, "<wrapper>", "exec")
    assert "torch.set_num_threads = " in code and "'--epochs', '3'" in code


# --- gpu_check.sh ---------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_without_a_gpu_says_so_in_one_line_and_exits_3(tmp_path):
    # A PATH without nvidia-smi: the machine has no NVIDIA GPU as far as the script can tell.
    (tmp_path / "bin").mkdir()
    for tool in ("dirname", "date", "grep", "head"):
        if shutil.which(tool):
            (tmp_path / "bin" / tool).symlink_to(shutil.which(tool))
    done = subprocess.run([shutil.which("bash"), str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=tmp_path,
                          env={"PATH": str(tmp_path / "bin"), "OUT": str(tmp_path / "out")},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 3
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
    assert "no NVIDIA GPU" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing installed, nothing run


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_with_a_gpu_that_lists_nothing_exits_3(tmp_path):
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    fake.chmod(0o755)
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=tmp_path,
                          env={**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 3 and "no NVIDIA GPU" in done.stderr
