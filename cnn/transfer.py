"""Transfer learning: re-use a convolutional base trained on one task for another.

The offline experiment (default): train the MNIST chapter's ``conv_net`` on a
source task, keep its convolutional layers (the "base"), give it a fresh
classifier head for a target task that has only a few labelled images per
class, and train

  1. the head alone, with the base frozen;
  2. then the top of the base too, with a 10x smaller learning rate (fine-tuning);

against the same network trained from scratch on the same few labels for as
many updates. Every method keeps the checkpoint that scores best on the same small
validation set (20 other labelled images per class), and each budget is repeated on
5 random draws of the labels; the gain is measured per draw and reported as
mean ± standard deviation. The default task learns on five kinds of Fashion-MNIST images
(sandal, shirt, sneaker, bag, ankle boot) and transfers to the other five
(T-shirt, trouser, pullover, dress, coat).

    python cnn/transfer.py                              # fashion_split, a few minutes on 2 cores
    python cnn/transfer.py --task digits_split --quick  # scikit-learn digits 0-4 -> 5-9, seconds
    python cnn/transfer.py --labels-per-class 5 50 500 --repeats 5
    python cnn/transfer.py --base mobilenet_v2 --images my_photos/   # class sub-folders

With ``--base mobilenet_v2 --images DIR`` the same two steps fine-tune an
ImageNet-trained MobileNetV2 on your own photos (one sub-folder per class).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `utils` imports from any folder

from mnist import data as image_data  # noqa: E402
from mnist import models  # noqa: E402
from mnist.training import pipeline  # noqa: E402
from utils import cli, plots, runs  # noqa: E402
from utils.errors import DatasetNotFoundError, TutorialError  # noqa: E402
from utils.lazy import deferred, keras, lazy  # noqa: E402  (Keras loads on first use, after the flags)
from utils.plots import STYLE, plt  # noqa: E402

np, pd = lazy("numpy"), lazy("pandas")
folder_transfer = lazy("cnn.folder_transfer")
EpochTimer = lazy("utils.callbacks", "EpochTimer")
StopOnNaN = lazy("utils.callbacks", "StopOnNaN")

CHAPTER = "cnn"
FINE_TUNE_FACTOR = 10  # fine-tuning uses the head's learning rate divided by this
EVAL_EVERY = 50  # updates between two checks on the validation images


@dataclass(frozen=True)
class Task:
    name: str
    source: str                 # dataset of the source task
    source_classes: tuple[int, ...]
    target: str                 # dataset of the target task
    target_classes: tuple[int, ...]
    budgets: tuple[int, ...]    # default labelled images per target class
    description: str


TASKS = {t.name: t for t in (
    # Source and target share no class, but the shirts among the source prepare for the
    # T-shirts, pullovers and coats of the target, the hardest classes to tell apart.
    Task("fashion_split", "fashion_mnist", (5, 6, 7, 8, 9), "fashion_mnist", (0, 1, 2, 3, 4),
         (1, 10, 100), "Fashion-MNIST: sandal, shirt, sneaker, bag, ankle boot -> T-shirt, "
                          "trouser, pullover, dress, coat"),
    # A wider source (eight classes, three of them tops) for the pair of tops that
    # Fashion-MNIST models confuse most; measured, it helps less than fashion_split.
    Task("fashion_coats", "fashion_mnist", (0, 1, 3, 5, 6, 7, 8, 9), "fashion_mnist", (2, 4),
         (5, 20, 100), "Fashion-MNIST: the other eight classes -> pullover vs coat"),
    Task("digits_split", "digits", (0, 1, 2, 3, 4), "digits", (5, 6, 7, 8, 9), (5, 20, 100),
         "scikit-learn's 8x8 digits (upscaled to 28x28): 0-4 -> 5-9; no download ever"),
    Task("fashion_to_digits", "fashion_mnist", tuple(range(10)), "digits", tuple(range(10)),
         (5, 20, 100), "all of Fashion-MNIST -> scikit-learn's digits 0-9"),
)}
QUICK = {"task": "digits_split", "labels_per_class": [5, 20], "repeats": 1, "steps": 60, "epochs": 1}


@dataclass
class Split:
    """Images (n, 28, 28, 1) and labels renumbered 0..k-1 for one task's classes."""
    x: np.ndarray
    y: np.ndarray


def _classes(x: np.ndarray, y: np.ndarray, classes: tuple[int, ...]) -> Split:
    keep = np.isin(y, classes)
    renumber = np.zeros(max(classes) + 1, dtype="int64")
    renumber[list(classes)] = np.arange(len(classes))
    return Split(x[keep], renumber[y[keep]])


def _dataset(name: str, seed: int):
    try:
        return image_data.load_images(name, seed=seed)
    except DatasetNotFoundError as err:
        raise DatasetNotFoundError(f"{err}; or choose --task digits_split, which needs no download") \
            from None


def load_data(task: Task, seed: int = 0) -> dict[str, Split]:
    """source_train, source_val (source classes); target_pool (every target training image,
    from which the few labels are drawn) and target_test (target classes, test images)."""
    source = _dataset(task.source, seed)
    target = source if task.target == task.source else _dataset(task.target, seed)
    return {
        "source_train": _classes(source.x_train, source.y_train, task.source_classes),
        "source_val": _classes(source.x_val, source.y_val, task.source_classes),
        "target_pool": _classes(np.concatenate([target.x_train, target.x_val]),
                                np.concatenate([target.y_train, target.y_val]), task.target_classes),
        "target_test": _classes(target.x_test, target.y_test, task.target_classes),
    }


def few_labels(pool: Split, per_class: int, seed: int, validation_per_class: int = 0):
    """``per_class`` images of every class, drawn at random without replacement.

    With ``validation_per_class``, also returns that many other images per class (never the
    same ones) as a validation set: ``(labelled, validation)``."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(pool.y)
    if per_class + validation_per_class > counts.min():
        raise TutorialError(f"--labels-per-class {per_class} (+ {validation_per_class} for validation) "
                            f"is more than the {counts.min()} training images the smallest target class "
                            "has; choose smaller budgets")
    drawn = [rng.permutation(np.flatnonzero(pool.y == c)) for c in range(len(counts))]
    picked = np.concatenate([d[:per_class] for d in drawn])
    labelled = Split(pool.x[picked], pool.y[picked])
    if not validation_per_class:
        return labelled
    held = np.concatenate([d[per_class:per_class + validation_per_class] for d in drawn])
    return labelled, Split(pool.x[held], pool.y[held])


def _jit() -> bool:
    """XLA-compile on JAX only. On TensorFlow, compiling each of the dozens of small models costs
    more time than it saves here; JAX without it runs every operation one by one, far slower."""
    return keras.backend.backend() == "jax"


def base_size(model) -> int:
    """How many leading layers form the convolutional base: everything up to and including
    the Flatten that turns feature maps into one vector; the layers after it are the head."""
    for i, layer in enumerate(model.layers):
        if isinstance(layer, keras.layers.Flatten):
            return i + 1
    raise TutorialError(f"{model.name} has no Flatten layer, so no convolutional base to transfer")


def build_model(name: str, classes: int, input_shape=(28, 28, 1)):
    """The registry's network with ``classes`` outputs, untrained."""
    return models.build_model(name, input_shape, classes)


def pretrain(base_name: str, data: dict[str, Split], args):
    """Train the whole network on the source task; returns the model and its history table."""
    keras.utils.set_random_seed(args.seed)
    classes = int(data["source_train"].y.max()) + 1
    model = build_model(base_name, classes)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=_jit())
    train = pipeline(data["source_train"].x, data["source_train"].y, 128, False, shuffle_seed=args.seed)
    val = pipeline(data["source_val"].x, data["source_val"].y, 512, False)
    history = model.fit(train, validation_data=val, epochs=args.epochs, callbacks=[EpochTimer(), StopOnNaN()],
                        verbose=0 if args.quiet else 2, shuffle=False)
    return model, runs.history_frame(history.history)


@deferred
def KeepBest():  # a Keras callback, defined once Keras is loaded
    class KeepBest(keras.callbacks.Callback):
        """Remember the weights with the best validation accuracy seen (checked every
        ``EVAL_EVERY`` updates) and put them back when training ends: early stopping without
        the stopping, the same for every method. ``best`` starts at the accuracy to beat."""

        def __init__(self, best: float = -1.0):
            super().__init__()
            self.best, self.weights = best, None

        def on_epoch_end(self, epoch, logs=None):
            if logs["val_accuracy"] > self.best:
                self.best, self.weights = logs["val_accuracy"], self.model.get_weights()

        def on_train_end(self, logs=None):
            if self.weights is not None:
                self.model.set_weights(self.weights)

    return KeepBest


def _fit_steps(model, split: Split, steps: int, learning_rate: float, batch_size: int, seed: int,
               validation: Split | None = None, best: float = -1.0) -> float:
    """``steps`` weight updates on the few labelled images, cycling through them.

    With a ``validation`` set, the model ends with the weights that scored best on it
    (checked every ``EVAL_EVERY`` updates, and only if they beat ``best``); returns that
    validation accuracy."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=_jit())
    stream = pipeline(split.x, split.y, min(batch_size, len(split.x)), False, shuffle_seed=seed).repeat()
    chunk = min(EVAL_EVERY, steps) if validation is not None else steps
    keep = KeepBest(best)
    model.fit(stream, epochs=max(1, steps // chunk), steps_per_epoch=chunk, verbose=0, shuffle=False,
              validation_data=None if validation is None else (validation.x, validation.y),
              callbacks=[keep] if validation is not None else [])
    return keep.best


def _accuracy(model, test: Split) -> float:
    return float(model.evaluate(test.x, test.y, batch_size=512, verbose=0)[1])


def transferred(source_model, base_name: str, classes: int):
    """A fresh network whose base holds a copy of the source model's base weights (frozen)
    and whose head is new and untrained."""
    model = build_model(base_name, classes)
    n_base = base_size(model)
    for mine, theirs in zip(model.layers[:n_base], source_model.layers[:n_base]):
        mine.set_weights(theirs.get_weights())
        mine.trainable = False
    return model, n_base


def unfreeze_top(model, n_base: int, conv_layers: int) -> list[str]:
    """Make the last ``conv_layers`` convolutions of the base (and the layers after them)
    trainable; the earlier ones, with the most generic features, stay frozen."""
    convs = [i for i in range(n_base) if isinstance(model.layers[i], keras.layers.Conv2D)]
    start = convs[-conv_layers] if conv_layers <= len(convs) else 0
    for layer in model.layers[start:n_base]:
        layer.trainable = True
    return [layer.name for layer in model.layers[start:n_base] if layer.weights]


def compare_one(source_model, args, data: dict[str, Split], per_class: int, repeat: int) -> dict:
    """Scratch vs frozen base vs fine-tuned, on the same ``per_class`` labels.

    Every method keeps its checkpoint that scored best on the same small validation set
    (``--validation-per-class`` other images per class), so none is judged after it has
    over-fitted the few labels; from scratch gets as many updates as the other two phases."""
    seed = args.seed * 1000 + repeat
    labelled, validation = few_labels(data["target_pool"], per_class, seed, args.validation_per_class)
    classes = int(data["target_pool"].y.max()) + 1
    fine_steps = args.steps // 2
    start = time.perf_counter()

    keras.utils.set_random_seed(seed)
    model, n_base = transferred(source_model, args.base, classes)
    best = _fit_steps(model, labelled, args.steps, args.learning_rate, args.batch_size, seed, validation)
    frozen = _accuracy(model, data["target_test"])
    unfreeze_top(model, n_base, args.fine_tune_layers)
    _fit_steps(model, labelled, fine_steps, args.learning_rate / FINE_TUNE_FACTOR, args.batch_size, seed,
               validation, best)
    fine_tuned = _accuracy(model, data["target_test"])

    keras.utils.set_random_seed(seed)  # the same head initialisation and batch order
    scratch_model = build_model(args.base, classes)
    _fit_steps(scratch_model, labelled, args.steps + fine_steps, args.learning_rate, args.batch_size, seed,
               validation)
    scratch = _accuracy(scratch_model, data["target_test"])
    keras.backend.clear_session()  # dozens of small models otherwise pile up in memory
    return {"labels_per_class": per_class, "repeat": repeat, "train_images": len(labelled.y),
            "scratch": scratch, "frozen_base": frozen, "fine_tuned": fine_tuned,
            "gain": fine_tuned - scratch, "seconds": time.perf_counter() - start}


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over the draws, per label budget. The gain's spread is that of the
    per-draw differences: both methods saw the same labelled images in each draw."""
    grouped = results.groupby("labels_per_class")
    table = grouped[["train_images", "scratch", "frozen_base", "fine_tuned", "gain"]].mean()
    for column in ("scratch", "frozen_base", "fine_tuned", "gain"):
        table[f"{column}_std"] = grouped[column].std(ddof=0)
    table["wins"] = grouped["gain"].apply(lambda gains: int((gains > 0).sum()))
    table["draws"] = grouped["gain"].size()
    return table.reset_index()


def format_summary(summary: pd.DataFrame, repeats: int) -> str:
    spread = repeats > 1
    head = (f"{'labels/class':>12} {'images':>7} {'from scratch':>14} {'frozen base':>14} "
            f"{'fine-tuned':>14} {'gain (points)':>15} {'wins':>6}")
    lines = [head, "-" * len(head)]
    for row in summary.itertuples():
        cells = [f"{getattr(row, c):.1%}" + (f" ±{getattr(row, c + '_std'):.1%}" if spread else "")
                 for c in ("scratch", "frozen_base", "fine_tuned")]
        gain = f"{row.gain * 100:+.1f}" + (f" ±{row.gain_std * 100:.1f}" if spread else "")
        lines.append(f"{row.labels_per_class:>12} {int(row.train_images):>7} {cells[0]:>14} {cells[1]:>14} "
                     f"{cells[2]:>14} {gain:>15} {f'{row.wins}/{row.draws}':>6}")
    note = f"mean ± standard deviation over {repeats} draws of the labelled images" if spread else \
        "one draw of the labelled images (--repeats for more)"
    return "\n".join(lines + [f"gain = fine-tuned minus from scratch on the same draw, in percentage points; "
                              f"wins = draws where fine-tuned beat from scratch; {note}"])


def plot_comparison(summary: pd.DataFrame, results: pd.DataFrame, title: str, path: Path) -> Path:
    """Left: test accuracy against labels per class (log axis), one line per method.
    Right: the gain of every draw (dots) and its mean ± standard deviation."""
    with plt.style.context(STYLE):
        fig, (ax, ax_gain) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1.4, 1]})
        x = summary["labels_per_class"]
        for column, label in (("scratch", "from scratch"), ("frozen_base", "frozen base + new head"),
                              ("fine_tuned", "fine-tuned")):
            ax.errorbar(x, summary[column], yerr=summary[f"{column}_std"], marker="o", capsize=3,
                        label=f"{label} ({summary[column].iloc[0]:.1%} at {x.iloc[0]})")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(list(x), [str(v) for v in x])
        ax.set(title=title, xlabel="labelled training images per class", ylabel="test accuracy")
        ax.legend(fontsize=9)
        positions = range(len(x))
        for i, per_class in zip(positions, x):
            gains = results.loc[results["labels_per_class"] == per_class, "gain"] * 100
            ax_gain.scatter(np.full(len(gains), i) + np.linspace(-0.12, 0.12, len(gains)), gains,
                            color="#348ABD", alpha=0.6, s=18)
        ax_gain.errorbar(list(positions), summary["gain"] * 100, yerr=summary["gain_std"] * 100, fmt="D",
                         color="#E24A33", capsize=5, label="mean ± std")
        ax_gain.axhline(0, color="grey", lw=1)
        ax_gain.set_xticks(list(positions), [str(v) for v in x])
        ax_gain.set(title="gain of fine-tuned over from scratch", xlabel="labelled training images per class",
                    ylabel="percentage points")
        ax_gain.legend(fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
    return path


def train_and_evaluate(args, argv=None) -> runs.RunResult:
    """The offline experiment: pre-train on the source task, then compare on every budget."""
    task = TASKS[args.task]
    budgets = args.labels_per_class or list(task.budgets)
    data = load_data(task, args.seed)
    for per_class in budgets:  # fail on an impossible budget before any training
        few_labels(data["target_pool"], per_class, 0, args.validation_per_class)
    run = runs.Run(CHAPTER, f"transfer_{args.task}", args, argv)
    verbose = not args.quiet
    if verbose:
        print(f"task {task.name}: {task.description}")
        print(f"source: {len(data['source_train'].y):,} training images of {len(task.source_classes)} "
              f"classes; target: {len(data['target_pool'].y):,} images to draw labels from, "
              f"{len(data['target_test'].y):,} test images\n"
              f"pre-training {args.base} on the source task for {args.epochs} epoch(s)", flush=True)
    start = time.perf_counter()
    source_model, history = pretrain(args.base, data, args)
    pretrain_seconds = time.perf_counter() - start
    source_val = float(history["val_accuracy"].iloc[-1])
    if verbose:
        print(f"source task validation accuracy {source_val:.1%} ({pretrain_seconds:.0f} s)\n"
              f"each budget: head {args.steps} steps with the base frozen, then {args.steps // 2} "
              f"fine-tuning the top {args.fine_tune_layers} conv layer(s) at lr "
              f"{args.learning_rate / FINE_TUNE_FACTOR:g}; from scratch {args.steps + args.steps // 2} "
              "steps", flush=True)

    rows = []
    for per_class in budgets:
        for repeat in range(args.repeats):
            row = compare_one(source_model, args, data, per_class, repeat)
            rows.append(row)
            if verbose:
                print(f"  {per_class:>5} labels/class, draw {repeat + 1}/{args.repeats}: scratch "
                      f"{row['scratch']:.1%}  frozen {row['frozen_base']:.1%}  fine-tuned "
                      f"{row['fine_tuned']:.1%}  gain {row['gain'] * 100:+.1f}  ({row['seconds']:.0f} s)",
                      flush=True)
    results = pd.DataFrame(rows)
    summary = summarise(results)
    results.to_csv(run.path("results.csv"), index=False)
    summary.to_csv(run.path("summary.csv"), index=False)
    plots.save_standard_plots(history, f"{args.base} on the source task ({task.source})", run.dir)
    plot_comparison(summary, results, f"{task.name}: transfer vs from scratch ({args.base})",
                    run.path("transfer.png"))
    smallest = summary.iloc[0]
    metrics = {"source_val_accuracy": source_val, "pretrain_seconds": pretrain_seconds,
               "smallest_budget": int(smallest["labels_per_class"]),
               "scratch_at_smallest": float(smallest["scratch"]),
               "fine_tuned_at_smallest": float(smallest["fine_tuned"]),
               "gain_at_smallest": float(smallest["gain"]),
               "gain_std_at_smallest": float(smallest["gain_std"]),
               "wins_at_smallest": int(smallest["wins"]), "draws": args.repeats}
    return run.finish(model=source_model, history=history, metrics=metrics, dataset=task.description,
                      summary=summary.to_dict(orient="records"), table=format_summary(summary, args.repeats))


def parse_args(argv=None):
    parser = cli.make_parser(__doc__.split("\n\n")[0], epochs=3, batch_size=32,
                             epilog="tasks: " + "; ".join(f"{t.name} ({t.description})"
                                                          for t in TASKS.values()))
    conv_models = [name for name, spec in models.REGISTRY.items() if not spec.flat_input]
    parser.add_argument("--base", default="conv_net", choices=[*conv_models, "mobilenet_v2"],
                        help="network whose convolutional base is transferred; mobilenet_v2 needs --images")
    parser.add_argument("--task", choices=list(TASKS), default="fashion_split",
                        help="source and target of the offline experiment")
    parser.add_argument("--labels-per-class", type=cli.positive_int, nargs="+", default=None,
                        metavar="N", help="label budgets to compare (default: the task's, e.g. 1 10 "
                                          "100 for fashion_split)")
    parser.add_argument("--repeats", type=cli.positive_int, default=5,
                        help="draws of the labelled images per budget (the mean is reported)")
    parser.add_argument("--steps", type=cli.positive_int, default=200,
                        help="weight updates for the new head; fine-tuning adds half as many; "
                             "from scratch gets both")
    parser.add_argument("--validation-per-class", type=cli.positive_int, default=20, metavar="N",
                        help="other labelled images per class, the same for every method, on which "
                             f"each keeps its best checkpoint (checked every {EVAL_EVERY} updates)")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=1e-3,
                        help=f"adam's step size; fine-tuning uses it / {FINE_TUNE_FACTOR}")
    parser.add_argument("--fine-tune-layers", type=cli.positive_int, default=None, metavar="N",
                        help="how much of the top of the base fine-tuning unfreezes: conv layers "
                             "(default 1) for the MNIST bases, layers (default 30 of its 154) for "
                             "mobilenet_v2")
    parser.add_argument("--quick", action="store_true",
                        help="a seconds-long check, unless other flags say otherwise: "
                             + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    folder = parser.add_argument_group("your own images (--base mobilenet_v2)")
    folder.add_argument("--images", type=Path, default=None, metavar="DIR",
                        help="folder with one sub-folder of images per class")
    folder.add_argument("--weights", default="imagenet",
                        help="'imagenet' (downloaded once, cached by Keras), 'none', or a file")
    folder.add_argument("--image-size", type=cli.positive_int, default=160,
                        help="images are resized to this square (imagenet weights: 96-224, step 32)")
    folder.add_argument("--fine-tune-epochs", type=cli.positive_int, default=None,
                        help="epochs of fine-tuning after the head's (default: same as --epochs)")
    args = parser.parse_args(argv)
    if args.quick:  # flags given explicitly still win
        for key, value in QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    if args.fine_tune_layers is None:
        args.fine_tune_layers = 30 if args.base == "mobilenet_v2" else 1
    return args


@cli.friendly_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    if args.base == "mobilenet_v2" or args.images is not None:
        if args.base != "mobilenet_v2" or args.images is None:
            raise TutorialError("fine-tuning on your own images needs both --base mobilenet_v2 and "
                                "--images DIR")
        result = folder_transfer.train_and_evaluate(args, argv)
        print(f"\nvalidation accuracy: head only {result.metrics['head_val_accuracy']:.1%}, "
              f"after fine-tuning {result.metrics['val_accuracy']:.1%}")
    else:
        result = train_and_evaluate(args, argv)
        print("\n" + result.extra["table"])
    print(f"run folder: {runs.shown_path(result.run_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
