"""Benchmark of the RNN chapter's target: does the default LSTM beat seasonal naive?

Runs the default ``python rnn/forecast.py`` once per seed, exactly as a learner would
(a fresh process each, output in a temporary folder), and prints a markdown table: test
RMSE of the LSTM, the linear model and both baselines, the LSTM's improvement over
seasonal naive, and the wall time of each run. The summary line uses the median over
seeds.

    python benchmarks/rnn.py            # seeds 0 1 2
    python benchmarks/rnn.py --seeds 0 1 2 3 4 -- --cell gru
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "rnn/forecast.py"


def run_once(seed: int, extra: list[str], output_dir: Path) -> dict:
    """One default run in its own process; returns its run.json plus the wall time."""
    command = [sys.executable, SCRIPT, "--seed", str(seed), "--quiet", "--output-dir", str(output_dir),
               *extra]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed:\n{done.stderr[-2000:]}")
    run_dir = done.stdout.strip().splitlines()[-1].split("run folder: ", 1)[1]
    record = json.loads((Path(run_dir) / "run.json").read_text())
    record["benchmark_wall_seconds"] = wall
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="the seeds to train forecast.py with")
    parser.add_argument("extra", nargs="*", help="flags passed on to rnn/forecast.py (after --)")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            record = run_once(seed, args.extra, Path(tmp))
            m = record["metrics"]
            rows.append({"seed": seed, "network": m["test_rmse"], "linear": m["linear_rmse"],
                         "persistence": m["persistence_rmse"], "naive": m["seasonal_naive_rmse"],
                         "epochs": m["epochs_run"], "fit": m["fit_seconds"],
                         "wall": record["benchmark_wall_seconds"], "unit": record["unit"],
                         "model": record["model"]})
            print(f"seed {seed}: {rows[-1]['model']} RMSE {m['test_rmse']:.4f}, seasonal naive "
                  f"{m['seasonal_naive_rmse']:.4f}, {rows[-1]['wall']:.0f} s", file=sys.stderr, flush=True)

    unit, model = rows[0]["unit"], rows[0]["model"]
    print(f"command: `{shlex.join(['python', SCRIPT, *args.extra, '--seed', 'S'])}`\n")
    print(f"| seed | {model} RMSE ({unit}) | linear RMSE | persistence RMSE | seasonal naive RMSE | "
          f"{model} vs seasonal naive | epochs | fit() s | run wall s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['seed']} | {r['network']:.4f} | {r['linear']:.4f} | {r['persistence']:.4f} | "
              f"{r['naive']:.4f} | {r['network'] / r['naive'] - 1:+.1%} | {r['epochs']} | {r['fit']:.1f} | "
              f"{r['wall']:.1f} |")
    med = {k: statistics.median(r[k] for r in rows) for k in ("network", "linear", "naive", "wall")}
    print(f"\nmedian of {len(rows)} seeds: {model} test RMSE {med['network']:.4f} {unit} vs seasonal naive "
          f"{med['naive']:.4f} ({med['network'] / med['naive'] - 1:+.1%}, "
          f"{med['naive'] / med['network']:.1f}x lower); linear {med['linear']:.4f}; "
          f"default run {med['wall']:.0f} s wall")
    target_met = med["network"] < med["naive"]
    print(f"target (median {model} RMSE below seasonal naive): {'met' if target_met else 'NOT met'}")
    return 0 if target_met else 1


if __name__ == "__main__":
    sys.exit(main())
