"""Churn MLP: the naive Keras 3 port against the chapter's default training.

Both train the original tutorial's recipe on the same 7,200 training rows of the same
stratified split, from the same seed: batch size 10, 100 epochs, so 72,000
weight updates each. Only the way ``fit`` is driven differs:

- naive: ``model.fit(x_train, y_train, batch_size=10, epochs=100)`` on NumPy
  arrays, on Keras's default backend (TensorFlow), as a direct port of the
  seed would do it (with ``verbose=0`` and no validation, which only makes it
  faster);
- recipe: ``mlp.training.fit`` as ``python mlp/mlp.py`` runs it, validation
  included, on the chapter's default backend (JAX when installed).

A backend is fixed once Keras is imported, so each case runs in its own child
process, one after another, started by this one benchmark run. The "cross"
rows (naive on JAX, recipe on TensorFlow) show how much of the gain is the
backend and how much the way fit is driven. Last, the recipe is trained with
--seeds seeds and the median test accuracy is printed (target >= 0.855).

    python benchmarks/churn.py                    # everything, about 4 minutes on 2 cores
    python benchmarks/churn.py --no-cross --repeats 3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH_SIZE = 10  # the original tutorial's recipe; not a flag, so every case compares the same thing


def load_arrays(path=None):
    """The chapter's split, encoded: ``(x_train, y_train), (x_val, y_val), (x_test, y_test)``
    with 7,200 / 800 / 2,000 rows of 11 features and a (rows, 1) target."""
    from mlp import data

    frame, _ = data.load_table(path)
    train, validation, test = data.split(frame)
    preprocessor = data.make_preprocessor()
    fitted = data.features_and_target(preprocessor, train, fit=True)  # encoding learnt on train only
    return fitted, data.features_and_target(preprocessor, validation), \
        data.features_and_target(preprocessor, test)


def train_case(case: str, model, train, validation, *, epochs: int, seed: int, callbacks=()) -> None:
    """Train a compiled ``model`` the ``case`` way: "naive" (``model.fit`` on NumPy arrays, no
    validation) or "recipe" (``mlp.training.fit``, validation included). Keras must be imported."""
    from mlp import training

    x_train, y_train = train
    if case == "naive":
        model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0,
                  callbacks=list(callbacks))
    else:
        training.fit(model, x_train, y_train, epochs=epochs, batch_size=BATCH_SIZE, seed=seed,
                     validation_data=validation, callbacks=callbacks)


def worker(args) -> dict:
    """Train one case in this process (its backend already chosen); return timings and accuracies."""
    from utils.quiet import import_keras

    keras = import_keras()
    from mlp import training

    (x_train, y_train), val, (x_test, y_test) = load_arrays(args.data)
    seeds = range(args.seed, args.seed + args.seeds) if args.worker == "seeds" else [args.seed] * args.repeats
    seconds, accuracy = [], []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        model = training.compile_model(training.build_model(x_train.shape[1]))
        start = time.perf_counter()
        train_case("naive" if args.worker == "naive" else "recipe", model, (x_train, y_train), val,
                   epochs=args.epochs, seed=seed)
        seconds.append(time.perf_counter() - start)
        accuracy.append(float(model.evaluate(x_test, y_test, batch_size=1024, verbose=0)[1]))
    return {"case": args.worker, "backend": keras.backend.backend(), "seconds": seconds,
            "accuracy": accuracy, "seeds": list(seeds),
            "updates": args.epochs * -(-len(x_train) // BATCH_SIZE)}


def launch(case: str, backend: str, args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", case, "--backend", backend,
               "--epochs", str(args.epochs), "--repeats", str(args.repeats), "--seed", str(args.seed),
               "--seeds", str(args.seeds)] + (["--data", str(args.data)] if args.data else [])
    print(f"  running {case} on {backend} ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "KERAS_BACKEND": backend})
    if done.returncode != 0:
        sys.exit(f"{case} on {backend} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


DRIVEN = {
    "naive": "`model.fit(x, y, batch_size=10, epochs=E)` on NumPy arrays",
    "recipe": "`mlp.training.fit` (chapter default)",
}


def report(args) -> None:
    started = time.perf_counter()
    cases = [("naive", args.naive_backend), ("recipe", args.recipe_backend)]
    if not args.no_cross and args.naive_backend != args.recipe_backend:
        cases += [("naive", args.recipe_backend), ("recipe", args.naive_backend)]
    results = [launch(case, backend, args) for case, backend in cases]
    baseline = statistics.median(results[0]["seconds"])
    print(f"\n### Churn MLP, {results[0]['updates']:,} weight updates of batch size {BATCH_SIZE} "
          f"({args.epochs} epochs), split seed 0, model seed {args.seed}, median of {args.repeats} "
          f"repeat(s)\n")
    print("| case | backend | fit() driven by | fit() s | speed-up vs naive | test accuracy |")
    print("|---|---|---|---:|---:|---:|")
    for r in results:
        secs = statistics.median(r["seconds"])
        print(f"| {r['case']} | {r['backend']} | {DRIVEN[r['case']]} | {secs:.1f} | "
              f"{baseline / secs:.1f}x | {statistics.median(r['accuracy']):.4f} |")
    headline = baseline / statistics.median(results[1]["seconds"])
    verdict = "meets" if headline >= 10 else "MISSES"
    print(f"\ndefault run vs naive port: {headline:.1f}x faster ({verdict} the 10x target)")
    if args.seeds:
        seeded = launch("seeds", args.recipe_backend, args)
        accs = seeded["accuracy"]
        median = statistics.median(accs)
        print(f"\nrecipe on {seeded['backend']}, seeds {seeded['seeds'][0]}-{seeded['seeds'][-1]}: test "
              f"accuracy {', '.join(f'{a:.4f}' for a in accs)}; median {median:.4f} "
              f"({'meets' if median >= 0.855 else 'MISSES'} the 0.855 target), mean "
              f"{statistics.mean(accs):.4f} +- {statistics.stdev(accs) if len(accs) > 1 else 0:.4f}; "
              f"fit() median {statistics.median(seeded['seconds']):.1f} s")
    print(f"\n(benchmark wall time {time.perf_counter() - started:.0f} s)")


def parse_args(argv=None):
    default_recipe = "jax" if importlib.util.find_spec("jax") else "tensorflow"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100, help="passes over the 7,200 training rows")
    parser.add_argument("--repeats", type=int, default=1, help="timed fits per case (median reported)")
    parser.add_argument("--seed", type=int, default=0, help="model seed of the timed cases")
    parser.add_argument("--seeds", type=int, default=5,
                        help="seeds for the recipe's accuracy check (0 skips it)")
    parser.add_argument("--naive-backend", default="tensorflow", help="backend of the naive port")
    parser.add_argument("--recipe-backend", default=default_recipe,
                        help="backend of the recipe (the chapter's default)")
    parser.add_argument("--no-cross", action="store_true",
                        help="skip naive on the recipe's backend and recipe on the naive's")
    parser.add_argument("--data", type=Path, default=None, help="churn CSV; None means the registry")
    parser.add_argument("--worker", choices=("naive", "recipe", "seeds"), help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        os.environ["KERAS_BACKEND"] = args.backend  # before Keras is imported
        print(json.dumps(worker(args)))
    else:
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
