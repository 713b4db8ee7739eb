"""How long every script takes to answer ``--help``: median wall time of fresh processes.

Every chapter script reads its flags before it imports Keras, so ``--help``
and a mistyped flag answer at once; this measures it, script by script, and
prints a markdown table. A bare ``python -c pass`` is timed too: the part of
each number that is only the interpreter starting.

    python benchmarks/help_times.py --repeats 5
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils import cli  # noqa: E402

# How each script is started from the repository root: by path, or with -m for the utils tools.
SCRIPTS = (
    "xor/xor.py", "mlp/mlp.py", "mlp/model_api.py",
    "mnist/mnist.py", "mnist/schedules.py", "mnist/tune.py",
    "cnn/shapes.py", "cnn/classify.py", "cnn/transfer.py", "cnn/filters.py",
    "rnn/forecast.py", "rnn/compare_cells.py",
    "serving/save_load.py", "serving/app.py", "serving/samples.py",
    "-m utils.inspect", "-m utils.diagram", "-m utils.compare", "-m utils.datasets",
    "benchmarks/xor.py", "benchmarks/mnist.py", "benchmarks/mnist_input.py", "benchmarks/churn.py",
    "benchmarks/rnn.py", "benchmarks/run.py", "benchmarks/serving_load.py",
)


def command(script: str) -> list[str]:
    return [sys.executable, *script.split()]


def time_once(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, timeout=300)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(args)} exited with {done.returncode}: "
                         f"{done.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=cli._HelpFormatter)
    parser.add_argument("--repeats", type=cli.int_in(1, 100), default=5,
                        help="fresh processes per script; the median is reported")
    parser.add_argument("scripts", nargs="*", default=list(SCRIPTS), metavar="SCRIPT",
                        help="scripts to time, as in the table (default: every script)")
    args = parser.parse_args(argv)

    baseline = statistics.median(time_once([sys.executable, "-c", "pass"]) for _ in range(args.repeats))
    print("| script | median `--help` (s) | of which Python start (s) |\n|---|---:|---:|")
    worst = 0.0
    for script in args.scripts:
        median = statistics.median(time_once([*command(script), "--help"]) for _ in range(args.repeats))
        worst = max(worst, median)
        print(f"| `python {script} --help` | {median:.2f} | {baseline:.2f} |", flush=True)
    print(f"\nslowest {worst:.2f} s; {args.repeats} runs each; Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
