"""MNIST chapter: the naive Keras 3 port against the chapter's training, one process.

For each model, both variants train on the same images for the same epochs
with batch size 256 and adam:

- naive: the original tutorial's way, NumPy arrays, one-hot labels, ``model.fit`` with the
  test set as validation data;
- chapter: ``mnist/training.py``'s ``fit_inputs`` (a shuffled, prefetched
  tf.data pipeline on TensorFlow, NumPy arrays on JAX and PyTorch), integer
  labels, a validation split apart from the test set.

Reported: median seconds per epoch, samples per second, and the training time
until test accuracy first reaches the target (the test set is scored after
every epoch here only to time that; the chapter itself scores it once).

    python benchmarks/mnist.py [-m conv_net -m best_conv_net] [--epochs 8] [--target 0.90]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist import data as image_data  # noqa: E402
from mnist import models, training  # noqa: E402
from utils import cli, runs  # noqa: E402
from utils.lazy import deferred, keras, lazy  # noqa: E402  (Keras loads on first use, after the flags)

EpochTimer = lazy("utils.callbacks", "EpochTimer")


@deferred
def TestAccuracy():  # a Keras callback, defined once Keras is loaded
    class TestAccuracy(keras.callbacks.Callback):
        """Scores the test set after each epoch, outside the epoch's timed span;
        with ``stop_at``, ends training once the test accuracy reaches it."""

        def __init__(self, test_data, stop_at: float | None = None):
            super().__init__()
            self.test_data, self.accuracy, self.stop_at = test_data, [], stop_at

        def on_epoch_end(self, epoch, logs=None):
            if isinstance(self.test_data, tuple):  # NumPy arrays (images, labels)
                scores = self.model.evaluate(*self.test_data, batch_size=256, verbose=0)
            else:
                scores = self.model.evaluate(self.test_data, verbose=0)
            self.accuracy.append(float(scores[1]))
            if self.stop_at is not None and self.accuracy[-1] >= self.stop_at:
                self.model.stop_training = True

    return TestAccuracy


@deferred
def StopAt():  # a Keras callback, defined once Keras is loaded
    class StopAt(keras.callbacks.Callback):
        """Ends training once the logged ``metric`` reaches ``target``."""

        def __init__(self, metric: str, target: float):
            super().__init__()
            self.metric, self.target = metric, target

        def on_epoch_end(self, epoch, logs=None):
            if (logs or {}).get(self.metric, -float("inf")) >= self.target:
                self.model.stop_training = True

    return StopAt


def first_reach(target: float, seconds: list[float], accuracy: list[float]) -> tuple[float, int] | None:
    """(training seconds until the end of the first epoch at ``target``, that epoch), or None."""
    elapsed = 0.0
    for epoch, (s, a) in enumerate(zip(seconds, accuracy), start=1):
        elapsed += s
        if a >= target:
            return elapsed, epoch
    return None


def time_to(target: float, seconds: list[float], accuracy: list[float]) -> str:
    reached = first_reach(target, seconds, accuracy)
    if reached:
        return f"{reached[0]:.0f} s (epoch {reached[1]})"
    return f"not reached in {len(seconds)} epochs"


def naive(spec, data, epochs, batch_size, seed, stop_at: float | None = None, callbacks=()):
    """Returns (seconds of each epoch, test accuracy after each); ``stop_at``
    ends training at that test accuracy, ``callbacks`` run inside the timed
    span (both for benchmarks/run.py)."""
    keras.utils.set_random_seed(seed)
    model = spec.build(data.image_shape, 10)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    shape = (-1, 784) if spec.flat_input else (-1, 28, 28, 1)
    x, x_test = data.x_train.reshape(shape), data.x_test.reshape(shape)
    y, y_test = keras.utils.to_categorical(data.y_train, 10), keras.utils.to_categorical(data.y_test, 10)
    timer = EpochTimer()
    stop = [StopAt("val_accuracy", stop_at)] if stop_at is not None else []
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, validation_data=(x_test, y_test),
                        callbacks=[timer, *callbacks, *stop], verbose=0)
    return history.history["epoch_seconds"], history.history["val_accuracy"]


def chapter(spec, data, epochs, batch_size, seed, stop_at: float | None = None, callbacks=()):
    """As :func:`naive`, trained the chapter's way."""
    keras.utils.set_random_seed(seed)
    model = spec.build(data.image_shape, 10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    arrays = training.feeds_arrays()
    inputs = training.fit_inputs(data, batch_size, spec.flat_input, seed=seed, arrays=arrays)
    # The test set is scored the way the training data is fed: no tf.data
    # threads beside a backend that trains on arrays.
    if arrays:
        test = (data.x_test.reshape((-1, *inputs["x"].shape[1:])), data.y_test)
    else:
        test = training.pipeline(data.x_test, data.y_test, batch_size, spec.flat_input)
    # EpochTimer's span ends before TestAccuracy scores the test set.
    scorer = TestAccuracy(test, stop_at=stop_at)
    history = model.fit(**inputs, epochs=epochs, callbacks=[EpochTimer(), *callbacks, scorer], verbose=0)
    return history.history["epoch_seconds"], scorer.accuracy


def main(argv=None) -> int:
    parser = cli.make_parser(__doc__.splitlines()[0], epochs=8, batch_size=256)
    parser.add_argument("-m", "--model", action="append", metavar="NAME",
                        help="models to time (default: conv_net and best_conv_net)")
    parser.add_argument("--dataset", choices=image_data.DATASETS, default="fashion_mnist",
                        help="dataset to train on")
    parser.add_argument("--target", type=float, default=0.90, help="test accuracy to time")
    args = parser.parse_args(argv)
    names = args.model or ["conv_net", "best_conv_net"]
    specs = [models.get_spec(n) for n in names]
    run = runs.Run("benchmarks", "mnist", args, argv)
    data = image_data.load_images(args.dataset, seed=args.seed)
    print(data.describe(), flush=True)
    rows = []
    for spec in specs:
        for label, variant in (("naive port", naive), ("chapter", chapter)):
            seconds, accuracy = variant(spec, data, args.epochs, args.batch_size, args.seed)
            median = statistics.median(seconds)
            rows.append({"model": spec.name, "variant": label, "s/epoch": median,
                         "samples/s": len(data.x_train) / median,
                         "time to target": time_to(args.target, seconds, accuracy),
                         "final test accuracy": accuracy[-1]})
            print(rows[-1], flush=True)
    device = runs.device_info()
    lines = [f"{data.name}, {len(data.x_train):,} training images, batch {args.batch_size}, "
             f"{args.epochs} epochs, {keras.backend.backend()} backend, "
             f"{device['cpu_count']} x {device['cpu']}",
             "", f"| model | variant | median s/epoch | samples/s | time to {args.target:.2f} test accuracy "
             "| final test accuracy |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['variant']} | {r['s/epoch']:.2f} | {r['samples/s']:,.0f} | "
              f"{r['time to target']} | {r['final test accuracy']:.4f} |" for r in rows]
    report = "\n".join(lines)
    print("\n" + report)
    run.path("results.md").write_text(report + "\n")
    run.finish(metrics={f"{r['model']}/{r['variant']}": r["s/epoch"] for r in rows}, rows=rows)
    print(f"\nwritten to {run.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
