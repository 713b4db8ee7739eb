"""Name what is in a photo with a network trained on ImageNet.

Each model from ``keras.applications`` gets the photos at its own input size
and with its own ``preprocess_input``; the five most likely of the 1,000
ImageNet classes are printed per photo and drawn next to it in
``predictions_<model>.png`` in the run folder.

    python cnn/classify.py ../shared/data/cat.jpg ../shared/data/dog.jpg
    python cnn/classify.py photo.png -m resnet50 -m inception_v3
    python cnn/classify.py photo.png -m vgg16 --weights my_vgg16.weights.h5
    python cnn/classify.py --list          # the architectures, their sizes and inputs

The first use of a model downloads its weights (14 MB for mobilenet_v2, 528 MB
for vgg16) into ~/.keras/models; later runs read them from there.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `utils` imports from any folder

from cnn import applications  # noqa: E402
from utils import cli, model_files, runs  # noqa: E402
from utils.errors import ImageReadError, TutorialError  # noqa: E402
from utils.lazy import keras, lazy  # noqa: E402  (Keras loads on first use, after the flags are read)
from utils.plots import STYLE, plt  # noqa: E402

np, pd = lazy("numpy"), lazy("pandas")
load_image = lazy("cnn.images", "load_image")

CHAPTER = "cnn"
DEFAULT_MODEL = "mobilenet_v2"


def read_images(paths: list[Path], size: int):
    """Load every readable image; collect the others' errors instead of stopping.

    Returns (batch of shape (n, size, size, 3), the paths read, error messages).
    """
    arrays, good, errors = [], [], []
    for path in paths:
        try:
            array, _ = load_image(path, size)
        except ImageReadError as err:
            errors.append(str(err))
            continue
        arrays.append(array)
        good.append(path)
    batch = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), "float32")
    return batch, good, errors


def top_k(probabilities: np.ndarray, k: int, names: list[str] | None) -> list[list[tuple[str, float]]]:
    """Per image, the k (class name, probability) pairs with the highest probability."""
    best = np.argsort(-probabilities, axis=1)[:, :k]
    label = (lambda i: names[i]) if names else (lambda i: f"class {i}")
    return [[(label(i), float(row[i])) for i in idx] for row, idx in zip(probabilities, best)]


def build_classifier(name: str, weights: str):
    arch = applications.ARCHITECTURES[name]
    resolved = applications.resolve_weights(arch, weights)
    return arch, applications.build(arch, resolved, include_top=True)


def classify(name: str, paths: list[Path], weights: str, k: int = 5, names=None) -> dict:
    """Run one architecture over the images; returns the table rows and what the figure needs."""
    arch = applications.ARCHITECTURES[name]
    batch, good, errors = read_images(paths, arch.size)
    if not good:
        raise ImageReadError("no image could be read: " + "; ".join(errors))
    arch, model = build_classifier(name, weights)
    start = time.perf_counter()
    # Each architecture expects its own scaling: VGG and ResNet subtract the ImageNet
    # mean colour (in BGR order), MobileNet and Inception map pixels to [-1, 1].
    probabilities = model.predict(arch.preprocess(batch.copy()), verbose=0)  # (n, 1000)
    seconds = time.perf_counter() - start
    return {"model": name, "params": model.count_params(), "size": arch.size, "paths": good,
            "photos": batch.astype("uint8"),
            "top": top_k(probabilities, k, names), "errors": errors, "predict_seconds": seconds}


def format_table(result: dict) -> str:
    lines = [f"{'image':<24} {'rank':>4}  {'class':<28} {'probability':>11}"]
    for path, top in zip(result["paths"], result["top"]):
        for rank, (label, p) in enumerate(top, 1):
            shown = Path(path).name if rank == 1 else ""
            lines.append(f"{shown:<24.24} {rank:>4}  {label:<28.28} {p:>11.4f}")
    return "\n".join(lines)


def plot_predictions(result: dict, path: Path, title: str) -> Path:
    """One row per image: the square the network saw, and its top classes as bars."""
    n = len(result["paths"])
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(n, 2, figsize=(9, 2.6 * n), squeeze=False,
                                 gridspec_kw={"width_ratios": [1, 1.6]})
        for (ax_img, ax_bar), image_path, photo, top in zip(axes, result["paths"], result["photos"],
                                                            result["top"]):
            ax_img.imshow(photo)
            ax_img.set_title(Path(image_path).name, fontsize=10)
            ax_img.axis("off")
            labels, probs = zip(*reversed(top))  # most likely on top
            ax_bar.barh(range(len(probs)), probs, color="#348ABD")
            ax_bar.set_yticks(range(len(probs)), [label[:24] for label in labels], fontsize=9)
            ax_bar.set_xlim(0, 1)
            ax_bar.set_xlabel("probability")
            for y, p in enumerate(probs):
                ax_bar.text(min(p + 0.02, 0.85), y, f"{p:.3f}", va="center", fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
    return path


def list_architectures() -> str:
    """Parameter count, input size and weights file of each architecture (built with random
    weights, so this needs no download; the largest take a few seconds each)."""
    lines = [f"{'model':<14} {'year':>4} {'parameters':>12} {'input':>9}  weights file (~/.keras/models)"]
    for arch in applications.ARCHITECTURES.values():
        params = arch.constructor(weights=None).count_params()
        keras.backend.clear_session()
        cached = " (cached)" if applications.cached(arch.weights_file()) else ""
        lines.append(f"{arch.name:<14} {arch.year:>4} {params:>12,} {arch.size:>4}x{arch.size:<4}  "
                     f"{arch.weights_file()}{cached}")
    return "\n".join(lines)


def chosen_models(requested: list[str] | None, weights: str) -> list[str]:
    names = requested or [DEFAULT_MODEL]
    if "all" in names:
        names = list(applications.ARCHITECTURES)
    for name in names:
        if name not in applications.ARCHITECTURES:
            raise TutorialError(f"unknown model {name!r}: choose from "
                                f"{', '.join(applications.ARCHITECTURES)} (or 'all')")
    names = list(dict.fromkeys(names))
    if weights not in ("imagenet", "none") and len(names) > 1:
        raise TutorialError("a weights file fits one architecture: give a single -m with --weights PATH")
    return names


def _classify_all(names, paths, args, class_names, run):
    results, rows = [], []
    for name in names:
        result = classify(name, paths, args.weights, args.top, class_names)
        weights_note = {"imagenet": "ImageNet weights", "none": "random weights (--weights none)"}.get(
            args.weights, f"weights from {args.weights}")
        title = f"{name}: {weights_note}, {result['size']}x{result['size']} input"
        print(f"\n=== {title}, {result['params']:,} parameters, predict {result['predict_seconds']:.2f} s")
        print(format_table(result), flush=True)
        plot_predictions(result, run.path(f"predictions_{name}.png"), title)
        results.append(result)
        rows += [{"model": name, "image": str(path), "rank": rank, "class": label, "probability": p}
                 for path, top in zip(result["paths"], result["top"])
                 for rank, (label, p) in enumerate(top, 1)]
    return results, rows


def run_classify(args, argv=None) -> runs.RunResult:
    names = chosen_models(args.model, args.weights)
    paths = [Path(p) for p in args.images]
    keras.utils.set_random_seed(args.seed)  # only matters for --weights none
    # Fail on a missing weights file before any run folder or model exists.
    for name in names:
        applications.resolve_weights(applications.ARCHITECTURES[name], args.weights)
    if args.weights not in ("imagenet", "none"):
        model_files.check_weights_file(args.weights)  # empty, truncated or not a weights file
    # Only ImageNet weights make the class names worth a download; random weights or a
    # file of your own use a cached copy if there is one, else class numbers.
    class_names = applications.class_names(download=args.weights == "imagenet")
    run = runs.Run(CHAPTER, "classify_" + "-".join(names), args, argv)
    try:
        results, rows = _classify_all(names, paths, args, class_names, run)
    except TutorialError:
        if not any(run.dir.iterdir()):
            run.dir.rmdir()  # e.g. a weights file that does not fit: leave no empty run folder
        raise
    if class_names is None:
        print(f"\n(ImageNet class names not found: showing class numbers 0-999; with "
              f"{applications.CLASS_INDEX_FILE} in {applications.cache_dirs()[0]} they are names)")
    table = pd.DataFrame(rows)
    table.to_csv(run.path("predictions.csv"), index=False)
    errors = results[0]["errors"]
    return run.finish(metrics={f"{r['model']}_predict_seconds": r["predict_seconds"] for r in results},
                      dataset=f"{len(results[0]['paths'])} image(s)", weights=args.weights,
                      skipped=errors, predictions=rows)


def parse_args(argv=None):
    parser = cli.make_parser(__doc__.split("\n\n")[0], epochs=None, batch_size=None,
                             epilog="models: " + ", ".join(applications.ARCHITECTURES))
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE",
                        help="photos to classify (any size; colour, greyscale or with transparency)")
    parser.add_argument("-m", "--model", action="append", metavar="NAME",
                        help=f"architecture; repeat for several, or 'all' (default: {DEFAULT_MODEL})")
    parser.add_argument("--weights", default="imagenet",
                        help="'imagenet' (downloaded once, then cached by Keras), 'none' (random: "
                             "checks shapes, predicts nonsense), or a weights file's path")
    parser.add_argument("--top", type=cli.positive_int, default=5, help="classes shown per image")
    parser.add_argument("--list", action="store_true",
                        help="list the architectures with parameter counts and input sizes, and exit")
    args = parser.parse_args(argv)
    if args.weights.lower() in ("imagenet", "none"):
        args.weights = args.weights.lower()
    if not args.images and not args.list:
        parser.error("give at least one IMAGE (or --list)")
    return args


@cli.friendly_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    if args.list:
        print(list_architectures())
        return 0
    result = run_classify(args, argv)
    print(f"\nrun folder: {runs.shown_path(result.run_dir)}")
    for message in result.extra["skipped"]:
        print(f"error: skipped {message}", file=sys.stderr)
    return 2 if result.extra["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
