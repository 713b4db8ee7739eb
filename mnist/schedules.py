"""Chapter 4, part 2: learning-rate schedules, callbacks, under- and over-fitting.

Trains one small model from ``mnist/models.py`` several times with the same
seed, changing only how the learning rate moves (or when training stops), and
compares the runs on one set of figures. ``--demo fit`` instead trains a model
too small to learn the task and one big enough to memorise 1,000 images, and
puts their training and validation curves side by side.

    python mnist/schedules.py
    python mnist/schedules.py --schedule constant --schedule cosine
    python mnist/schedules.py --demo fit
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `utils` imports from any folder

from mnist import data as image_data  # noqa: E402
from mnist import models  # noqa: E402
from utils import cli, report, runs  # noqa: E402
from utils.errors import TutorialError  # noqa: E402
from utils.lazy import deferred, keras, lazy  # noqa: E402  (Keras loads on first use, after the flags)
from utils.plots import STYLE, plt  # noqa: E402

np, pd = lazy("numpy"), lazy("pandas")
EpochTimer = lazy("utils.callbacks", "EpochTimer")
StopOnNaN = lazy("utils.callbacks", "StopOnNaN")

CHAPTER = "mnist_schedules"
DEFAULT_MODEL = "mlp_one_layer"
OPTIMIZERS = {name: lazy("keras.optimizers", cls) for name, cls in
              (("adam", "Adam"), ("sgd", "SGD"), ("rmsprop", "RMSprop"))}
# How each run moves the learning rate r over T = steps per epoch x epochs updates.
SCHEDULES = {
    "constant": "the starting rate r, unchanged for the whole run",
    "step": "PiecewiseConstantDecay: r, then r/10 after half the epochs, r/100 after three quarters",
    "exponential": "ExponentialDecay: r x 0.01^(step/T), a smooth fall from r to r/100",
    "cosine": "CosineDecay with warm-up: r/100 rising linearly to r over the first 10% of steps, "
              "then half a cosine down to r/100",
    "plateau": "ReduceLROnPlateau: r, divided by 5 whenever val_loss has not improved for 2 epochs "
               "(not below r/100)",
    "early_stopping": "EarlyStopping: r, training stops once the monitored metric has not improved "
                      "for --patience epochs; the best epoch's weights are restored",
}
PLATEAU_FACTOR, PLATEAU_PATIENCE = 0.2, 2
DEMOS = ("schedules", "fit", "all")


# --- the schedules -----------------------------------------------------------------------

def learning_rate(name: str, rate: float, steps_per_epoch: int, epochs: int):
    """The ``learning_rate`` to hand the optimiser for schedule ``name``: a number,
    or a ``LearningRateSchedule`` that Keras calls with the update count (0, 1, ...)."""
    check_schedules([name])
    schedules = keras.optimizers.schedules
    total = steps_per_epoch * epochs
    if name == "step":
        # Boundaries are update counts: the drops happen after whole epochs.
        first = max(1, epochs // 2)
        second = max(first + 1, (3 * epochs) // 4)
        return schedules.PiecewiseConstantDecay(
            [steps_per_epoch * first, steps_per_epoch * second], [rate, rate / 10, rate / 100])
    if name == "exponential":
        return schedules.ExponentialDecay(rate, decay_steps=total, decay_rate=0.01)
    if name == "cosine":
        warmup = warmup_steps(total)
        return schedules.CosineDecay(rate / 100, decay_steps=max(1, total - warmup), alpha=0.01,
                                     warmup_target=rate, warmup_steps=warmup)
    return rate  # constant, plateau and early_stopping start from a fixed rate


def warmup_steps(total_steps: int) -> int:
    """Warm-up covers the first 10% of the updates (at least one)."""
    return max(1, total_steps // 10)


def rate_at(schedule, step: int) -> float:
    """The learning rate a schedule (or a fixed number) gives at update ``step``."""
    if isinstance(schedule, int | float):
        return float(schedule)
    return float(keras.ops.convert_to_numpy(schedule(step)))


def check_schedules(names) -> list[str]:
    unknown = [n for n in names if n not in SCHEDULES]
    if unknown:
        raise TutorialError(f"unknown schedule {unknown[0]!r}: choose from {', '.join(SCHEDULES)}")
    return list(dict.fromkeys(names))


# --- callbacks -------------------------------------------------------------------------------

@deferred
def LearningRateLogger():  # a Keras callback, defined once Keras is loaded
    class LearningRateLogger(keras.callbacks.Callback):
        """Adds ``learning_rate`` (the optimiser's rate as the epoch ends) to each epoch's logs.

        Placed before ReduceLROnPlateau, it records the rate the epoch trained
        with, not the reduced one the next epoch will use.
        """

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    return LearningRateLogger


@deferred
def KeepBestWeights():  # a Keras callback, defined once Keras is loaded
    class KeepBestWeights(keras.callbacks.Callback):
        """Remembers the weights of the best epoch by ``monitor`` and puts them back at the end,
        so every run is judged on its best epoch, as EarlyStopping(restore_best_weights=True) does."""

        def __init__(self, monitor: str = "val_accuracy"):
            super().__init__()
            self.monitor = monitor
            self.better = np.greater if "acc" in monitor else np.less
            self.best, self.best_epoch, self.weights = None, None, None

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(self.monitor)
            if value is not None and (self.best is None or self.better(value, self.best)):
                self.best, self.best_epoch, self.weights = value, epoch, self.model.get_weights()

        def on_train_end(self, logs=None):
            if self.weights is not None:
                self.model.set_weights(self.weights)

    return KeepBestWeights


def callbacks_for(name: str, args, rate: float) -> list:
    """The callbacks of one run, in the order Keras should call them."""
    callbacks = [EpochTimer(), StopOnNaN(), LearningRateLogger()]
    if name == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE, min_lr=rate / 100))
    if name == "early_stopping":
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=args.monitor, patience=args.patience, restore_best_weights=True))
    else:
        callbacks.append(KeepBestWeights(args.monitor))
    return callbacks


# --- one training run ------------------------------------------------------------------------

@dataclass
class TrainedRun:
    """One schedule's (or one fit-demo model's) run, for the tables and figures."""

    name: str
    model: keras.Model
    history: pd.DataFrame
    metrics: dict = field(default_factory=dict)


def as_input(x: np.ndarray, flat: bool) -> np.ndarray:
    """(n, 28, 28, 1) images, or (n, 784) rows for the MLPs."""
    return x.reshape(len(x), -1) if flat else x


def base_rate(args) -> float:
    default = OPTIMIZERS[args.optimizer]().learning_rate
    return args.learning_rate or float(keras.ops.convert_to_numpy(default))


def best_epoch(history: pd.DataFrame, monitor: str) -> int:
    """1-based epoch with the best ``monitor`` value (highest accuracy, lowest loss)."""
    column = history[monitor]
    return int(history.loc[column.idxmax() if "acc" in monitor else column.idxmin(), "epoch"])


def train_schedule(name: str, data: image_data.ImageData, args,
                   spec: models.ModelSpec | None = None) -> TrainedRun:
    """Train a fresh copy of the model with schedule ``name``; evaluate its best epoch on the test set.

    Every run starts from the same seed, so the same initial weights and the
    same order of batches: the schedule is the only difference.
    """
    check_schedules([name])
    spec = spec or models.get_spec(args.model)
    keras.utils.set_random_seed(args.seed)
    steps = math.ceil(len(data.x_train) / args.batch_size)
    rate = base_rate(args)
    model = spec.build(data.image_shape, len(data.class_names))
    model.compile(optimizer=OPTIMIZERS[args.optimizer](
                      learning_rate=learning_rate(name, rate, steps, args.epochs)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = callbacks_for(name, args, rate)
    x_train, x_val = as_input(data.x_train, spec.flat_input), as_input(data.x_val, spec.flat_input)
    if not args.quiet:
        print(f"\n=== {name}: {SCHEDULES[name]}", flush=True)
    start = time.perf_counter()
    fit = model.fit(x_train, data.y_train, validation_data=(x_val, data.y_val), epochs=args.epochs,
                    batch_size=args.batch_size, callbacks=callbacks, verbose=0 if args.quiet else 2)
    seconds = time.perf_counter() - start
    history = runs.history_frame(fit.history)
    # The weights now in the model are those of the best epoch (restored by a callback).
    test_loss, test_accuracy = model.evaluate(as_input(data.x_test, spec.flat_input), data.y_test,
                                              batch_size=args.batch_size, verbose=0)
    stopper = next((c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)), None)
    chosen = best_epoch(history, args.monitor)
    metrics = {
        "epochs_run": len(history),
        "stopped_early": bool(stopper and stopper.stopped_epoch > 0),
        "best_epoch": chosen,
        "val_accuracy_at_best": float(history.loc[history["epoch"] == chosen, "val_accuracy"].iloc[0]),
        "max_val_accuracy": float(history["val_accuracy"].max()),
        "test_accuracy": float(test_accuracy), "test_loss": float(test_loss),
        "final_learning_rate": float(history["learning_rate"].iloc[-1]),
        "seconds": seconds,
    }
    return TrainedRun(name, model, history, metrics)


# --- figures ----------------------------------------------------------------------------------

def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def overlaid_png(results: dict[str, TrainedRun], column: str, path: Path, title: str) -> Path:
    """One curve per schedule; a dot marks the epoch whose weights were kept."""
    with plt.style.context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 4.8))
        for name, run in results.items():
            h = run.history
            line, = ax.plot(h["epoch"], h[column], label=f"{name}: best epoch {run.metrics['best_epoch']}")
            kept = h["epoch"] == run.metrics["best_epoch"]
            ax.plot(h.loc[kept, "epoch"], h.loc[kept, column], "o", color=line.get_color())
        ax.set(title=title, xlabel="epoch", ylabel=column)
        ax.legend(fontsize=8)
        return _save(fig, path)


def learning_rate_png(results: dict[str, TrainedRun], args, steps_per_epoch: int, path: Path) -> Path:
    """Left: each schedule object evaluated at every update. Right: the rate each run
    actually had at the end of every epoch (ReduceLROnPlateau's drops show only here)."""
    rate = base_rate(args)
    total = steps_per_epoch * args.epochs
    steps = np.arange(total + 1)
    with plt.style.context(STYLE):
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for name in results:
            schedule = learning_rate(name, rate, steps_per_epoch, args.epochs)
            if name in ("constant", "step", "exponential", "cosine"):
                left.plot(steps / steps_per_epoch, [rate_at(schedule, s) for s in steps], label=name)
            h = results[name].history
            right.plot(h["epoch"], h["learning_rate"], "o-", markersize=3, label=name)
        left.set(title="schedule at every update", xlabel="epoch (updates / steps per epoch)",
                 ylabel="learning rate", yscale="log")
        right.set(title="rate recorded at the end of each epoch", xlabel="epoch", yscale="log")
        for ax in (left, right):
            ax.legend(fontsize=8)
        return _save(fig, path)


# --- the schedule comparison ------------------------------------------------------------------

def results_table(results: dict[str, TrainedRun]) -> list[dict]:
    return [{"schedule": name, "epochs run": r.metrics["epochs_run"], "best epoch": r.metrics["best_epoch"],
             "val acc @best": r.metrics["val_accuracy_at_best"],
             "max val acc": r.metrics["max_val_accuracy"], "test acc": r.metrics["test_accuracy"],
             "test loss": r.metrics["test_loss"], "final lr": r.metrics["final_learning_rate"],
             "seconds": r.metrics["seconds"]} for name, r in results.items()]


def format_table(rows: list[dict]) -> str:
    """Rows as aligned plain text: learning rates in exponent form, other floats with 4 decimals."""
    def cell(key, value):
        if isinstance(value, float):
            rate = key in ("lr", "learning_rate") or key.endswith(" lr")
            return f"{value:.2e}" if rate or 0 < abs(value) < 1e-3 else f"{value:.4f}"
        return str(value)

    cells = [[cell(k, v) for k, v in row.items()] for row in rows]
    widths = [max(len(str(k)), *(len(c[i]) for c in cells)) for i, k in enumerate(rows[0])]
    lines = ["  ".join(str(k).ljust(w) for k, w in zip(rows[0], widths)).rstrip()]
    numeric = [isinstance(v, int | float) for v in rows[0].values()]
    lines += ["  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric))
              for row in cells]
    return "\n".join(lines)


def compare_schedules(data: image_data.ImageData, args, run: runs.Run) -> tuple[dict, list[dict], list]:
    """Train once per schedule; write the figures and table into the run folder."""
    spec = models.get_spec(args.model)
    names = check_schedules(args.schedule or list(SCHEDULES))
    results = {name: train_schedule(name, data, args, spec) for name in names}
    rows = results_table(results)
    pd.DataFrame(rows).to_csv(run.path("schedules.csv"), index=False)
    steps = math.ceil(len(data.x_train) / args.batch_size)
    figures = [
        overlaid_png(results, "val_accuracy", run.path("val_accuracy.png"),
                     f"{spec.name} on {data.name}: validation accuracy per schedule"),
        overlaid_png(results, "val_loss", run.path("val_loss.png"),
                     f"{spec.name} on {data.name}: validation loss per schedule"),
        learning_rate_png(results, args, steps, run.path("learning_rate.png")),
    ]
    return results, rows, figures


# --- under-fitting and over-fitting -----------------------------------------------------------

def underfitting_model(image_shape, classes: int) -> keras.Model:
    """784 -> 2 -> 10: every image squeezed through two numbers, too few to tell ten classes apart."""
    size = int(np.prod(image_shape))
    return keras.Sequential([keras.Input((size,)), keras.layers.Dense(2),
                             keras.layers.Dense(classes, activation="softmax")], name="bottleneck_2")


def fit_demo(data: image_data.ImageData, args, run: runs.Run) -> tuple[dict, list[dict], list]:
    """Train a model that under-fits and one that over-fits on the same few images, constant rate."""
    n = min(args.fit_train, len(data.x_train))
    x_train, y_train = as_input(data.x_train[:n], True), data.y_train[:n]
    x_val = as_input(data.x_val, True)
    contenders = {
        "under-fitting": lambda: underfitting_model(data.image_shape, len(data.class_names)),
        "over-fitting": lambda: models.build_model("mlp_two_layers", data.image_shape,
                                                   len(data.class_names)),
    }
    results = {}
    for label, build in contenders.items():
        keras.utils.set_random_seed(args.seed)
        model = build()
        model.compile(optimizer=OPTIMIZERS[args.optimizer](learning_rate=base_rate(args)),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        if not args.quiet:
            print(f"\n=== {label}: {model.name}, {model.count_params():,} parameters, {n:,} training "
                  f"images, {args.fit_epochs} epochs of batches of {args.fit_batch_size}", flush=True)
        start = time.perf_counter()
        fit = model.fit(x_train, y_train, validation_data=(x_val, data.y_val), epochs=args.fit_epochs,
                        batch_size=args.fit_batch_size, callbacks=[EpochTimer()], verbose=0)
        h = runs.history_frame(fit.history)
        last = h.iloc[-1]
        results[label] = TrainedRun(label, model, h, {
            "model": model.name, "params": model.count_params(), "train_images": n,
            "epochs": len(h), "batch_size": args.fit_batch_size, "train_accuracy": float(last["accuracy"]),
            "val_accuracy": float(last["val_accuracy"]),
            "gap": float(last["accuracy"] - last["val_accuracy"]),
            "train_loss": float(last["loss"]), "val_loss": float(last["val_loss"]),
            "lowest_val_loss_epoch": best_epoch(h, "val_loss"), "seconds": time.perf_counter() - start})
        if not args.quiet:
            m = results[label].metrics
            print(f"final epoch: train accuracy {m['train_accuracy']:.4f}, validation accuracy "
                  f"{m['val_accuracy']:.4f} (gap {m['gap']:+.4f}); validation loss lowest at epoch "
                  f"{m['lowest_val_loss_epoch']}", flush=True)
    rows = [{"case": label, "model": r.metrics["model"], "params": r.metrics["params"],
             "train images": r.metrics["train_images"], "epochs": r.metrics["epochs"],
             "batch": r.metrics["batch_size"],
             "train acc": r.metrics["train_accuracy"], "val acc": r.metrics["val_accuracy"],
             "gap": r.metrics["gap"], "train loss": r.metrics["train_loss"],
             "val loss": r.metrics["val_loss"],
             "lowest val loss at epoch": r.metrics["lowest_val_loss_epoch"]}
            for label, r in results.items()]
    pd.DataFrame(rows).to_csv(run.path("fit.csv"), index=False)
    return results, rows, [fit_png(results, data.name, run.path("fit.png"))]


def fit_png(results: dict[str, TrainedRun], dataset: str, path: Path) -> Path:
    """Accuracy (top) and loss (bottom), training against validation, one column per model."""
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 7), sharex=True,
                                 squeeze=False)
        for column, (label, run) in enumerate(results.items()):
            h, m = run.history, run.metrics
            for row, metric in enumerate(("accuracy", "loss")):
                ax = axes[row, column]
                ax.plot(h["epoch"], h[metric], label=f"training: {h[metric].iloc[-1]:.3f}")
                val = h[f"val_{metric}"]
                ax.plot(h["epoch"], val, label=f"validation: {val.iloc[-1]:.3f}")
                ax.set(ylabel=metric)
                ax.legend(fontsize=8)
            axes[0, column].set_title(f"{label}: {m['model']}, {m['params']:,} params\n"
                                      f"{m['train_images']:,} {dataset} images, gap {m['gap']:+.3f}",
                                      fontsize=10)
            axes[1, column].set_xlabel("epoch")
        return _save(fig, path)


# --- the command line ------------------------------------------------------------------------

def parse_args(argv=None):
    parser = cli.make_parser(__doc__.split("\n\n")[0], epochs=20, batch_size=128,
                             epilog="schedules (r = --learning-rate):\n"
                             + "\n".join(f"  {k:<15}{v}" for k, v in SCHEDULES.items()))
    parser.add_argument("--demo", choices=DEMOS, default="schedules",
                        help="what to run: the schedule comparison, the under-/over-fitting "
                             "demonstration, or both")
    parser.add_argument("--schedule", action="append", metavar="NAME",
                        help="schedule to run; repeat for several (default: all of "
                             f"{', '.join(SCHEDULES)})")
    parser.add_argument("-m", "--model", default=DEFAULT_MODEL, choices=list(models.REGISTRY),
                        metavar="NAME", help="model from mnist/models.py for the schedule comparison")
    image_data.add_data_arguments(parser, limit=10_000)
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adam",
                        help="optimisation algorithm")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=None,
                        help="starting (peak) rate r of every schedule (default: the optimiser's "
                             "Keras default, 0.001 for adam)")
    parser.add_argument("--monitor", choices=("val_accuracy", "val_loss"), default="val_accuracy",
                        help="metric that picks the best epoch of every run and that EarlyStopping "
                             "watches")
    parser.add_argument("--patience", type=cli.positive_int, default=3,
                        help="epochs without improvement before EarlyStopping stops")
    parser.add_argument("--fit-train", type=cli.positive_int, default=1_000, metavar="N",
                        help="training images for the under-/over-fitting demonstration")
    parser.add_argument("--fit-epochs", type=cli.positive_int, default=60,
                        help="epochs for the under-/over-fitting demonstration")
    parser.add_argument("--fit-batch-size", type=cli.positive_int, default=32,
                        help="batch size for the under-/over-fitting demonstration: small, so its "
                             "1,000 images still give about 30 updates per epoch")
    args = parser.parse_args(argv)
    check_schedules(args.schedule or [])
    return args


def write_report(run: runs.Run, args, data, schedule_part, fit_part) -> Path:
    sections = [("Data", report.key_values({"dataset": data.describe(), "note": data.note or "-",
                                            "backend": keras.backend.backend(), "seed": args.seed}))]
    if schedule_part:
        _, rows, figures = schedule_part
        settings = {"model": args.model, "optimizer": args.optimizer, "starting rate r": base_rate(args),
                    "epochs": args.epochs, "batch size": args.batch_size,
                    "best epoch picked by": args.monitor, "EarlyStopping patience": args.patience}
        sections += [("Schedules compared", report.table([{"schedule": n, "how": SCHEDULES[n]}
                                                           for n in (r["schedule"] for r in rows)])),
                     ("Settings", report.key_values(settings)),
                     ("Results (test accuracy of each run's best epoch)", report.table(rows)),
                     ("Curves and learning rates", report.images(figures))]
    if fit_part:
        _, rows, figures = fit_part
        sections += [("Under-fitting and over-fitting", report.table(rows)),
                     ("Training against validation", report.images(figures))]
    return report.write_report(run.path("report.html"), f"{CHAPTER}: {args.demo}", sections)


@cli.friendly_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    data = image_data.load_images(args.dataset, args.data_dir, seed=args.seed, limit=args.limit)
    print(f"*** {data.describe()}" + (f"\n*** {data.note}" if data.note else ""), flush=True)
    if args.demo in ("schedules", "all"):  # the model reads these images, or one line now
        models.get_spec(args.model).check_image_shape(data.image_shape)
    run = runs.Run(CHAPTER, args.demo, args, argv)
    schedule_part = compare_schedules(data, args, run) if args.demo in ("schedules", "all") else None
    fit_part = fit_demo(data, args, run) if args.demo in ("fit", "all") else None

    histories, metrics, extra, keep = [], {}, {}, None
    if schedule_part:
        results, rows, _ = schedule_part
        print("\nschedules (test accuracy of each run's best epoch by " + args.monitor + "):")
        print(format_table(rows))
        histories += [r.history.assign(run=name) for name, r in results.items()]
        metrics.update({f"{name}_test_accuracy": r.metrics["test_accuracy"] for name, r in results.items()})
        # The saved model is the run that did best on validation, never picked by its test score.
        keep = max(results.values(), key=lambda r: r.metrics["val_accuracy_at_best"])
        extra.update(schedules=rows, saved_model_schedule=keep.name)
    if fit_part:
        results, rows, _ = fit_part
        print("\nunder-fitting and over-fitting (final epoch):")
        print(format_table(rows))
        histories += [r.history.assign(run=name) for name, r in results.items()]
        metrics.update({f"{name}_gap": r.metrics["gap"] for name, r in results.items()})
        extra.update(fit=rows)
    history = pd.concat(histories, ignore_index=True)
    history = history[["run", *(c for c in history.columns if c != "run")]]
    run.finish(model=keep.model if keep else None, history=history, metrics=metrics, dataset=data.name,
               dataset_note=data.note, dataset_shapes=data.describe(), class_names=data.class_names,
               **extra)
    write_report(run, args, data, schedule_part, fit_part)
    print(f"\nrun folder: {runs.shown_path(run.dir)} (report.html, figures, CSV tables"
          + (f", model.keras = {keep.name}" if keep else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
