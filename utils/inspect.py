"""Look inside a saved model: its layers, its weights, and what one input does to it.

    python -m utils.inspect outputs/mnist/<run>/                 # a run folder
    python -m utils.inspect model.keras --layer conv2d --layer dense
    python -m utils.inspect outputs/mnist/<run>/ --activations digit.png

Three tables are printed:

* **layers**: class, input and output shape, activation, parameters, and
  whether the layer is trainable (a frozen layer is not);
* **weights**: every kernel, bias, gamma, beta and moving statistic with its
  shape and min / mean / max / standard deviation. A kernel whose values are
  all near 0 or a std that exploded is the first thing to look for when a
  model stops learning;
* **activations** (with ``--activations IMAGE``): what each layer outputs for
  that one image. A relu layer whose outputs are almost all exactly 0 has
  "dead" units that no longer learn.

Run it as a module (``python -m utils.inspect``), never as
``python utils/inspect.py``: as a script its name would hide Python's own
``inspect`` module.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from utils import cli, model_files, runs
from utils.errors import ShapeMismatchError, TutorialError
from utils.lazy import lazy

np = lazy("numpy")  # imported on first use: --help stays fast

# Finding and loading the model (file or run folder) is shared with the other
# tools that read saved models: utils/model_files.py.
load_model = model_files.load_model


# --- the three tables ------------------------------------------------------------------

def _shape(tensors) -> tuple | list[tuple]:
    if isinstance(tensors, list | tuple) and tensors and not isinstance(tensors[0], int | type(None)):
        shapes = [tuple(t.shape) for t in tensors]
        return shapes[0] if len(shapes) == 1 else shapes
    return tuple(tensors.shape)


def activation_name(layer) -> str:
    """``relu``, ``softmax``... for layers that apply one, else ``""``."""
    if type(layer).__name__ == "ReLU":
        return "relu"
    function = getattr(layer, "activation", None)
    name = getattr(function, "__name__", "") if function is not None else ""
    return "" if name == "linear" else name


def describe_layers(model) -> list[dict]:
    """One row per layer: class, input and output shape (batch first, as None), parameters."""
    rows = []
    for layer in model.layers:
        try:
            shapes = _shape(layer.input), _shape(layer.output)
        except (AttributeError, ValueError):  # a layer never called, or called more than once
            shapes = "?", "?"
        rows.append({"layer": layer.name, "class": type(layer).__name__,
                     "input_shape": shapes[0], "output_shape": shapes[1],
                     "activation": activation_name(layer), "params": int(layer.count_params()),
                     "trainable": bool(layer.trainable)})
    return rows


def _kinds(model) -> dict[int, str]:
    """Each weight's kind, by ``id``: *trainable* (the optimiser changes it),
    *frozen* (it would learn, but its layer was frozen with
    ``layer.trainable = False``) or *statistic* (the layer updates it itself,
    never the optimiser: batch normalisation's moving mean and variance)."""
    trainable = {id(v) for v in model.trainable_weights}
    # Freezing a layer clears every variable's ``trainable`` flag, so the only
    # record of which ones were made to learn is the list each layer keeps.
    learnable = {id(v) for layer in model._flatten_layers(include_self=True, recursive=True)
                 for v in getattr(layer, "_trainable_variables", ())}
    return {id(v): "trainable" if id(v) in trainable else "frozen" if id(v) in learnable else "statistic"
            for v in model.weights}


def _weight_name(model, variable) -> str:
    # A model built in this process prefixes its own name ("conv_net/conv2d/kernel"),
    # a loaded one does not: show both as "conv2d/kernel".
    return variable.path.removeprefix(model.name + "/")


def weight_stats(model) -> list[dict]:
    """One row per weight tensor: shape, number of values, kind, min / mean / max / std."""
    from keras import ops

    kinds = _kinds(model)
    rows = []
    for variable in model.weights:
        values = np.asarray(ops.convert_to_numpy(variable), dtype="float64")
        empty = values.size == 0
        rows.append({"weight": _weight_name(model, variable), "shape": tuple(variable.shape),
                     "count": int(values.size), "kind": kinds[id(variable)],
                     "min": math.nan if empty else float(values.min()),
                     "mean": math.nan if empty else float(values.mean()),
                     "max": math.nan if empty else float(values.max()),
                     "std": math.nan if empty else float(values.std())})
    return rows


def parameter_counts(model) -> dict[str, int]:
    """Parameters by kind (see :func:`weight_stats`); ``total`` equals ``model.count_params()``."""
    kinds = _kinds(model)
    counts = {"trainable": 0, "frozen": 0, "statistic": 0}
    for variable in model.weights:
        counts[kinds[id(variable)]] += int(np.prod(variable.shape, dtype="int64"))
    counts["non_trainable"] = counts["frozen"] + counts["statistic"]
    counts["total"] = counts["trainable"] + counts["non_trainable"]
    return counts


def _layer_outputs(model, x: np.ndarray) -> list[np.ndarray]:
    """Every layer's output for the batch ``x``, in inference mode (dropout off)."""
    import keras

    try:
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        probe = keras.Model(inputs, [layer.output for layer in model.layers])
    except (AttributeError, ValueError):
        if not isinstance(model, keras.Sequential):
            raise
        outputs, value = [], x
        for layer in model.layers:
            value = layer(value, training=False)
            outputs.append(keras.ops.convert_to_numpy(value))
        return outputs
    outputs = probe(x, training=False)
    outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
    return [keras.ops.convert_to_numpy(o) for o in outputs]


def activation_stats(model, x) -> list[dict]:
    """What each layer outputs for the input ``x`` (one example, or a batch).

    ``zeros`` is the fraction of outputs that are exactly 0: for a relu layer,
    the units this input leaves switched off.
    """
    x = np.asarray(x, dtype="float32")
    if x.ndim == len(model.input_shape) - 1:
        x = x[np.newaxis]  # one example becomes a batch of one
    rows = []
    for layer, out in zip(model.layers, _layer_outputs(model, x)):
        values = np.asarray(out, dtype="float64")
        rows.append({"layer": layer.name, "class": type(layer).__name__,
                     "activation": activation_name(layer), "shape": tuple(values.shape),
                     "mean": float(values.mean()), "std": float(values.std()),
                     "min": float(values.min()), "max": float(values.max()),
                     "zeros": float(np.mean(values == 0))})
    return rows


# --- turning an image file into one input ------------------------------------------------

def image_input(model, path: str | Path, invert: bool = False) -> tuple[np.ndarray, str]:
    """The image at ``path`` as a batch of one that fits ``model``'s input.

    Any size and mode is accepted: the picture is converted to grayscale (one
    channel) or RGB (three), resized (not cropped) to the input's height and
    width, flattened when the model reads a vector (784 numbers for the MNIST
    MLPs), and scaled to [0, 1] as the tutorial's chapters scale their pixels.
    ``invert`` turns a dark drawing on white into MNIST's white on black.
    Returns the array and a line saying what was done.
    """
    from PIL import Image

    shape = model.input_shape
    if isinstance(shape, list):
        raise ShapeMismatchError(f"model {model.name} has {len(shape)} inputs; --activations feeds "
                                 "one image to a model with one input")
    shape = tuple(shape[1:])
    if len(shape) == 3 and shape[-1] in (1, 3):
        height, width, channels = shape
        flat = False
    elif len(shape) == 1 and shape[0] and (side := math.isqrt(shape[0])) ** 2 == shape[0]:
        height = width = side
        channels, flat = 1, True
    elif len(shape) == 1 and shape[0] and shape[0] % 3 == 0 \
            and (side := math.isqrt(shape[0] // 3)) ** 2 * 3 == shape[0]:
        height = width = side
        channels, flat = 3, True
    else:
        raise ShapeMismatchError(f"model {model.name} reads inputs of shape {shape}, which is not an "
                                 "image (height, width, 1 or 3 channels) nor a flattened square one")

    from cnn.images import open_image  # shared with cnn/classify.py: sizes, bombs, damage

    path = Path(path)
    picture = open_image(path)
    before = f"{picture.width}x{picture.height} {picture.mode}"
    if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        # Transparent pixels would otherwise turn black: lay the picture over white.
        rgba = picture.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        picture = Image.alpha_composite(white, rgba)
    picture = picture.convert("L" if channels == 1 else "RGB")
    size = (width or picture.width, height or picture.height)
    if picture.size != size:
        picture = picture.resize(size, Image.BILINEAR)
    pixels = np.asarray(picture, dtype="float32") / 255.0
    if invert:
        pixels = 1.0 - pixels
    pixels = pixels.reshape(picture.height, picture.width, channels)
    if flat:
        pixels = pixels.reshape(-1)
    mode = "grayscale" if channels == 1 else "RGB"
    note = (f"image {path.name}: {before} -> {size[0]}x{size[1]} {mode}"
            + (", flattened to " + str(pixels.size) if flat else "")
            + ", pixels scaled to [0, 1]" + (", inverted" if invert else ""))
    return pixels[np.newaxis], note


def predicted_class(model, x) -> tuple[int, float] | None:
    """The class a softmax classifier picks for ``x`` and its probability, else None."""
    from keras import ops

    shape = model.output_shape
    if model_files.output_count(model) != 1 or not isinstance(shape, tuple) or len(shape) != 2 \
            or not shape[-1] or shape[-1] < 2:
        return None
    probabilities = np.asarray(ops.convert_to_numpy(model(x, training=False)))[0]
    if probabilities.min() < 0 or not np.isclose(probabilities.sum(), 1.0, atol=1e-3):
        return None
    return int(probabilities.argmax()), float(probabilities.max())


# --- printing ----------------------------------------------------------------------------------

def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, tuple):
        return str(tuple(value))  # (32,) stays a tuple, None stays None
    return "-" if value is None or value == "" else str(value)


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows of dicts as aligned text: numbers right, text left."""
    if not rows:
        return "(nothing)"
    columns = columns or list(rows[0])
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    def is_number(value):
        return isinstance(value, int | float) and not isinstance(value, bool)

    numeric = [all(is_number(row.get(c)) for row in rows if row.get(c) is not None)
               and any(row.get(c) is not None for row in rows) for c in columns]

    def line(values):
        return "  ".join(v.rjust(w) if n else v.ljust(w)
                         for v, w, n in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def _selected(rows: list[dict], layers: list[str] | None, key: str = "layer") -> list[dict]:
    if not layers:
        return rows
    return [r for r in rows if (r[key].split("/")[0] if key == "weight" else r[key]) in layers]


def check_layer_names(model, names: list[str] | None) -> None:
    known = [layer.name for layer in model.layers]
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise TutorialError(f"no layer named {', '.join(map(repr, unknown))} in {model.name}: "
                            f"its layers are {', '.join(known)}")


def parameter_line(counts: dict[str, int]) -> str:
    return (f"parameters: {counts['total']:,} total = {counts['trainable']:,} trainable "
            f"+ {counts['non_trainable']:,} non-trainable ({counts['frozen']:,} in frozen layers, "
            f"{counts['statistic']:,} batch-norm statistics)")


# --- the command -----------------------------------------------------------------------------

def parse_args(argv=None):
    parser = cli.make_parser(__doc__.split("\n\n")[0], epochs=None, batch_size=None)
    parser.prog = "python -m utils.inspect"
    model_files.add_path_argument(parser)
    model_files.add_unsafe_argument(parser)
    parser.add_argument("--layer", action="extend", nargs="+", metavar="NAME", default=None,
                        help="show only these layers (repeat, or give several names) "
                             "(default: every layer)")
    parser.add_argument("--activations", type=Path, default=None, metavar="IMAGE",
                        help="also show what each layer outputs for this image file (PNG, JPEG...; "
                             "converted to the model's input shape)")
    parser.add_argument("--invert", action="store_true",
                        help="with --activations: invert the image (dark ink on white becomes "
                             "MNIST's white on black)")
    parser.add_argument("--save", action="store_true",
                        help="also write the tables as CSV files into a new run folder "
                             "<output-dir>/inspect/<time>_<model>/")
    return parser.parse_args(argv)


@cli.friendly_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    model, file = load_model(args.path, safe_mode=not args.unsafe)
    check_layer_names(model, args.layer)
    image = image_input(model, args.activations, args.invert) if args.activations else None

    layers = _selected(describe_layers(model), args.layer)
    weights = _selected(weight_stats(model), args.layer, key="weight")
    counts = parameter_counts(model)
    print(f"model {model.name} from {runs.shown_path(file)}: input {_cell(model.input_shape)}, "
          f"output {_cell(model.output_shape)}")
    if not args.quiet:
        print("\nlayers\n" + format_table(layers))
        print("\nweights\n" + format_table(weights))
    print("\n" + parameter_line(counts))
    activations = None
    if image is not None:
        x, note = image
        activations = _selected(activation_stats(model, x), args.layer)
        print(f"\nactivations for {note}\n" + format_table(activations))
        prediction = predicted_class(model, x)
        if prediction is not None:
            print(f"output: class {prediction[0]} with probability {prediction[1]:.4f}")
    if args.save:
        import pandas as pd

        folder = runs.new_run_dir(args.output_dir, "inspect", model.name)
        tables = {"layers.csv": layers, "weights.csv": weights, "activations.csv": activations}
        for name, rows in tables.items():
            if rows is not None:
                frame = pd.DataFrame(rows)
                for column in frame.columns:  # shapes as "(3, 3, 1, 32)", not Python lists
                    if frame[column].map(lambda v: isinstance(v, tuple)).any():
                        frame[column] = frame[column].map(_cell)
                frame.to_csv(folder / name, index=False)
        print(f"\ntables saved in {runs.shown_path(folder)}")
    return 0


if __name__ == "__main__":
    cli.preselect_backend(sys.argv[1:])  # the backend is fixed when Keras is imported
    sys.exit(main())
