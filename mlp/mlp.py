"""Chapter 2: which bank customers will leave? A multi-layer perceptron on a real table.

10,000 customers of a bank, ten facts about each (credit score, country,
gender, age, balance, ...) and whether they left. The network learns the
probability of leaving from those facts.

    python mlp/mlp.py                 # 72/8/20 split: train, watch validation, score the test set
    python mlp/mlp.py --no-split      # the original tutorial's first version: train and score on all rows
    python mlp/mlp.py --seeds 5       # five seeds, mean and spread of the test metrics
    python mlp/mlp.py --predict Age=40 Geography=Spain ...   # score a new customer

Every training run leaves a folder under ``outputs/mlp/`` with run.json,
history.csv, the plots, the confusion matrix, model.keras and the fitted
encoding (preprocess.json) that ``--predict`` reuses.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `utils` and `mlp` import from any folder

from utils import cli  # noqa: E402

CHAPTER = "mlp"


def prefer_jax() -> None:
    """Make JAX this chapter's default backend when it is installed.

    On JAX the recipe's 72,000 tiny updates run as one compiled loop per
    epoch (mlp/training.py), over 10x faster than the naive port; TensorFlow's
    fastest path reaches about 2.5x (benchmarks/churn.py). ``--backend`` or
    ``KERAS_BACKEND`` still win.
    """
    if not os.environ.get("KERAS_BACKEND") and importlib.util.find_spec("jax") is not None:
        os.environ["KERAS_BACKEND"] = "jax"


if __name__ == "__main__":
    prefer_jax()  # before the parser reads the default backend

from mlp import predict, training  # noqa: E402
from utils import plots, runs, steps  # noqa: E402
from utils.lazy import keras, lazy  # noqa: E402  (Keras loads on first use, after the flags are read)

data, evaluation = lazy("mlp.data"), lazy("mlp.evaluation")
EpochTimer = lazy("utils.callbacks", "EpochTimer")
EveryNEpochsPrinter = lazy("utils.callbacks", "EveryNEpochsPrinter")
StopOnNaN = lazy("utils.callbacks", "StopOnNaN")

# The metrics --seeds summarises, in print order.
SUMMARY = ("accuracy", "roc_auc", "precision_left", "recall_left", "f1_left")


def load_data(args):
    """The checked churn table and where it came from: (DataFrame, Path)."""
    return data.load_table(args.data)


def build_model(input_dim: int = 11, hidden=(6, 6), init: str = "he_uniform") -> keras.Model:
    return training.build_model(input_dim, tuple(hidden), init)


def train_and_evaluate(args, argv: list[str] | None = None, table=None, show: bool = True) -> runs.RunResult:
    """Prepare, train, score; write the run folder. ``table`` skips reloading (--seeds)."""
    frame, path = table if table is not None else load_data(args)
    show = show and not args.quiet
    keras.utils.set_random_seed(args.seed)
    if args.no_split:
        train, validation, test = frame, None, None
    else:
        train, validation, test = data.split(frame)
    preprocessor = data.make_preprocessor()
    x_train, y_train = data.features_and_target(preprocessor, train, fit=True,  # fitted on train only
                                                source=str(path))
    val = data.features_and_target(preprocessor, validation, source=str(path)) \
        if validation is not None else None
    model = training.compile_model(build_model(x_train.shape[1], args.hidden, args.init),
                                   args.optimizer, args.learning_rate)
    if show:
        print(f"data: {path} ({len(frame):,} customers, {frame[data.TARGET].mean():.1%} left)")
        parts = [("train", x_train, y_train)] + ([("validation", *val)] if val else [])
        shapes = "; ".join(f"{n} x{tuple(x.shape)} y{tuple(y.shape)}" for n, x, y in parts)
        tail = f"; test {len(test):,} rows" if test is not None else " (no split: scored on the same rows)"
        print(f"  {shapes}{tail}")
        print("  features: " + ", ".join(preprocessor.get_feature_names_out()))
        model.summary()
        print(f"backend {keras.backend.backend()}; {args.epochs} epochs x "
              f"{-(-len(x_train) // args.batch_size)} batches of {args.batch_size}")

    run = runs.Run(CHAPTER, model.name, args, argv)  # only now: bad input never leaves a folder
    callbacks = [EpochTimer(), StopOnNaN()]
    if show:
        callbacks.append(EveryNEpochsPrinter(args.epochs, every=args.log_every))
    start = time.perf_counter()
    history = training.fit(model, x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                           seed=args.seed, validation_data=val, callbacks=callbacks)
    fit_seconds = time.perf_counter() - start

    extra = {}
    if test is None:
        loss, accuracy = model.evaluate(x_train, y_train, batch_size=1024, verbose=0)
        metrics = {"train_accuracy": float(accuracy), "train_loss": float(loss)}
    else:
        x_test, y_test = data.features_and_target(preprocessor, test, source=str(path))
        x_test, y_test = steps.scored(x_test, y_test, 1024)  # every row, unless KERAS_MAX_STEPS_PER_EPOCH
        loss, _ = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
        probability = model.predict(x_test, batch_size=1024, verbose=0)
        metrics = {**evaluation.classification_metrics(y_test, probability), "loss": float(loss)}
        matrix = evaluation.confusion(y_test, probability)
        evaluation.plot_confusion_matrix(matrix, f"{model.name}: test set (seed {args.seed})",
                                         run.path("confusion_matrix.png"))
        extra = {"confusion_matrix": matrix.tolist(), "report": evaluation.format_report(metrics, matrix)}
    metrics["fit_seconds"] = fit_seconds
    predict.save_preprocessor(preprocessor, run.path(predict.PREPROCESSOR_FILE))
    frame_history = runs.history_frame(history.history)
    plots.save_standard_plots(frame_history, model.name, run.dir)
    return run.finish(
        model=model, history=frame_history, metrics=metrics, dataset=str(path),
        rows={"train": len(train), "validation": len(validation) if validation is not None else 0,
              "test": len(test) if test is not None else 0},
        features=list(preprocessor.get_feature_names_out()), fit_seconds=round(fit_seconds, 3), **extra,
    )


def describe(result: runs.RunResult) -> str:
    m = result.metrics
    if "train_accuracy" in m:
        return (f"training accuracy {m['train_accuracy']:.4f}  loss {m['train_loss']:.4f}  "
                f"fit() {m['fit_seconds']:.1f} s")
    return (f"test accuracy {m['accuracy']:.4f}  ROC AUC {evaluation.format_auc(m['roc_auc'])}  recall(left) "
            f"{m['recall_left']:.3f}  fit() {m['fit_seconds']:.1f} s")


def run_seeds(args, argv) -> list[runs.RunResult]:
    """Train once per seed (args.seed, args.seed+1, ...) on one table; print the spread."""
    table = load_data(args)
    results = []
    for i in range(args.seeds):
        seed_args = copy.copy(args)
        seed_args.seed = args.seed + i
        result = train_and_evaluate(seed_args, argv, table, show=i == 0)
        print(f"seed {seed_args.seed}: {describe(result)}  ({result.run_dir})", flush=True)
        results.append(result)
    keys = ("train_accuracy", "train_loss") if args.no_split else SUMMARY
    print(f"\n{args.seeds} seeds, mean +- std (sample standard deviation):")
    for key in (*keys, "fit_seconds"):
        values = [r.metrics[key] for r in results]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"  {key:<15} {statistics.mean(values):.4f} +- {spread:.4f}   "
              f"(min {min(values):.4f}, median {statistics.median(values):.4f}, max {max(values):.4f})")
    return results


def run_predict(args) -> None:
    customers, source = predict.customers_from_args(args.predict)  # checked before any model loads
    run_dir = Path(args.model) if args.model else predict.latest_run(Path(args.output_dir) / CHAPTER)
    model, preprocessor = predict.load_run(run_dir)
    probability = predict.predict(customers, model, preprocessor, source)
    print(f"model: {run_dir}")
    print(predict.format_predictions(customers, probability))


def parse_args(argv: list[str] | None = None):
    parser = cli.make_parser(
        "Predict which bank customers leave (Churn_Modelling.csv) with a small multi-layer perceptron.",
        epochs=100, batch_size=10,
        epilog="backend: this chapter defaults to jax when it is installed (see mlp/training.py)\n"
               f"example: python mlp/mlp.py --seeds 5\n"
               f"         python mlp/mlp.py --predict {predict.EXAMPLE}",
    )
    parser.add_argument("--data", type=Path, default=None, metavar="PATH",
                        help="a churn CSV (or a folder holding Churn_Modelling.csv); None means the "
                             "dataset registry: KERAS_TUTORIAL_DATA, data/, the Keras cache, download")
    parser.add_argument("--no-split", action="store_true",
                        help="train and score on all rows, as the original tutorial's first version did "
                             "(training accuracy, says nothing about new customers)")
    parser.add_argument("--seeds", type=cli.positive_int, default=1, metavar="N",
                        help="train N times with seeds --seed, --seed+1, ... and print mean +- std")
    parser.add_argument("--predict", nargs="+", metavar="CSV|KEY=VALUE",
                        help="score new customers from a CSV file, or one customer as key=value "
                             "pairs, with a trained run (see --model); trains nothing")
    parser.add_argument("--model", type=Path, default=None, metavar="RUN_DIR",
                        help="run folder for --predict; None means the newest under "
                             "<output-dir>/mlp/")
    parser.add_argument("--hidden", type=cli.units_int, nargs="+", default=[6, 6], metavar="UNITS",
                        help=f"sizes of the hidden relu layers, 1 to {cli.MAX_UNITS:,} each")
    parser.add_argument("--init", choices=training.INITIALIZERS, default="he_uniform",
                        help="initial weights of every layer, all uniform distributions: he_uniform is "
                             "scaled for relu; random_uniform is the original tutorial's fixed +-0.05")
    parser.add_argument("--optimizer", choices=sorted(training.OPTIMIZERS), default="adam",
                        help="optimisation algorithm")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=None,
                        help="step size; None means the optimiser's Keras default "
                             "(0.001 for adam and rmsprop, 0.01 for sgd)")
    parser.add_argument("--log-every", type=cli.positive_int, default=10, metavar="N",
                        help="print progress every N epochs (history.csv keeps every epoch)")
    return parser.parse_args(argv)


@cli.friendly_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    if args.predict:
        run_predict(args)
        return 0
    if args.seeds > 1:
        run_seeds(args, argv)
        return 0
    result = train_and_evaluate(args, argv)
    if "report" in result.extra:
        print("\ntest set, " + result.extra["report"])
    print(f"\n{describe(result)}\nrun folder: {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
