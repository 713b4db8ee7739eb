"""Per-epoch time of the RNN chapter's LSTM on PyTorch, with and without passive OpenMP threads.

On the torch backend the forecast process holds two OpenMP thread pools (PyTorch's own
and the one scikit-learn loads) beside TensorFlow's tf.data threads. By default an OpenMP
thread that runs out of work keeps spinning on its core for a while, hoping for more; on a
2-core machine those spinning threads take the cores the next step needs, and an epoch can
take many times longer than the one before it. ``utils/__init__.py`` therefore sets
``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep) before any of those libraries load, unless
the learner set the variable.

This script runs ``python rnn/forecast.py --backend torch`` in fresh processes, once per
variant, and reads ``epoch_seconds`` from each run's history.csv:

- ``default``: the OpenMP runtimes' own wait policy (the variable removed again before
  PyTorch loads), as it was before the setting;
- ``passive``: ``OMP_WAIT_POLICY=PASSIVE``, what every chapter script now gets;
- ``flush_denormal``: default wait policy, but ``torch.set_flush_denormal(True)``, to rule
  out slow denormal arithmetic as the cause.

    python benchmarks/rnn_torch_epochs.py                       # 6 epochs, every variant
    python benchmarks/rnn_torch_epochs.py --epochs 3 --variants default passive
"""

from __future__ import annotations

import argparse
import csv
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "rnn/forecast.py"
VARIANTS = {
    "default": "the chapter as it is: one PyTorch thread while the network trains",
    "two_threads": "PyTorch's default thread count (2 here); idle OpenMP threads spin for a while",
    "passive": "two threads, OMP_WAIT_POLICY=PASSIVE (idle threads sleep)",
    "flush_denormal": "two threads, torch.set_flush_denormal(True)",
}

# Runs the chapter script as `python rnn/forecast.py ...` would, after choosing the variant.
# `import utils` first, so that what it sets is in place, then undo or add what the variant
# changes, all before PyTorch (and its OpenMP runtime) is loaded.
_WRAPPER = """
import os, runpy, sys
sys.path.insert(0, {root!r})
import utils
variant = {variant!r}
if variant == "passive":
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
import torch
if variant != "default":
    torch.set_num_threads = lambda n: None  # keep PyTorch's own thread count
if variant == "flush_denormal":
    torch.set_flush_denormal(True)
sys.argv = [{script!r}, *{argv!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


def wrapper_code(variant: str, argv: list[str]) -> str:
    return _WRAPPER.format(root=str(ROOT), variant=variant, script=SCRIPT, argv=list(argv))


def run_variant(variant: str, epochs: int, extra: list[str], output_dir: Path) -> dict:
    """One forecast run in a fresh process; returns its per-epoch seconds and wall time."""
    argv = ["--backend", "torch", "--epochs", str(epochs), "--patience", str(epochs), "--quiet",
            "--output-dir", str(output_dir / variant), *extra]
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", wrapper_code(variant, argv)], cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"{variant}: rnn/forecast.py failed:\n{done.stderr[-2000:]}")
    (history,) = (output_dir / variant / "rnn").glob("*/history.csv")
    with history.open() as f:
        seconds = [float(row["epoch_seconds"]) for row in csv.DictReader(f)]
    return {"variant": variant, "epoch_seconds": seconds, "wall": wall, "cpu": cpu}


def summarise(rows: list[dict]) -> list[dict]:
    """Median and slowest epoch per variant, and each median relative to the first row's."""
    reference = None
    out = []
    for row in rows:
        seconds = row["epoch_seconds"]
        # The first epoch also builds and traces the model: the median leaves it out when it can.
        steady = seconds[1:] if len(seconds) > 2 else seconds
        median = statistics.median(steady)
        reference = reference if reference is not None else median
        out.append({**row, "median": median, "slowest": max(seconds),
                    "ratio": median / reference if reference else float("nan")})
    return out


def markdown_table(rows: list[dict]) -> str:
    lines = ["| variant | seconds per epoch (1, 2, ...) | median of epochs 2+ | slowest "
             "| median vs first row | wall s | CPU s (all threads) |", "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        per_epoch = ", ".join(f"{s:.1f}" for s in row["epoch_seconds"])
        lines.append(f"| {row['variant']} | {per_epoch} | {row['median']:.2f} | {row['slowest']:.1f} | "
                     f"{row['ratio']:.2f}x | {row['wall']:.0f} | {row.get('cpu', float('nan')):.0f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6, help="LSTM epochs per run (early stopping off)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="what to compare; the first is the reference of the ratio column")
    parser.add_argument("extra", nargs="*", help="flags passed on to rnn/forecast.py (after --)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            print(f"running {variant}: {VARIANTS[variant]} ...", flush=True)
            rows.append(run_variant(variant, args.epochs, args.extra, Path(tmp)))
    print()
    print(markdown_table(summarise(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
