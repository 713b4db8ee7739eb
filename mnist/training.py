"""Training one MNIST model: input pipelines, callbacks, resuming, reports."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

from mnist.data import ImageData
from mnist.models import ModelSpec
from utils import distribute, plots, report, runs
from utils.errors import TutorialError
from utils.lazy import keras, lazy  # Keras is imported on first use, after the flags are read
from utils.steps import scored  # the test rows a KERAS_MAX_STEPS_PER_EPOCH run scores

np, pd = lazy("numpy"), lazy("pandas")
evaluation = lazy("mnist.evaluation")
EpochTimer = lazy("utils.callbacks", "EpochTimer")
StopOnNaN = lazy("utils.callbacks", "StopOnNaN")

CHAPTER = "mnist"
OPTIMIZERS = {name: lazy("keras.optimizers", cls) for name, cls in
              (("adam", "Adam"), ("rmsprop", "RMSprop"), ("sgd", "SGD"), ("adamw", "AdamW"))}
INPUT_PIPELINES = ("auto", "tf.data", "arrays")  # --input-pipeline
LOG = "epochs.csv"        # CSVLogger's live log, one row per finished epoch
BACKUP = "backup"         # BackupAndRestore's folder; removed once run.json is written
STARTED = "started.json"  # inside BACKUP: the flags a resumed run must share with the interrupted one
#: The flags that shape the training itself: resuming with any of them changed would mix two runs.
RESUME_FLAGS = ("dataset", "data_dir", "limit", "optimizer", "learning_rate", "batch_size", "schedule",
                "augment", "epochs")


def _original_augmentation() -> list:
    # The original tutorial's ImageDataGenerator settings as Keras 3
    # preprocessing layers: rotation up to 8 degrees, shifts and zoom up to 8%, shear 0.3.
    return [keras.layers.RandomRotation(8 / 360, fill_mode="constant"),
            keras.layers.RandomTranslation(0.08, 0.08, fill_mode="constant"),
            keras.layers.RandomShear(x_factor=0.3, fill_mode="constant"),
            keras.layers.RandomZoom(0.08, fill_mode="constant")]


def _flip_augmentation() -> list:
    # A mirrored shirt is still a shirt (a mirrored 2 is not a digit): for
    # clothes, left-right flips double the training set without inventing
    # images the test set could not contain.
    return [keras.layers.RandomFlip("horizontal")]


def _flip_shift_augmentation() -> list:
    # Flips plus shifts of up to 10% (about 3 pixels): Fashion-MNIST's
    # photos are centred, so this is already more variety than its test set has.
    return [keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant")]


AUGMENTATIONS = {"original": _original_augmentation, "flip": _flip_augmentation,
                 "flip_shift": _flip_shift_augmentation}


def augmenter(kind: str = "original") -> keras.Sequential:
    """The named augmentation as one model applied to training batches."""
    return keras.Sequential(AUGMENTATIONS[kind](), name=f"augment_{kind}")


def pipeline(x, y, batch_size: int, flat: bool, *, shuffle_seed: int | None = None, augment=None):
    """A tf.data pipeline of (images, labels) batches.

    Images stay (28, 28, 1) through augmentation and are flattened to (784,)
    afterwards for the MLPs. Shuffling happens once per epoch; prefetch lets
    the next batch be prepared while the current one trains.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        # Layer by layer: a Keras preprocessing layer runs as TensorFlow inside
        # tf.data on every backend, a Sequential around them only on TensorFlow.
        steps = getattr(augment, "layers", [augment])

        def altered(images, labels):
            for layer in steps:
                images = layer(images, training=True)
            return images, labels

        ds = ds.map(altered, num_parallel_calls=tf.data.AUTOTUNE)
    if flat:
        ds = ds.map(lambda images, labels: (tf.reshape(images, (-1, int(np.prod(x.shape[1:])))), labels))
    return ds.prefetch(tf.data.AUTOTUNE)


def feeds_arrays(augment=None) -> bool:
    """Whether ``fit`` should read NumPy arrays rather than a tf.data pipeline.

    On PyTorch a tf.data pipeline runs TensorFlow's threads beside the
    backend's own and converts every batch; on 2 cores that made conv_net's
    epochs 1.6x slower than ``fit`` on arrays (benchmarks/mnist_input.py; on
    JAX the two were within noise). So JAX and PyTorch get arrays, which Keras
    shuffles every epoch itself, unless the images are augmented: the
    preprocessing layers run inside tf.data.
    """
    return augment is None and keras.backend.backend() != "tensorflow"


def fit_inputs(data: ImageData, batch_size: int, flat: bool, *, seed: int, augment=None,
               arrays: bool | None = None) -> dict:
    """What ``model.fit`` trains and validates on, as keyword arguments.

    ``arrays`` chooses NumPy arrays over tf.data (default: :func:`feeds_arrays`).
    """
    if arrays is None:
        arrays = feeds_arrays(augment)
    if arrays:
        shape = (-1, int(np.prod(data.image_shape))) if flat else (-1, *data.image_shape)
        return {"x": data.x_train.reshape(shape), "y": data.y_train, "batch_size": batch_size,
                "shuffle": True, "validation_data": (data.x_val.reshape(shape), data.y_val)}
    train = pipeline(data.x_train, data.y_train, batch_size, flat, shuffle_seed=seed, augment=augment)
    return {"x": train, "validation_data": pipeline(data.x_val, data.y_val, batch_size, flat),
            "shuffle": False}  # the pipeline shuffles


def make_optimizer(args, steps: int):
    """The optimiser, with the learning rate fixed or, with ``--schedule cosine``,
    falling along half a cosine from its start value to 0 over the whole run:
    big steps while far from a minimum, small ones to settle into it."""
    optimizer = OPTIMIZERS[args.optimizer]
    rate = args.learning_rate or optimizer().learning_rate.numpy().item()
    if args.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=steps * args.epochs)
    return optimizer(learning_rate=rate)


def find_resumable(output_dir: Path, model_name: str, explicit: str | None) -> Path:
    """The run folder to continue: the one given, or the newest unfinished run of the model."""
    if explicit and explicit != "latest":
        folder = Path(explicit)
        if not (folder / BACKUP).is_dir():
            raise TutorialError(f"{folder} has no {BACKUP}/ folder: it finished or never started, "
                                "so there is nothing to resume")
        return folder
    candidates = sorted(p for p in (Path(output_dir) / CHAPTER).glob(f"*_{model_name}*")
                        if (p / BACKUP).is_dir())
    if not candidates:
        raise TutorialError(f"no interrupted {model_name} run under {Path(output_dir) / CHAPTER}: "
                            "start one without --resume")
    return candidates[-1]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resume_record(args, data: ImageData) -> dict:
    """What a resumed run must share with the one it continues (``dataset`` as resolved)."""
    record = {name: getattr(args, name, None) for name in RESUME_FLAGS}
    record["dataset"] = data.name
    record["data_dir"] = str(args.data_dir) if getattr(args, "data_dir", None) else None
    return record


def check_resume(run_dir: Path, record: dict) -> None:
    """Refuse, in one line, to continue a run with flags that differ from its start."""
    path = run_dir / BACKUP / STARTED
    try:
        started = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # a run begun before the flags were recorded: nothing to compare
    if not isinstance(started, dict):
        return
    differ = [name for name in RESUME_FLAGS if name in started and started[name] != record.get(name)]
    if differ == ["epochs"] and started.get("schedule") == record.get("schedule") == "constant":
        differ = []  # a constant rate does not depend on the length: an interrupted run may go longer
    if differ:
        was = ", ".join(f"{_flag(n)} {started[n]}" for n in differ)
        now = ", ".join(f"{_flag(n)} {record.get(n)}" for n in differ)
        raise TutorialError(f"--resume: {run_dir} was started with {was}, not {now}: resume it with "
                            "the same flags, or start a new run without --resume")


def _prepare_resume(run_dir: Path) -> float | None:
    """Make the run folder consistent with its backup before training goes on.

    Keras writes the backup's weights, then its metadata (the number of
    finished epochs). Weights without metadata are a write cut short by the
    kill: they are removed and training restarts from the last whole backup.
    Log rows of epochs the backup does not hold are dropped, so each epoch
    appears once. Returns the best validation accuracy so far, for
    ModelCheckpoint to beat.
    """
    backup = run_dir / BACKUP
    meta = backup / "training_metadata.json"
    if not meta.is_file():
        (backup / "latest.weights.h5").unlink(missing_ok=True)
    done = json.loads(meta.read_text())["epoch"] if meta.is_file() else 0
    log = run_dir / LOG
    if not log.is_file() or not log.read_text().strip():
        return None
    history = pd.read_csv(log)
    history = history[history["epoch"] < done]
    history.to_csv(log, index=False)
    return float(history["val_accuracy"].max()) if len(history) else None


def _load_best(path: Path, fallback):
    """The checkpoint of the best validation epoch, or the final model if there is none
    (or it was cut short by a killed process)."""
    try:
        return keras.saving.load_model(path)
    except (OSError, ValueError):
        return fallback


def _summary(model) -> str:
    return report.model_summary(model, line_length=90)  # every column, "Param #" included


def train_and_evaluate(spec: ModelSpec, data: ImageData, args, argv=None) -> runs.RunResult:
    """Train one model on ``data``, evaluate the best epoch on the test set, write the run folder."""
    keras.utils.set_random_seed(args.seed)
    spec.check_image_shape(data.image_shape)  # before any folder is made
    resume_dir = find_resumable(args.output_dir, spec.name, args.resume) if args.resume else None
    started = resume_record(args, data)
    if resume_dir:
        check_resume(resume_dir, started)
    plan = distribute.active()  # devices, processes and precision (chapter 9, --distribute)
    run = runs.Run(CHAPTER, spec.name, args, argv,
                   run_dir=resume_dir or plan.run_dir(args.output_dir, CHAPTER, spec.name))
    with plan.scope():  # TensorFlow's MirroredStrategy puts a copy of each variable on every device
        model = spec.build(data.image_shape, len(data.class_names))
        model.compile(optimizer=make_optimizer(args, steps=math.ceil(len(data.x_train) / args.batch_size)),
                      **plan.compile_args(loss="sparse_categorical_crossentropy", metrics=["accuracy"]))
    if not args.quiet:
        print(f"\n=== {spec.name}: {spec.description}")
        model.summary()
        print(f"run folder: {runs.shown_path(run.dir)}" + (" (resumed)" if resume_dir else ""))

    best_so_far = _prepare_resume(run.dir) if resume_dir else None
    run.path(BACKUP).mkdir(exist_ok=True)
    (run.path(BACKUP) / STARTED).write_text(json.dumps(started, indent=2) + "\n")
    callbacks = [
        EpochTimer(),
        StopOnNaN(),
        keras.callbacks.ModelCheckpoint(run.path("best.keras"), monitor="val_accuracy", mode="max",
                                        save_best_only=True, initial_value_threshold=best_so_far),
        # The log is written before the backup: if the process dies between the
        # two, the resumed run drops that row and repeats the epoch, never the reverse.
        keras.callbacks.CSVLogger(run.path(LOG), append=True),
        # Two generations of backup: a kill while one is being written leaves the other.
        # Kept after the last epoch until run.json is written, so a run killed in between
        # can still be finished with --resume.
        keras.callbacks.BackupAndRestore(run.path(BACKUP), double_checkpoint=True,
                                         delete_checkpoint=False),
    ]
    if args.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(run.path("tensorboard")))

    augment = augmenter(args.augment) if args.augment else None
    choice = getattr(args, "input_pipeline", "auto")
    # Data parallelism pads and splits tf.data batches (utils/distribute.py).
    arrays = choice == "arrays" or (choice == "auto" and feeds_arrays(augment) and plan.strategy == "none")
    inputs = fit_inputs(data, args.batch_size, spec.flat_input, seed=args.seed, augment=augment,
                        arrays=arrays)
    if not args.quiet:
        print(f"input: {'NumPy arrays' if arrays else 'tf.data pipeline'} (--input-pipeline {choice})")
    if plan.strategy != "none":
        inputs["x"] = plan.batches(inputs["x"], args.batch_size)
        inputs["validation_data"] = plan.batches(inputs["validation_data"], args.batch_size)
    start = time.perf_counter()
    model.fit(**inputs, epochs=args.epochs, callbacks=callbacks, verbose=0 if args.quiet else 2)
    fit_seconds = time.perf_counter() - start

    # The test set is used once, on the epoch that did best on validation.
    with plan.local():  # on one device, every test image, whatever trained the model
        best = _load_best(run.path("best.keras"), model)
        x_test, y_test = scored(data.x_test, data.y_test, args.batch_size)
        if len(y_test) < len(data.y_test) and not args.quiet:
            print(f"test set: the first {len(y_test)} of {len(data.y_test)} images "
                  f"(KERAS_MAX_STEPS_PER_EPOCH={keras.config.max_steps_per_epoch()} batches)")
        test = pipeline(x_test, y_test, args.batch_size, spec.flat_input)
        test_loss, test_accuracy = best.evaluate(test, verbose=0)
        predicted = best.predict(test, verbose=0).argmax(axis=1)

    history = pd.read_csv(run.path(LOG))
    history["epoch"] += 1
    title = f"{spec.name} on {data.name}"
    plots.save_standard_plots(history, title, run.dir)
    evaluation.confusion_matrix_png(y_test, predicted, data.class_names, title,
                                    run.path("confusion_matrix.png"))
    evaluation.misclassified_png(x_test, y_test, predicted, data.class_names, title,
                                 run.path("misclassified.png"))
    class_report = evaluation.report_text(y_test, predicted, data.class_names)
    run.path("classification_report.txt").write_text(class_report)
    metrics = {
        "test_accuracy": float(test_accuracy), "test_loss": float(test_loss),
        "best_val_accuracy": float(history["val_accuracy"].max()),
        "best_epoch": int(history.loc[history["val_accuracy"].idxmax(), "epoch"]),
        "epochs": int(len(history)), "median_epoch_seconds": float(history["epoch_seconds"].median()),
        "fit_seconds_this_session": fit_seconds, "params": int(model.count_params()),
        "test_images": int(len(y_test)),
    }
    if not args.quiet:
        print(class_report)
    result = run.finish(model=best, history=history, metrics=metrics, dataset=data.name,
                        dataset_note=data.note, dataset_shapes=data.describe(), augment=args.augment,
                        class_names=data.class_names, image_shape=list(data.image_shape),
                        input_pipeline="arrays" if arrays else "tf.data",
                        **plan.record(args.batch_size))
    write_run_report(result, spec, data, args, _summary(model), class_report)
    shutil.rmtree(run.path(BACKUP), ignore_errors=True)  # the run is complete: nothing to resume
    return result


def write_run_report(result: runs.RunResult, spec: ModelSpec, data: ImageData, args, summary: str,
                     class_report: str) -> Path:
    folder = result.run_dir
    hyper = {"model": spec.name, "dataset": data.name, "dataset note": data.note or "-",
             "epochs": args.epochs, "batch size": args.batch_size, "optimizer": args.optimizer,
             "learning rate": args.learning_rate or "Keras default", "schedule": args.schedule,
             "augment": args.augment,
             "seed": args.seed, "backend": keras.backend.backend()}
    from utils.diagram import plot_model_png

    # Drawn from the saved model, so its layer names match the summary above it.
    drawn = plot_model_png(keras.saving.load_model(folder / "model.keras", compile=False),
                           folder / "model.png")
    return report.write_report(folder / "report.html", f"{spec.name} on {data.name}", [
        ("Test metrics", report.key_values(result.metrics)),
        ("Hyper-parameters", report.key_values(hyper)),
        ("Model", report.preformatted(summary)),
        *([("Model diagram", report.image(drawn))] if drawn else []),
        ("Training curves", report.images(folder / n for n in
                                          ("accuracy.png", "loss.png", "epoch_times.png"))),
        ("Classification report (test set)", report.preformatted(class_report)),
        ("Errors", report.images([folder / "confusion_matrix.png", folder / "misclassified.png"])),
    ])
