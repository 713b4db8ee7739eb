"""Chapter 4: model optimisation on handwritten digits (or clothes).

Trains one or more models from the registry in ``mnist/models.py`` and leaves,
per model, a run folder with curves, a confusion matrix, the misclassified
images, a classification report and a self-contained ``report.html``. With
several models it also writes a comparison report.

    python mnist/mnist.py --list
    python mnist/mnist.py -m conv_net
    python mnist/mnist.py -m mlp_one_layer -m conv_net --dataset fashion_mnist
    python mnist/mnist.py -m all --epochs 10
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `utils` imports from any folder

from mnist import data as image_data  # noqa: E402
from mnist import models, training  # noqa: E402
from utils import cli, distribute, report, runs  # noqa: E402
from utils.errors import TutorialError  # noqa: E402
from utils.lazy import lazy  # noqa: E402  (Keras loads on first use, after the flags are read)

evaluation = lazy("mnist.evaluation")

build_model = models.build_model
load_data = image_data.load_images
train_and_evaluate = training.train_and_evaluate


def parse_args(argv=None):
    parser = cli.make_parser(__doc__.split("\n\n")[0], epochs=60, batch_size=256,
                             epilog="models: " + ", ".join(models.REGISTRY))
    parser.add_argument("-m", "--model", action="append", metavar="NAME",
                        help="model to train; repeat for several, or 'all' (default: conv_net)")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    image_data.add_data_arguments(parser)
    parser.add_argument("--optimizer", choices=sorted(training.OPTIMIZERS), default="adam",
                        help="optimisation algorithm")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=None,
                        help="step size; None keeps the optimiser's Keras default")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                        help="learning rate over the run: constant, or cosine decay to 0")
    parser.add_argument("--augment", nargs="?", const="original", default=None,
                        choices=sorted(training.AUGMENTATIONS), metavar="KIND",
                        help="alter the training images at random every epoch: 'original' (the "
                             "original tutorial's augmentation: rotations, shifts, shear and zoom; "
                             "what a bare --augment means), 'flip' (mirror left-right: clothes, not "
                             "digits) or 'flip_shift' (mirror and shift) (default: none)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_DIR",
                        help="continue an interrupted run from its last finished epoch: the given "
                             "run folder, or the newest unfinished one of the model")
    parser.add_argument("--input-pipeline", choices=training.INPUT_PIPELINES, default="auto",
                        help="how fit reads the images: 'tf.data' (a shuffled, prefetched pipeline), "
                             "'arrays' (NumPy arrays; Keras shuffles them), or 'auto': arrays on JAX "
                             "and PyTorch, where they are faster, tf.data on TensorFlow and whenever "
                             "--augment or --distribute needs it")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write TensorBoard logs into the run folder")
    distribute.add_arguments(parser)
    return parser.parse_args(argv)


def model_names(requested: list[str] | None) -> list[str]:
    names = requested or ["conv_net"]
    if "all" in names:
        return list(models.REGISTRY)
    for name in names:
        models.get_spec(name)  # fails here, before any data is loaded
    return list(dict.fromkeys(names))


def list_models() -> None:
    print(f"{'model':<24} {'input':<10} {'params':>9}  description")
    for spec in models.REGISTRY.values():
        shape = "784" if spec.flat_input else "28x28x1"
        print(f"{spec.name:<24} {shape:<10} {spec.build().count_params():>9,}  {spec.description}")


def write_comparison(results: dict, args, argv) -> Path:
    """One report comparing every model trained by this command."""
    run = runs.Run(training.CHAPTER, "comparison", args, argv)
    rows = [{"model": name, "params": r.metrics["params"], "epochs": r.metrics["epochs"],
             "best val accuracy": r.metrics["best_val_accuracy"],
             "test accuracy": r.metrics["test_accuracy"],
             "s/epoch": r.metrics["median_epoch_seconds"], "run": r.run_dir.name}
            for name, r in results.items()]
    histories = {name: r.history for name, r in results.items()}
    curves = evaluation.overlaid_curves_png(histories, "val_accuracy", run.path("val_accuracy.png"))
    report.write_report(run.path("report.html"), "Model comparison", [
        ("Results", report.table(rows)),
        ("Validation accuracy", report.images([curves])),
    ])
    run.finish(metrics={r["model"]: r["test accuracy"] for r in rows}, models=rows)
    return run.dir


@cli.friendly_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    if args.list:
        list_models()
        return 0
    names = model_names(args.model)
    if args.resume and len(names) > 1:
        raise TutorialError("--resume continues one model's run: name exactly one with -m")
    if args.input_pipeline == "arrays" and (args.augment or args.distribute != "none"):
        raise TutorialError("--augment and --distribute need the tf.data input: leave out "
                            "--input-pipeline arrays")
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise TutorialError("--tensorboard needs the tensorboard package (on every backend): "
                            "`pip install tensorboard`, or leave the flag out")
    image_data.check_data_dir(args.data_dir)  # a wrong folder answers before Keras starts
    plan = distribute.setup(args)  # devices, processes, precision: before any data or model
    data = load_data(args.dataset, args.data_dir, seed=args.seed, limit=args.limit)
    print(f"*** {data.describe()}" + (f"\n*** {data.note}" if data.note else ""), flush=True)
    for name in names:  # every model can read these images, or one line before any training
        models.get_spec(name).check_image_shape(data.image_shape)
    if plan.strategy != "none":
        print(plan.describe(args.batch_size), flush=True)
    results = {}
    for name in names:
        results[name] = train_and_evaluate(models.get_spec(name), data, args, argv)
    print(f"\n{'model':<24} {'test accuracy':>13} {'s/epoch':>8}  run folder")
    for name, result in results.items():
        m = result.metrics
        print(f"{name:<24} {m['test_accuracy']:>13.4f} {m['median_epoch_seconds']:>8.2f}  "
              f"{runs.shown_path(result.run_dir)}")
    if len(results) > 1:
        print(f"comparison: {runs.shown_path(write_comparison(results, args, argv))}/report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
