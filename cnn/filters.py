"""What a trained convolutional network looks for: its first-layer filters and feature maps.

Give it a run folder of the MNIST chapter (or any ``model.keras`` that takes
images, 28x28x1 or your own size; a run trained on ``--data-dir`` shows one of
its own test images). It draws

* ``filters.png``: every 3x3 (or 5x5) kernel of the first convolution, blue for
  negative weights, red for positive: most become small edge and stroke detectors;
* ``feature_maps.png``: one test image and what each convolution makes of it,
  one small picture per filter: bright where that filter found its pattern.

    python mnist/mnist.py -m conv_net --dataset digits --epochs 10
    python cnn/filters.py outputs/mnist/<run folder>
    python cnn/filters.py outputs/mnist/<run folder> --index 7 --output-dir /tmp/pictures

The pictures go into a new run folder, ``<output-dir>/cnn/<time>_filters_<model>/``,
with a run.json naming the model file and the image.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `utils` imports from any folder

from mnist import data as image_data  # noqa: E402
from utils import cli, model_files, runs  # noqa: E402
from utils.errors import TutorialError  # noqa: E402
from utils.lazy import keras, lazy  # noqa: E402  (Keras loads on first use, after the flags are read)
from utils.plots import plt  # noqa: E402

np = lazy("numpy")

CHAPTER = "cnn"
MAX_MAPS = 32  # feature maps drawn per layer; deeper layers have more than fit on a page


def load_run(path: Path, unsafe: bool = False):
    """(model, dataset name, data folder, model file) from a run folder or a .keras file: the
    dataset, or the ``--data-dir`` of a run on your own images, from run.json when present."""
    model, model_file = model_files.load_model(path, safe_mode=not unsafe)
    model_files.require_one_input_output(model, model_file, "filters.py")
    record = model_file.parent / "run.json"
    dataset, data_dir = None, None
    if record.is_file():
        try:
            facts = json.loads(record.read_text())
            dataset, given = facts.get("dataset"), facts.get("args", {}).get("data_dir")
            if isinstance(given, str) and given:
                data_dir = Path(facts.get("cwd") or ".") / given  # as the run saw it; absolute stays
        except (OSError, ValueError, AttributeError, TypeError):
            pass  # a damaged run.json only loses the hint; --dataset and --data-dir still work
    return model, (dataset if dataset in image_data.DATASETS else None), data_dir, model_file


def conv_layers(model) -> list:
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise TutorialError(f"{model.name} has no convolutional layer (an MLP?): nothing to draw; "
                            "train a conv_net, le_net or similar first")
    return convs


def plot_filters(layer, path: Path, title: str) -> Path:
    """Each kernel of a convolution over a one-channel image, on a shared colour scale."""
    kernels = keras.ops.convert_to_numpy(layer.kernel)  # (kh, kw, channels in, filters)
    if kernels.shape[2] != 1:
        kernels = kernels.mean(axis=2, keepdims=True)  # several input channels: show their mean
    n = kernels.shape[-1]
    cols = min(8, n)
    rows = math.ceil(n / cols)
    limit = float(np.abs(kernels).max()) or 1.0
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows + 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(kernels[:, :, 0, i], cmap="bwr", vmin=-limit, vmax=limit)
            ax.set_title(str(i), fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def feature_maps(model, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The output of every convolution for one image: (layer name, array (h, w, filters))."""
    convs = conv_layers(model)
    probe = keras.Model(model.inputs, [layer.output for layer in convs])
    outputs = probe.predict(image[np.newaxis], verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    return [(layer.name, out[0]) for layer, out in zip(convs, outputs)]


def plot_feature_maps(image: np.ndarray, maps, path: Path, title: str) -> Path:
    """The input image in the first row, then a block of maps per convolution, labelled on the left."""
    width = 8
    rows_per_layer = [math.ceil(min(m.shape[-1], MAX_MAPS) / width) for _, m in maps]
    total_rows = 1 + sum(rows_per_layer)
    fig, axes = plt.subplots(total_rows, width + 1, figsize=(1.1 * (width + 1), 1.15 * total_rows + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if image.shape[-1] == 3:
        axes[0, 0].imshow(np.clip(image, 0, 1))
    else:
        axes[0, 0].imshow(image[..., 0], cmap="gray_r")
    axes[0, 0].set_title(f"input {'x'.join(map(str, image.shape))}", fontsize=7)
    row = 1
    for (name, m), n_rows in zip(maps, rows_per_layer):
        h, w, filters = m.shape
        shown = min(filters, MAX_MAPS)
        axes[row, 0].text(0.5, 0.5, f"{name}\n{h}x{w}x{filters}" + (f"\n(first {shown})" if shown < filters
                                                                    else ""),
                          ha="center", va="center", fontsize=7, transform=axes[row, 0].transAxes)
        for i in range(shown):
            ax = axes[row + i // width, 1 + i % width]
            ax.imshow(m[:, :, i], cmap="viridis")
            ax.set_title(str(i), fontsize=6)
        row += n_rows
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def test_image(dataset: str | None, index: int, seed: int = 0, data_dir: Path | None = None):
    """One test image (height, width, channels), its class name and the data's name, from the
    run's own dataset (or its own images in ``data_dir``)."""
    if data_dir is not None:
        image_data.check_data_dir(data_dir)
    data = image_data.load_images(dataset or "auto", data_dir=data_dir, seed=seed)
    if not 0 <= index < len(data.x_test):
        raise TutorialError(f"--index {index}: the {data.name} test set has images 0-{len(data.x_test) - 1}")
    return data.x_test[index], data.class_names[data.y_test[index]], data.name


def parse_args(argv=None):
    parser = cli.make_parser(__doc__.split("\n\n")[0], epochs=None, batch_size=None)
    parser.add_argument("run_dir", type=Path, metavar="RUN",
                        help="a run folder with model.keras (and run.json), or a .keras file")
    parser.add_argument("--index", type=int, default=0, help="which test image to follow through the net")
    parser.add_argument("--dataset", choices=image_data.DATASETS, default=None,
                        help="test images to use (default: the run's own dataset from run.json)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="a folder (or .npz) of your own images to take the test image from "
                             "(default: the run's own --data-dir from run.json, if it had one)")
    model_files.add_unsafe_argument(parser)
    return parser.parse_args(argv)


@cli.friendly_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    model, dataset, data_dir, model_file = load_run(args.run_dir, args.unsafe)
    convs = conv_layers(model)
    wanted = tuple(model.inputs[0].shape[1:])
    if len(wanted) != 3 or wanted[-1] not in (1, 3):
        raise TutorialError(f"{model.name} takes {wanted} inputs; filters.py shows models of "
                            "images (height, width, 1 or 3 channels)")
    if args.data_dir is not None or args.dataset is not None:  # a flag given replaces run.json's
        data_dir, dataset = args.data_dir, args.dataset
    image, label, dataset = test_image(dataset, args.index, args.seed, data_dir)
    if any(size is not None and size != have for size, have in zip(wanted, image.shape)):
        source = f"--data-dir {data_dir}" if data_dir else f"the {dataset} dataset"
        raise TutorialError(f"{model.name} takes {wanted} images but {source} has "
                            f"{tuple(image.shape)}; give the images it was trained on with --data-dir")
    # Only now, with the model and the image at hand: bad input leaves no folder behind.
    run = runs.Run(CHAPTER, f"filters_{model.name}", args, argv)
    first = convs[0]
    kh, kw = first.kernel_size
    plot_filters(first, run.path("filters.png"),
                 f"{model.name}: the {first.filters} {kh}x{kw} filters of {first.name}")
    maps = feature_maps(model, image)
    plot_feature_maps(image, maps, run.path("feature_maps.png"),
                      f"{model.name}: feature maps of {dataset} test image {args.index} ({label})")
    strongest = {}
    for name, m in maps:
        strongest[name] = [int(i) for i in np.argsort(-m.mean(axis=(0, 1)))[:3]]
        print(f"{name:<12} {'x'.join(map(str, m.shape))}   most active filters: "
              f"{', '.join(map(str, strongest[name]))}")
    run.finish(dataset=dataset, data_dir=str(data_dir) if data_dir else None, source_model=str(model_file),
               index=args.index, label=label,
               most_active_filters=strongest)
    print(f"wrote {runs.shown_path(run.path('filters.png'))} and "
          f"{runs.shown_path(run.path('feature_maps.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
