"""The benchmark suite: every recipe, every installed backend, naive port against chapter.

For XOR, churn, MNIST ``conv_net`` and ``best_conv_net`` it measures, on each
backend, the naive Keras 3 port and the chapter's training side by side:
seconds per epoch (median of repeats), samples per second, training time to a
target accuracy, peak memory, and for the conv nets the achieved GFLOP/s
against the CPU's peak. Every measurement runs in a fresh child process, so
each has its own backend and its own peak memory (``ru_maxrss``). A
measurement that fails or times out becomes an error row; the rest go on.

    python benchmarks/run.py --quick      # every recipe, briefly: aims at 3-5 min on 2 idle cores
    python benchmarks/run.py              # the full suite: 21 min on 2 idle cores
    python benchmarks/run.py --recipe churn --backend jax --backend tensorflow --repeats 3

Results go to outputs/benchmarks/<time>_suite/: results.md (the table),
results.csv, s_per_epoch.png, run.json, and logs/ with each child's output.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.suite import flops, report  # noqa: E402
from utils import cli, runs  # noqa: E402

RECIPES = ("xor", "churn", "conv_net", "best_conv_net")
VARIANTS = ("naive", "chapter")
FAIL_ENV = "KERAS_TUTORIAL_BENCH_FAIL"  # "recipe[:variant]" makes that measurement fail (tests)


@dataclasses.dataclass(frozen=True)
class Settings:
    """How one recipe is measured in one mode."""

    epochs: int             # epochs per timed fit (the cap when training stops at the target)
    repeats: int            # timed fits per measurement; the table shows the median
    target: float | None    # accuracy whose time is measured (None: not measured)
    stop_at_target: bool    # end a fit once the target is reached (else run all epochs)
    subset: int | None = None         # conv nets: training images per timed epoch (None: all)
    slice_scoring: bool = True        # conv nets on a subset: score the same share of images too
    target_epochs: int | None = None  # conv nets: epochs cap of the time-to-target run
    timeout: int = 900      # seconds before a measurement is stopped and recorded as an error


# What each recipe measures, and why these caps:
# - xor trains the recipe's 500 epochs of batch size 1; target: 100% accuracy.
# - churn stops at 0.84 validation accuracy, capped at 40 epochs: seeds 0-2 reach it after
#   25-28 epochs, while 0.85 takes 32-61, too long for the torch backend's slow epochs.
# - conv nets on the target backend train full epochs until 0.90 test accuracy (the MNIST
#   chapter's benchmark saw conv_net cross it at epoch 11, best_conv_net's validation
#   accuracy crossed it at epoch 5); on the other backends, where a full epoch costs several
#   times more (JAX), three epochs of 6,000 training images time the speed (the median step
#   of epochs 2-3: the first compiles), scoring all validation/test images so that cost is
#   measured, not scaled.
FULL = {
    "xor": Settings(epochs=500, repeats=3, target=1.0, stop_at_target=False),
    "churn": Settings(epochs=40, repeats=1, target=0.84, stop_at_target=True),
    "conv_net": Settings(epochs=3, repeats=1, target=0.90, stop_at_target=True, subset=6000,
                         slice_scoring=False, target_epochs=12, timeout=1200),
    "best_conv_net": Settings(epochs=3, repeats=1, target=0.90, stop_at_target=True, subset=6000,
                              slice_scoring=False, target_epochs=8, timeout=1200),
}
QUICK = {
    "xor": Settings(epochs=100, repeats=1, target=1.0, stop_at_target=False, timeout=300),
    "churn": Settings(epochs=2, repeats=1, target=0.84, stop_at_target=True, timeout=300),
    "conv_net": Settings(epochs=3, repeats=1, target=None, stop_at_target=False, subset=1024,
                         timeout=300),
    "best_conv_net": Settings(epochs=3, repeats=1, target=None, stop_at_target=False, subset=768,
                              timeout=300),
}
TINY = {  # the tests' mode (hidden --tiny): seconds, not minutes
    "xor": Settings(epochs=20, repeats=1, target=1.0, stop_at_target=False, timeout=600),
    "churn": Settings(epochs=2, repeats=1, target=0.84, stop_at_target=True, timeout=600),
    "conv_net": Settings(epochs=2, repeats=1, target=None, stop_at_target=False, subset=256,
                         timeout=600),
    "best_conv_net": Settings(epochs=2, repeats=1, target=None, stop_at_target=False, subset=256,
                              timeout=600),
}
TARGET_TEXT = {"xor": "100% accuracy", "churn": "0.84 validation accuracy",
               "conv_net": "0.90 test accuracy", "best_conv_net": "0.90 test accuracy"}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """"(default: X)" after every option, once; the description keeps its lines."""

    def _get_help_string(self, action):
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=_HelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="few epochs, 1 repeat, conv nets on a slice of the images and no "
                             "time to target for them: a check that everything runs, not final numbers")
    parser.add_argument("--recipe", action="append", choices=RECIPES, metavar="NAME",
                        help=f"recipe to measure, repeatable: {', '.join(RECIPES)} (default: all)")
    parser.add_argument("--backend", action="append", choices=cli.BACKENDS, metavar="NAME",
                        help=f"backend to measure, repeatable: {', '.join(cli.BACKENDS)} "
                             "(default: all; one that is not installed is skipped with the reason)")
    parser.add_argument("--repeats", type=cli.positive_int, default=None,
                        help="timed fits per measurement (default: xor 3, the others 1, whose "
                             "seconds per epoch are already medians over many epochs)")
    parser.add_argument("--target-backend", choices=cli.BACKENDS, default="tensorflow",
                        help="where the conv nets' time to target is measured (full epochs until "
                             "0.90 test accuracy); elsewhere they are timed on a slice of the images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first repeat (then +1, +2, ...)")
    parser.add_argument("--dataset", default="fashion_mnist", choices=("fashion_mnist", "mnist", "digits"),
                        help="images for the conv nets")
    parser.add_argument("--timeout", type=cli.positive_int, default=None,
                        help="seconds before a measurement is stopped and recorded as an error "
                             "(default: 300 with --quick, 900 for xor and churn, 1200 for the conv nets)")
    parser.add_argument("--output-dir", type=cli.output_dir, default=cli.DEFAULT_OUTPUT_DIR,
                        help="run folders go to <dir>/benchmarks/<time>_suite/")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", metavar="SPEC_JSON", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def installed(backend: str) -> bool:
    return importlib.util.find_spec(backend) is not None


def plan(args, is_installed=installed) -> tuple[list[dict], list[dict]]:
    """(measurements to run, rows skipped with their reason), in run order."""
    table = TINY if args.tiny else QUICK if args.quick else FULL
    specs, skipped = [], []
    for recipe in args.recipe or RECIPES:
        settings = table[recipe]
        for backend in args.backend or cli.BACKENDS:
            if not is_installed(backend):
                reason = (f"skipped: {backend} is not installed (`pip install {backend}`, "
                          "see requirements-backends.txt)")
                skipped += [{"recipe": recipe, "backend": backend, "variant": v, "status": "skipped",
                             "note": reason} for v in VARIANTS]
                continue
            # The conv nets' time to target only on one backend: full epochs cost minutes elsewhere.
            full_run = settings.target_epochs is not None and backend == args.target_backend
            for variant in VARIANTS:
                specs.append({
                    "recipe": recipe, "variant": variant, "backend": backend, "seed": args.seed,
                    "repeats": args.repeats or settings.repeats,
                    "epochs": settings.target_epochs if full_run else settings.epochs,
                    "target": settings.target if (full_run or settings.subset is None) else None,
                    "stop_at_target": settings.stop_at_target, "batch_size": 256,
                    "subset": None if full_run else settings.subset, "dataset": args.dataset,
                    "slice_scoring": settings.slice_scoring,
                    "timeout": args.timeout or settings.timeout,
                })
    return specs, skipped


def run_child(spec: dict, logs: Path) -> dict:
    """Measure ``spec`` in a fresh process; add its peak memory, wall time and any error."""
    name = f"{spec['recipe']}_{spec['backend']}_{spec['variant']}"
    log, result_file = logs / f"{name}.log", logs / f"{name}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec),
               "--result", str(result_file)]
    env = {**os.environ, "KERAS_BACKEND": spec["backend"]}
    start, timed_out = time.perf_counter(), False
    with open(log, "w") as out:
        child = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            while True:
                # wait4 returns the child's own resource usage, ru_maxrss included.
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() - start > spec["timeout"]:
                    child.kill()
                    _, status, usage = os.wait4(child.pid, 0)
                    timed_out = True
                    break
                time.sleep(0.2)
        except BaseException:  # Ctrl-C: do not leave the child training
            child.kill()
            child.wait()
            raise
        child.returncode = os.waitstatus_to_exitcode(status)
    row = {"recipe": spec["recipe"], "backend": spec["backend"], "variant": spec["variant"],
           "spec": spec, "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
           # CPU seconds hardly change when other jobs share the machine; wall seconds do.
           "cpu_s": usage.ru_utime + usage.ru_stime,
           "wall_s": time.perf_counter() - start, "log": str(log)}
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    if timed_out:
        return {**row, "status": "error", "error": f"timed out after {spec['timeout']} s (see {log.name})"}
    if "error" in result or child.returncode != 0 or not result:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
        message = result.get("error") or f"exit code {child.returncode}: {' '.join(tail)[:300]}"
        return {**row, "status": "error", "error": message}
    return {**row, "status": "ok", **result}


def _exit_with_parent() -> None:
    """End this child if the suite that started it dies (killed, or a test's timeout),
    instead of training on as an orphan."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def worker_main(args) -> int:
    """Inside the child: choose the backend, measure, write the result file."""
    _exit_with_parent()
    spec = json.loads(args.worker)
    try:
        fail = os.environ.get(FAIL_ENV, "")
        if fail and fail in (spec["recipe"], f"{spec['recipe']}:{spec['variant']}"):
            raise RuntimeError(f"failure injected by {FAIL_ENV}={fail}")
        cli.select_backend(spec["backend"])  # before Keras is imported
        from benchmarks.suite import worker

        result = worker.measure(spec)
    except Exception as err:  # recorded as the measurement's error row; the suite goes on
        traceback.print_exc()
        args.result.write_text(json.dumps({"error": f"{type(err).__name__}: {err}"}))
        return 1
    args.result.write_text(json.dumps(result))
    return 0


def summarise(row: dict, peak: dict) -> dict:
    """One measurement's table row from its per-repeat numbers."""
    if row["status"] != "ok":
        return row
    spec = row["spec"]
    s_epoch = statistics.median(row["s_per_epoch"])
    out = {**row, "s_per_epoch": s_epoch, "samples_per_s": row["train_samples"] / s_epoch,
           "first_epoch_s": statistics.median(row["first_epoch_s"]),
           "final_metric": statistics.median(row["final_metric"]),
           "epochs_run": max(row["epochs_run"]), "repeats": spec["repeats"],
           "s_per_epoch_repeats": row["s_per_epoch"]}
    reached = [t for t in row["time_to_target_s"] if t is not None]
    target = TARGET_TEXT[spec["recipe"]]
    if spec["target"] is None:
        out["time_to_target"] = None
        out["time_to_target_text"] = "not measured here"
    elif len(reached) == len(row["time_to_target_s"]):
        out["time_to_target"] = statistics.median(reached)
        epochs = sorted(e for e in row["target_epoch"] if e is not None)
        out["time_to_target_text"] = f"{out['time_to_target']:.1f} s (epoch {statistics.median(epochs):g})"
    else:
        out["time_to_target"] = None
        out["time_to_target_text"] = (f"not reached in {spec['epochs']} epochs"
                                      + (f" ({len(reached)}/{len(row['time_to_target_s'])} repeats did)"
                                         if reached else ""))
    out["target"] = target
    notes = []
    if spec.get("subset"):
        notes.append(f"s/epoch extrapolated from epochs of {row['timed_epoch_images']:,} images")
        out["s_per_epoch_scaled"] = statistics.median(row["s_per_epoch_scaled"])
    if row.get("flops_per_sample"):
        # Per epoch: a training step (~3x forward) per training image, one forward pass per
        # image scored inside the epoch (validation).
        samples = flops.TRAINING_FACTOR * row["train_samples"] + row["eval_samples"]
        per_epoch = samples * row["flops_per_sample"]
        out["gflops"] = per_epoch / s_epoch / 1e9
        out["pct_peak"] = 100 * out["gflops"] / peak["gflops"] if peak["gflops"] else None
    out["note"] = "; ".join(notes)
    return out


def add_speedups(rows: list[dict]) -> None:
    """Chapter rows get naive s/epoch / chapter s/epoch on the same backend (and time to target)."""
    naive = {(r["recipe"], r["backend"]): r for r in rows if r["variant"] == "naive" and r["status"] == "ok"}
    for row in rows:
        base = naive.get((row["recipe"], row["backend"]))
        if row["variant"] == "chapter" and row["status"] == "ok" and base:
            row["speedup"] = base["s_per_epoch"] / row["s_per_epoch"]
            if row.get("time_to_target") and base.get("time_to_target"):
                row["target_speedup"] = base["time_to_target"] / row["time_to_target"]


def add_time_to_target_costs(rows: list[dict], mode: str) -> None:
    """Where a conv net's time to target was not measured, say why, and what it would cost."""
    reached = {(r["recipe"], r["variant"]): r for r in rows
               if r["status"] == "ok" and r.get("time_to_target") and r["spec"].get("subset") is None}
    for row in rows:
        if row["status"] != "ok" or row.get("time_to_target_text") != "not measured here":
            continue
        ref = reached.get((row["recipe"], row["variant"]))
        if mode != "full":
            row["time_to_target_text"] = f"skipped in --{mode} (speed only)"
        elif ref:
            epochs = statistics.median(e for e in ref["target_epoch"] if e is not None)
            cost = epochs * row["s_per_epoch"]
            cost_text = f"{cost:.0f} s" if cost < 120 else f"{cost / 60:.0f} min"
            row["time_to_target_text"] = (f"not measured (~{epochs:g} epochs as on {ref['backend']}: "
                                          f"~{cost_text} here)")
        else:
            row["time_to_target_text"] = "not measured (speed only; see --target-backend)"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    specs, skipped = plan(args)
    peak = flops.machine_peak()
    folder = runs.new_run_dir(args.output_dir, "benchmarks", "suite")
    logs = folder / "logs"
    logs.mkdir()
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    print(f"benchmark suite ({mode}): {len(specs)} measurements, each in its own process; "
          f"run folder {runs.shown_path(folder)}", flush=True)
    for row in skipped:
        if row["variant"] == VARIANTS[0]:
            print(f"  {row['recipe']} on {row['backend']}: {row['note']}", flush=True)
    started = time.perf_counter()
    rows = []
    for i, spec in enumerate(specs, start=1):
        print(f"[{i}/{len(specs)}] {spec['recipe']} {spec['variant']} on {spec['backend']} ...",
              end=" ", flush=True)
        row = summarise(run_child(spec, logs), peak)
        rows.append(row)
        if row["status"] == "ok":
            print(f"{row['s_per_epoch']:.4g} s/epoch, {row['peak_rss_mib']:,.0f} MiB, "
                  f"{row['wall_s']:.0f} s wall, {row['cpu_s']:.0f} CPU s", flush=True)
        else:
            print(f"ERROR: {row['error']}", flush=True)
    rows += skipped
    add_speedups(rows)
    add_time_to_target_costs(rows, mode)
    wall = time.perf_counter() - started
    versions = runs.package_versions()
    cpu = sum(r.get("cpu_s", 0) for r in rows)
    heading = (f"Benchmark suite ({mode}), {peak['cores']} x {peak['cpu']}, "
               f"Keras {versions.get('keras', '?')}, {dt.datetime.now():%Y-%m-%d %H:%M}; "
               f"suite wall time {wall / 60:.1f} min, measurements used {cpu / 60:.1f} CPU min")
    text = report.markdown(rows, peak, heading)
    (folder / "results.md").write_text(text + "\n")
    report.write_csv(rows, folder / "results.csv")
    try:
        report.plot(rows, folder / "s_per_epoch.png")
    except Exception as err:  # the table and the CSV matter more than the picture
        print(f"warning: the plot could not be drawn ({type(err).__name__}: {err})", file=sys.stderr)
    errors = [r for r in rows if r["status"] == "error"]
    shown = sys.argv[1:] if argv is None else argv
    record = {"command": shlex.join(["python", "benchmarks/run.py", *shown]),
              "mode": mode, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
              "peak": peak, "versions": versions,
              "plan": specs, "rows": rows, "errors": len(errors)}
    (folder / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print("\n" + text)
    if errors:
        print(f"\n{len(errors)} measurement(s) failed:", file=sys.stderr)
        for r in errors:
            print(f"  {r['recipe']} {r['variant']} on {r['backend']}: {r['error']}", file=sys.stderr)
    print(f"\nwritten to {runs.shown_path(folder)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
