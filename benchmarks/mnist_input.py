"""MNIST chapter: how ``fit`` reads the images, timed on one backend.

Three ways to feed the same model the same images, interleaved (one epoch
count of each, then again) so that other load slows all three alike:

- naive: the naive port's NumPy arrays with one-hot labels, the test images as
  validation data (``benchmarks/mnist.py``'s ``naive``);
- tf.data: the chapter's tf.data pipeline (``--input-pipeline tf.data``);
- arrays: NumPy arrays with integer labels (``--input-pipeline arrays``).

Reported: the median seconds per epoch of each fit (epochs after the first,
which compiles), per repeat. This is the measurement behind
``--input-pipeline auto`` choosing arrays on JAX and PyTorch.

    python benchmarks/mnist_input.py --backend jax -m conv_net --images 6000
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import mnist as bench  # noqa: E402
from mnist import data as image_data  # noqa: E402
from mnist import models, training  # noqa: E402
from utils import cli, runs  # noqa: E402
from utils.lazy import keras, lazy  # noqa: E402  (Keras loads on first use, after the flags are read)

EpochTimer = lazy("utils.callbacks", "EpochTimer")


def fed(spec, data, epochs: int, batch_size: int, seed: int, arrays: bool) -> list[float]:
    """Seconds of each epoch when the chapter's fit reads tf.data or arrays."""
    keras.utils.set_random_seed(seed)
    model = spec.build(data.image_shape, 10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    inputs = training.fit_inputs(data, batch_size, spec.flat_input, seed=seed, arrays=arrays)
    history = model.fit(**inputs, epochs=epochs, callbacks=[EpochTimer()], verbose=0)
    return history.history["epoch_seconds"]


def first(data, images: int):
    """The first ``images`` training images and the same share of the others."""
    share = images / len(data.x_train)

    def cut(x):
        return x[:max(1, round(len(x) * share))]

    return dataclasses.replace(data, x_train=cut(data.x_train), y_train=cut(data.y_train),
                               x_val=cut(data.x_val), y_val=cut(data.y_val),
                               x_test=cut(data.x_test), y_test=cut(data.y_test))


def main(argv=None) -> int:
    parser = cli.make_parser(__doc__.splitlines()[0], epochs=4, batch_size=256)
    parser.add_argument("-m", "--model", default="conv_net", choices=list(models.REGISTRY),
                        metavar="NAME", help="model to time")
    parser.add_argument("--images", type=cli.positive_int, default=6000,
                        help="training images per epoch (validation and test images cut to the same share)")
    parser.add_argument("--repeats", type=cli.positive_int, default=2, help="fits of each variant")
    parser.add_argument("--dataset", choices=image_data.DATASETS, default="fashion_mnist",
                        help="dataset to train on")
    args = parser.parse_args(argv)
    run = runs.Run("benchmarks", f"mnist_input_{args.model}", args, argv)
    spec = models.get_spec(args.model)
    data = first(image_data.load_images(args.dataset, seed=args.seed), args.images)
    variants = {
        "naive port (arrays, one-hot)": lambda: bench.naive(spec, data, args.epochs, args.batch_size,
                                                            args.seed)[0],
        "tf.data pipeline": lambda: fed(spec, data, args.epochs, args.batch_size, args.seed, False),
        "NumPy arrays, integer labels": lambda: fed(spec, data, args.epochs, args.batch_size,
                                                    args.seed, True),
    }
    medians: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, train in variants.items():
            seconds = train()
            medians[name].append(statistics.median(seconds[1:] if len(seconds) > 1 else seconds))
            print(f"repeat {repeat + 1}/{args.repeats} {name}: {medians[name][-1]:.2f} s/epoch", flush=True)
    device = runs.device_info()
    lines = [f"{args.model} on {len(data.x_train):,} {data.name} images, batch {args.batch_size}, "
             f"{args.epochs} epochs per fit, {keras.backend.backend()} backend, "
             f"{device['cpu_count']} x {device['cpu']}", "",
             "| input | median s/epoch per repeat | ratio to the naive port |", "|---|---|---|"]
    naive = statistics.median(medians["naive port (arrays, one-hot)"])
    for name, values in medians.items():
        lines.append(f"| {name} | {', '.join(f'{v:.2f}' for v in values)} | "
                     f"{statistics.median(values) / naive:.2f} |")
    report = "\n".join(lines)
    print("\n" + report)
    run.path("results.md").write_text(report + "\n")
    run.finish(metrics={name: statistics.median(v) for name, v in medians.items()}, medians=medians)
    print(f"\nwritten to {run.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
