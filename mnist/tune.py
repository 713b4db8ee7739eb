"""Chapter 4, part 3: hyper-parameter search for an MNIST MLP with KerasTuner.

Searches the hidden layer's width, the dropout rate and Adam's learning rate
of a 784 -> units -> dropout -> 10 network, scoring each trial by its best
validation accuracy. The winning hyper-parameters are then trained once more
from scratch, the result is evaluated on the test set once and saved.

    python mnist/tune.py
    python mnist/tune.py --max-trials 12 --epochs 8
    python mnist/tune.py --tuner hyperband --epochs 9

Needs KerasTuner: `pip install "keras-tuner>=1.4"`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `utils` imports from any folder

from mnist import data as image_data  # noqa: E402
from mnist.schedules import KeepBestWeights, as_input, format_table  # noqa: E402
from utils import cli, plots, report, runs  # noqa: E402
from utils.errors import TutorialError  # noqa: E402
from utils.lazy import keras, lazy  # noqa: E402  (Keras loads on first use, after the flags are read)
from utils.plots import STYLE, plt  # noqa: E402

np, pd = lazy("numpy"), lazy("pandas")
EpochTimer = lazy("utils.callbacks", "EpochTimer")
StopOnNaN = lazy("utils.callbacks", "StopOnNaN")

CHAPTER = "mnist_tune"
TUNERS = ("random", "hyperband")
# The search space: (low, high, step) for the two grids, (low, high) sampled
# evenly in log space for the rate, so 1e-4..1e-3 is tried as often as 1e-3..1e-2.
UNITS = (64, 512, 64)
DROPOUT = (0.0, 0.5, 0.1)
LEARNING_RATE = (1e-4, 1e-2)
HYPERBAND_FACTOR = 3


def keras_tuner():
    """The ``keras_tuner`` module, or a one-line explanation of how to get it."""
    try:
        import keras_tuner
    except ImportError:
        raise TutorialError('KerasTuner is not installed: `pip install "keras-tuner>=1.4"`') from None
    return keras_tuner


def build_model(hp, input_size: int = 784, classes: int = 10) -> keras.Model:
    """The hypermodel: KerasTuner calls it with a fresh ``hp`` per trial; each ``hp.*``
    call both declares a hyper-parameter (first time) and returns this trial's value."""
    units = hp.Int("units", *UNITS[:2], step=UNITS[2])
    dropout = hp.Float("dropout", *DROPOUT[:2], step=DROPOUT[2])
    rate = hp.Float("learning_rate", *LEARNING_RATE, sampling="log")
    model = keras.Sequential([keras.Input((input_size,)), keras.layers.Dense(units, activation="relu"),
                              keras.layers.Dropout(dropout),
                              keras.layers.Dense(classes, activation="softmax")], name="tuned_mlp")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _no_tensorboard_hook(tuner_class):
    """``tuner_class`` minus an import of the tensorboard package on every trial.

    On the TensorFlow backend KerasTuner imports ``tensorboard`` before each
    trial, to annotate TensorBoard callbacks with the trial's hyper-parameters,
    even when there is no such callback; TensorFlow 2.21 no longer installs
    tensorboard, so every trial would fail. The hook only runs when needed here.
    """

    class Tuner(tuner_class):
        def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
            if any(type(c).__name__ == "TensorBoard" for c in callbacks):
                super()._configure_tensorboard_dir(callbacks, trial, execution)

    Tuner.__name__ = Tuner.__qualname__ = tuner_class.__name__
    return Tuner


def check_args(args) -> None:
    """Combinations of flags argparse cannot judge alone."""
    if args.tuner not in TUNERS:
        raise TutorialError(f"unknown tuner {args.tuner!r}: choose from {', '.join(TUNERS)}")
    if args.tuner == "hyperband" and args.epochs < 2:
        raise TutorialError(f"hyperband needs --epochs of at least 2 (its longest trial), got {args.epochs}")


def make_tuner(directory: Path, args, input_size: int = 784, classes: int = 10):
    """``--tuner random``: ``--max-trials`` random draws, each trained ``--epochs``.
    ``--tuner hyperband``: many short trials; the best third of each round is
    trained ``HYPERBAND_FACTOR`` times longer, up to ``--epochs``."""
    kt = keras_tuner()
    check_args(args)

    def hypermodel(hp):
        return build_model(hp, input_size, classes)

    common = {"objective": "val_accuracy", "seed": args.seed, "directory": str(directory),
              "project_name": "mlp", "overwrite": True}  # a run folder is always new; overwrite anyway
    if args.tuner == "random":
        return _no_tensorboard_hook(kt.RandomSearch)(hypermodel, max_trials=args.max_trials, **common)
    return _no_tensorboard_hook(kt.Hyperband)(hypermodel, max_epochs=args.epochs, factor=HYPERBAND_FACTOR,
                                              hyperband_iterations=1, **common)


def trials_table(tuner, epochs: int) -> list[dict]:
    """Every trial, best first: its hyper-parameters, epochs trained and score."""
    rows = []
    for trial in tuner.oracle.trials.values():
        values = trial.hyperparameters.values
        rows.append({
            "trial": trial.trial_id, "units": int(values["units"]), "dropout": float(values["dropout"]),
            "learning_rate": float(values["learning_rate"]),
            # Hyperband trains a trial for tuner/epochs; random search for --epochs.
            "epochs": int(values.get("tuner/epochs", epochs)),
            "val_accuracy": float(trial.score) if trial.score is not None else float("nan"),
            "best_epoch": int(trial.best_step) + 1 if trial.best_step is not None else 0,
            "status": str(trial.status),
        })
    return sorted(rows, key=lambda r: -np.nan_to_num(r["val_accuracy"], nan=-1.0))


def best_hyperparameters(tuner) -> dict:
    """The winner's searched values, without Hyperband's bookkeeping (tuner/...)."""
    values = tuner.get_best_hyperparameters(1)[0].values
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


def trials_png(rows: list[dict], path: Path) -> Path:
    """Validation accuracy against learning rate, colour = hidden units, size = dropout."""
    done = [r for r in rows if not np.isnan(r["val_accuracy"])]
    with plt.style.context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        points = ax.scatter([r["learning_rate"] for r in done], [r["val_accuracy"] for r in done],
                            c=[r["units"] for r in done], s=[30 + 300 * r["dropout"] for r in done],
                            cmap="viridis", vmin=UNITS[0], vmax=UNITS[1], edgecolors="black")
        if done:
            best = done[0]
            ax.annotate(f"best: {best['units']} units, dropout {best['dropout']:.1f}",
                        (best["learning_rate"], best["val_accuracy"]), textcoords="offset points",
                        xytext=(0, -10), ha="center", va="top", fontsize=8)
        fig.colorbar(points, ax=ax, label="hidden units")
        ax.set(xscale="log", xlim=LEARNING_RATE, xlabel="learning rate (log scale, the searched range)",
               ylabel="best validation accuracy",
               title=f"{len(done)} trials (marker size = dropout)")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
    return path


def tune(data: image_data.ImageData, args, argv=None) -> runs.RunResult:
    """Search, retrain the best hyper-parameters, test once, write the run folder."""
    keras_tuner()  # fail before any work if it is missing
    check_args(args)
    keras.utils.set_random_seed(args.seed)
    run = runs.Run(CHAPTER, args.tuner, args, argv)
    size, classes = int(np.prod(data.image_shape)), len(data.class_names)
    x_train, x_val = as_input(data.x_train, True), as_input(data.x_val, True)
    tuner = make_tuner(run.path("tuner"), args, size, classes)
    if not args.quiet:
        tuner.search_space_summary()
        print(f"run folder: {runs.shown_path(run.dir)}", flush=True)
    start = time.perf_counter()
    tuner.search(x_train, data.y_train, validation_data=(x_val, data.y_val), epochs=args.epochs,
                 batch_size=args.batch_size, verbose=0 if args.quiet else 2)
    search_seconds = time.perf_counter() - start
    rows = trials_table(tuner, args.epochs)
    if not any(r["status"] == "COMPLETED" for r in rows):
        raise TutorialError(f"all {len(rows)} trials failed (their tracebacks are printed above), "
                            "so there are no best hyper-parameters")
    pd.DataFrame(rows).to_csv(run.path("trials.csv"), index=False)
    best = best_hyperparameters(tuner)
    run.path("best_hyperparameters.json").write_text(json.dumps(best, indent=2) + "\n")

    # The winner is trained again from scratch (same seed) and its best epoch by
    # validation accuracy is the one evaluated on the test set, once.
    keras.utils.set_random_seed(args.seed)
    hp = tuner.get_best_hyperparameters(1)[0]
    model = build_model(hp, size, classes)
    if not args.quiet:
        print(f"\n=== retraining the best hyper-parameters {best} for {args.epochs} epochs", flush=True)
    keep = KeepBestWeights("val_accuracy")
    fit = model.fit(x_train, data.y_train, validation_data=(x_val, data.y_val), epochs=args.epochs,
                    batch_size=args.batch_size, callbacks=[EpochTimer(), StopOnNaN(), keep],
                    verbose=0 if args.quiet else 2)
    history = runs.history_frame(fit.history)
    test_loss, test_accuracy = model.evaluate(as_input(data.x_test, True), data.y_test,
                                              batch_size=args.batch_size, verbose=0)
    plots.save_standard_plots(history, f"tuned_mlp on {data.name}", run.dir)
    figure = trials_png(rows, run.path("trials.png"))
    metrics = {"test_accuracy": float(test_accuracy), "test_loss": float(test_loss),
               "best_trial_val_accuracy": rows[0]["val_accuracy"],
               "retrained_best_val_accuracy": float(history["val_accuracy"].max()),
               "best_epoch": int(keep.best_epoch) + 1, "trials": len(rows),
               "search_seconds": search_seconds, "params": int(model.count_params())}
    result = run.finish(model=model, history=history, metrics=metrics, dataset=data.name,
                        dataset_note=data.note, dataset_shapes=data.describe(), tuner=args.tuner,
                        class_names=data.class_names,
                        best_hyperparameters=best, trials=rows)
    space = {"units": f"{UNITS[0]}..{UNITS[1]} step {UNITS[2]}",
             "dropout": f"{DROPOUT[0]}..{DROPOUT[1]} step {DROPOUT[2]}",
             "learning_rate": f"{LEARNING_RATE[0]:g}..{LEARNING_RATE[1]:g}, log scale"}
    settings = {"tuner": args.tuner, "max trials": args.max_trials if args.tuner == "random" else "-",
                "epochs per trial (max)": args.epochs, "batch size": args.batch_size,
                "dataset": data.describe(), "seed": args.seed, "backend": keras.backend.backend()}
    report.write_report(run.path("report.html"), f"{CHAPTER}: {args.tuner} search", [
        ("Search space", report.key_values(space)),
        ("Settings", report.key_values(settings)),
        ("Trials (best first)", report.table(rows)),
        ("Best hyper-parameters", report.key_values(best)),
        ("Retrained best model (test set, once)", report.key_values(metrics)),
        ("Figures", report.images([figure, run.path("accuracy.png"), run.path("loss.png")])),
    ])
    return result


def parse_args(argv=None):
    parser = cli.make_parser(__doc__.split("\n\n")[0], epochs=5, batch_size=128)
    parser.add_argument("--tuner", choices=TUNERS, default="random",
                        help="random: --max-trials random draws, each trained --epochs; hyperband: "
                             "many short trials, the best promoted to longer training")
    parser.add_argument("--max-trials", type=cli.positive_int, default=6,
                        help="hyper-parameter sets a random search tries (hyperband ignores it)")
    image_data.add_data_arguments(parser, limit=10_000)
    return parser.parse_args(argv)


@cli.friendly_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    keras_tuner()
    check_args(args)
    data = image_data.load_images(args.dataset, args.data_dir, seed=args.seed, limit=args.limit)
    print(f"*** {data.describe()}" + (f"\n*** {data.note}" if data.note else ""), flush=True)
    result = tune(data, args, argv)
    trials = result.extra["trials"]
    print(f"\n{len(trials)} trials, best first ({args.tuner} search, "
          f"{result.metrics['search_seconds']:.1f} s):")
    print(format_table(trials))
    print(f"\nbest hyper-parameters: {result.extra['best_hyperparameters']}")
    m = result.metrics
    print(f"retrained: best validation accuracy {m['retrained_best_val_accuracy']:.4f} at epoch "
          f"{m['best_epoch']}, test accuracy {m['test_accuracy']:.4f} ({len(data.x_test):,} test images)")
    print(f"run folder: {runs.shown_path(result.run_dir)} (trials.csv, report.html, model.keras)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
