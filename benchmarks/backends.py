"""Every chapter on every backend: does its command work, and how long does it take?

Runs each chapter's command from the README's chapter table once per Keras backend, each
in a fresh process exactly as a learner would type it (plus ``--backend`` and a temporary
``--output-dir``), and prints a markdown table: chapter x backend -> wall seconds and the
chapter's headline number, or why it failed. ``--quick`` runs each chapter's short variant
instead (tiny data, few epochs: the whole table in minutes rather than hours).
``--sample-epochs N`` runs the full commands, but each chapter whose command takes many
minutes on a CPU (churn's 100 epochs, chapter 4's 60 Fashion-MNIST epochs, the schedules'
six runs of 20) trains only N epochs, and its
cell adds the projected time of the whole command: the measured wall time plus the
median measured epoch times for the epochs left out.

    python benchmarks/backends.py --quick                      # every chapter, every backend
    python benchmarks/backends.py --chapters xor churn --backends jax torch
    python benchmarks/backends.py --quick --json backends.json # the numbers, for later
    python benchmarks/backends.py --sample-epochs 2            # full commands, long ones sampled
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python benchmarks/backends.py`: the project's package

from utils.runs import cpu_name  # noqa: E402  (the same CPU name run.json records)

BACKENDS = ("tensorflow", "jax", "torch")


@dataclass(frozen=True)
class Chapter:
    """A chapter's command (``full``), its short variant (``quick``), and the run.json metric
    shown beside the time (``metric``; empty: only whether it worked)."""

    name: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    metric: str = ""
    folder: str = ""  # the run folder's chapter directory under --output-dir
    epochs: int = 0   # epochs the full command trains (its --epochs default); 0: not epoch-based
    long: bool = False  # its full command takes many minutes on a CPU: --sample-epochs shortens it


DATA = "{data}"
CHAPTERS: tuple[Chapter, ...] = (
    Chapter("1 xor", "xor/xor.py", (), ("--epochs", "200", "--learning-rate", "0.05"), "accuracy", "xor",
            500),
    Chapter("2 churn", "mlp/mlp.py", (), ("--epochs", "5", "--learning-rate", "0.01"), "accuracy", "mlp",
            100, True),
    Chapter("3 model API", "mlp/model_api.py", (), ("--part", "api"), "max_output_difference", "model_api"),
    Chapter("4 mnist", "mnist/mnist.py", ("-m", "conv_net"),
            ("-m", "conv_net", "--dataset", "digits", "--epochs", "5"), "test_accuracy", "mnist", 60, True),
    Chapter("5 cnn shapes", "cnn/shapes.py", (), ("-m", "le_net")),
    Chapter("5 cnn transfer", "cnn/transfer.py", ("--quick",), ("--quick", "--repeats", "1"),
            "source_val_accuracy", "cnn"),
    Chapter("6 rnn", "rnn/forecast.py", (), ("--epochs", "5"), "test_rmse", "rnn", 40),
    Chapter("7 serving", "serving/save_load.py", (), ("--epochs", "100", "--resume-epochs", "20"),
            "accuracy", "serving"),
    Chapter("8 schedules", "mnist/schedules.py", (),
            ("--schedule", "cosine", "--dataset", "digits", "--epochs", "5"), "cosine_test_accuracy",
            "mnist_schedules", 20, True),
)
NAMES = tuple(c.name.split(" ", 1)[1].replace(" ", "_").lower() for c in CHAPTERS)


def chapter_by_key(key: str) -> Chapter:
    return CHAPTERS[NAMES.index(key)]


def sampled_epochs(chapter: Chapter, quick: bool, sample: int | None) -> int | None:
    """How many epochs the cell trains instead of the full command's (None: all of them)."""
    if quick or not sample or not chapter.long or chapter.epochs <= sample:
        return None
    return sample


def command(chapter: Chapter, backend: str, quick: bool, output_dir: Path,
            sample: int | None = None) -> list[str]:
    """The command line of one cell of the table."""
    data = os.environ.get("KERAS_TUTORIAL_DATA") or str(ROOT.parent / "shared" / "data")
    flags = [a.format(data=data) for a in (chapter.quick if quick else chapter.full)]
    extra = ["--backend", backend]
    epochs = sampled_epochs(chapter, quick, sample)
    if epochs:
        extra += ["--epochs", str(epochs)]
    if chapter.script != "cnn/shapes.py":
        extra += ["--output-dir", str(output_dir), "--quiet"]
    return [sys.executable, chapter.script, *flags, *extra]


def newest_run(chapter: Chapter, output_dir: Path) -> Path | None:
    """The chapter's newest run folder under ``output_dir`` (None for a chapter that writes none)."""
    if not chapter.folder:
        return None
    records = sorted((output_dir / chapter.folder).glob("*/run.json"), key=lambda p: p.stat().st_mtime)
    return records[-1].parent if records else None


def read_run(chapter: Chapter, output_dir: Path) -> dict:
    """From the run folder: the chapter's metric, the device the backend saw, the median
    seconds per epoch (history.csv's ``epoch_seconds``), each when there is one."""
    run_dir = newest_run(chapter, output_dir)
    if run_dir is None:
        return {}
    record = json.loads((run_dir / "run.json").read_text())
    value = record.get("metrics", {}).get(chapter.metric)
    found = {"metric": float(value) if isinstance(value, (int, float)) else None,
             "device": record.get("device")}
    history = run_dir / "history.csv"
    if history.is_file():
        with history.open() as f:
            seconds = [float(row["epoch_seconds"]) for row in csv.DictReader(f) if row.get("epoch_seconds")]
        if seconds:
            found["s_per_epoch"] = statistics.median(seconds)
    return found


def epochs_left_seconds(chapter: Chapter, output_dir: Path, trained: int) -> float:
    """Seconds the epochs left out would have taken: for each training in the run's
    history.csv (schedules.py trains several, told apart by its ``run`` column), its median
    epoch time times the epochs it did not train."""
    run_dir = newest_run(chapter, output_dir)
    history = run_dir / "history.csv" if run_dir else None
    if history is None or not history.is_file():
        return 0.0
    groups: dict[str, list[float]] = {}
    with history.open() as f:
        for row in csv.DictReader(f):
            if row.get("epoch_seconds"):
                groups.setdefault(row.get("run") or "", []).append(float(row["epoch_seconds"]))
    return sum(statistics.median(times) * (chapter.epochs - trained) for times in groups.values())


def last_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else "no output"


def measure(chapter: Chapter, backend: str, quick: bool, timeout: float, sample: int | None = None) -> dict:
    """Run one cell in its own process; works / seconds / metric / why not (and, for a sampled
    cell, the projected seconds of the whole command)."""
    if importlib.util.find_spec(backend) is None:
        return {"status": "not installed"}
    with tempfile.TemporaryDirectory() as tmp:
        line = command(chapter, backend, quick, Path(tmp), sample)
        start = time.perf_counter()
        try:
            done = subprocess.run(line, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "MPLBACKEND": "Agg"})
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "seconds": timeout, "command": shlex.join(line[1:])}
        seconds = time.perf_counter() - start
        result = {"status": "works" if done.returncode == 0 else f"exit {done.returncode}",
                  "seconds": round(seconds, 1), "command": shlex.join(line[1:])}
        if done.returncode == 0:
            result.update(read_run(chapter, Path(tmp)))
            epochs = sampled_epochs(chapter, quick, sample)
            if epochs:
                result["sampled_epochs"] = epochs
                left = epochs_left_seconds(chapter, Path(tmp), epochs)
                result["projected_seconds"] = round(seconds + left, 1)
        else:
            result["error"] = last_error_line(done.stderr)
        return result


def cell(result: dict) -> str:
    """One table cell: ``12.3 s (0.9750)``, or the reason it did not work."""
    status = result.get("status")
    if status == "works":
        metric = result.get("metric")
        text = f"{result['seconds']:.1f} s" + (f" ({metric:.4g})" if metric is not None else "")
        if result.get("sampled_epochs"):
            whole = result["projected_seconds"]
            text += f", {result['sampled_epochs']} epochs; all: ~" + (
                f"{whole:.0f} s" if whole < 120 else f"{whole / 60:.0f} min")
        return text
    if status == "timeout":
        return f"timeout after {result['seconds']:.0f} s"
    if status in ("not installed", "not run"):
        return status
    return f"fails ({status}): {result.get('error', '')}".replace("|", "/")


def markdown_table(results: dict[str, dict[str, dict]], backends: tuple[str, ...]) -> str:
    """``results[chapter][backend]`` -> a markdown table, one row per chapter."""
    lines = ["| chapter | metric | " + " | ".join(backends) + " |",
             "|---|---|" + "---:|" * len(backends)]
    for name, row in results.items():
        chapter = chapter_by_key(name)
        lines.append(f"| {chapter.name} | {chapter.metric or '-'} | "
                     + " | ".join(cell(row.get(b, {"status": "not run"})) for b in backends) + " |")
    return "\n".join(lines)


def device_table(results: dict[str, dict[str, dict]]) -> str:
    """One row per chapter and backend: the device the backend saw, seconds per epoch, metric."""
    lines = ["| chapter | backend | device seen | s/epoch | metric | value | wall s |",
             "|---|---|---|---:|---|---:|---:|"]
    for name, row in results.items():
        chapter = chapter_by_key(name)
        for backend, r in row.items():
            if r.get("status") != "works":
                lines.append(f"| {chapter.name} | {backend} | {cell(r)} | | | | |")
                continue
            per_epoch = f"{r['s_per_epoch']:.3f}" if r.get("s_per_epoch") is not None else "-"
            value = f"{r['metric']:.4g}" if r.get("metric") is not None else "-"
            lines.append(f"| {chapter.name} | {backend} | {r.get('device') or '-'} | {per_epoch} | "
                         f"{chapter.metric or '-'} | {value} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="each chapter's short variant instead of its full command")
    parser.add_argument("--sample-epochs", type=int, default=None, metavar="N",
                        help="full commands, but train at most N epochs and project the whole "
                             "command's time from them; None: train every epoch")
    parser.add_argument("--chapters", nargs="+", choices=NAMES, default=list(NAMES), metavar="NAME",
                        help=f"chapters to run, from: {', '.join(NAMES)}")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                        help="backends to run each chapter on")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds one command may take before it is stopped and reported")
    parser.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                        help="start no new command after this many seconds (the rest are 'not run'); "
                             "None: no limit")
    parser.add_argument("--devices", action="store_true",
                        help="print one row per chapter and backend with the device seen and s/epoch")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write every result (commands, seconds, metrics) to this file")
    args = parser.parse_args(argv)
    if not args.timeout > 0:
        parser.error("--timeout must be greater than 0")
    if args.deadline is not None and not args.deadline > 0:
        parser.error("--deadline must be greater than 0")
    if args.sample_epochs is not None and (args.quick or args.sample_epochs < 1):
        parser.error("--sample-epochs must be 1 or more, and applies to the full commands (not --quick)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = tuple(args.backends)
    results: dict[str, dict[str, dict]] = {}
    start = time.perf_counter()
    for name in args.chapters:
        chapter = chapter_by_key(name)
        results[name] = {}
        for backend in backends:
            left = None if args.deadline is None else args.deadline - (time.perf_counter() - start)
            if left is not None and left <= 0:
                results[name][backend] = {"status": "not run"}
                continue
            print(f"{chapter.name} on {backend} ...", end=" ", flush=True)
            timeout = args.timeout if left is None else min(args.timeout, max(left, 1.0))
            results[name][backend] = measure(chapter, backend, args.quick, timeout, args.sample_epochs)
            print(cell(results[name][backend]), flush=True)
    mode = "quick variants" if args.quick else "full commands" + (
        f" (at most {args.sample_epochs} epochs each, the rest projected)" if args.sample_epochs else "")
    print(f"\n{mode}; {cpu_name()}, {os.cpu_count()} cores, {time.perf_counter() - start:.0f} s\n")
    print(device_table(results) if args.devices else markdown_table(results, backends))
    if args.json:
        record = {"quick": args.quick, "sample_epochs": args.sample_epochs, "cpu": cpu_name(),
                  "results": results}
        args.json.write_text(json.dumps(record, indent=1))
    return 0 if all(r.get("status") in ("works", "not installed", "not run") for row in results.values()
                    for r in row.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
