"""How each layer's output shape and parameter count follow from its settings.

For a model from the MNIST registry (default ``conv_net``) or a saved ``.keras``
file, this walks the layers in order, computes every output shape and
parameter count with the textbook formulas, prints them next to what Keras
reports, and stops with an error if the two ever disagree.

    python cnn/shapes.py                       # the MNIST conv_net
    python cnn/shapes.py -m le_net -m conv_net_batch_norm
    python cnn/shapes.py -m le_net --input-shape 32 32 1   # LeNet's original 32x32 input
    python cnn/shapes.py --model-file outputs/mnist/<run>/model.keras
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `utils` imports from any folder

from mnist import models  # noqa: E402
from utils import cli, model_files  # noqa: E402
from utils.errors import ShapeMismatchError, TutorialError  # noqa: E402
from utils.lazy import keras  # noqa: E402  (Keras loads on first use, after the flags are read)

Shape = tuple[int, ...]


@dataclass
class LayerRow:
    """One layer: what the formulas give, how, and what Keras says."""

    name: str
    kind: str
    input_shape: Shape
    settings: str        # kernel / stride / padding, or units, in words
    output_shape: Shape  # by the formula
    params: int          # by the formula
    shape_working: str   # the arithmetic behind output_shape ("" when the shape is unchanged)
    params_working: str  # the arithmetic behind params ("" when there are none)
    keras_output: Shape
    keras_params: int
    non_trainable: int = 0  # of ``params``: updated by statistics, not by the optimiser

    @property
    def agrees(self) -> bool:
        return self.output_shape == self.keras_output and self.params == self.keras_params


def fmt_shape(shape: Shape) -> str:
    """(26, 26, 32) -> '26x26x32', the way the chapter writes shapes."""
    return "x".join(str(d) for d in shape)


def conv_length(size: int, kernel: int, stride: int, padding: str, dilation: int = 1) -> int:
    """Output length along one axis of a convolution or pooling window.

    "valid" only places the window where it fits entirely: (n - k) // s + 1.
    "same" pads the borders so every stride step gives one output: ceil(n / s).
    A dilated kernel spans d * (k - 1) + 1 pixels.
    """
    span = dilation * (kernel - 1) + 1
    if padding == "same":
        return math.ceil(size / stride)
    return (size - span) // stride + 1


def _length_working(size: int, kernel: int, stride: int, padding: str, dilation: int) -> str:
    out = conv_length(size, kernel, stride, padding, dilation)
    if padding == "same":
        return f"ceil({size} / {stride}) = {out}"
    span = kernel if dilation == 1 else f"{dilation}*({kernel}-1)+1"
    return f"({size} - {span}) // {stride} + 1 = {out}"


def _spatial(in_shape: Shape, kernel, strides, padding: str, dilation=(1, 1)) -> tuple[Shape, str]:
    """Height and width after a sliding window, with the working for each."""
    (h, w), out, parts = in_shape[:2], [], []
    for axis, size in zip("hw", (h, w)):
        i = "hw".index(axis)
        out.append(conv_length(size, kernel[i], strides[i], padding, dilation[i]))
        parts.append(_length_working(size, kernel[i], strides[i], padding, dilation[i]))
    working = parts[0] if (h, kernel[0], strides[0]) == (w, kernel[1], strides[1]) else \
        f"height {parts[0]}, width {parts[1]}"
    return tuple(out), working


def _window(kernel, strides, padding) -> str:
    return f"{kernel[0]}x{kernel[1]} /{strides[0]} {padding}"


def by_formula(layer, in_shape: Shape) -> tuple[Shape, int, str, str, str, int]:
    """(output shape, params, settings, shape working, params working, non-trainable) of one layer.

    Only the layer's settings and the incoming shape are used, never Keras's answer.
    """
    L = keras.layers
    if isinstance(layer, L.Conv2D) and not isinstance(layer, L.DepthwiseConv2D | L.SeparableConv2D):
        if layer.groups != 1:
            raise TutorialError(f"layer {layer.name}: grouped convolutions have no formula here")
        (h_w, working) = _spatial(in_shape, layer.kernel_size, layer.strides, layer.padding,
                                  layer.dilation_rate)
        kh, kw = layer.kernel_size
        c_in, f = in_shape[-1], layer.filters
        weights = kh * kw * c_in * f
        params = weights + (f if layer.use_bias else 0)
        p_work = f"{kh}*{kw}*{c_in}*{f}" + (f" + {f}" if layer.use_bias else " (no bias)")
        settings = f"{f} filters {_window(layer.kernel_size, layer.strides, layer.padding)}"
        return (*h_w, f), params, settings, working, f"{p_work} = {params:,}", 0
    if isinstance(layer, L.MaxPooling2D | L.AveragePooling2D):
        (h_w, working) = _spatial(in_shape, layer.pool_size, layer.strides, layer.padding)
        kind = "max" if isinstance(layer, L.MaxPooling2D) else "average"
        return ((*h_w, in_shape[-1]), 0, f"{kind} {_window(layer.pool_size, layer.strides, layer.padding)}",
                working, "", 0)
    if isinstance(layer, L.GlobalAveragePooling2D | L.GlobalMaxPooling2D):
        return (in_shape[-1],), 0, "one value per channel", "keeps the channels", "", 0
    if isinstance(layer, L.Flatten):
        size = math.prod(in_shape)
        return (size,), 0, "", " * ".join(map(str, in_shape)) + f" = {size:,}", "", 0
    if isinstance(layer, L.Dense):
        n_in, units = in_shape[-1], layer.units
        params = n_in * units + (units if layer.use_bias else 0)
        p_work = f"{n_in}*{units}" + (f" + {units}" if layer.use_bias else " (no bias)")
        return (*in_shape[:-1], units), params, f"{units} units", "", f"{p_work} = {params:,}", 0
    if isinstance(layer, L.BatchNormalization):
        c = in_shape[layer.axis] if isinstance(layer.axis, int) else in_shape[-1]
        per_channel = int(layer.scale) + int(layer.center) + 2  # gamma, beta, moving mean, variance
        params = per_channel * c
        return (in_shape, params, "per channel", "",
                f"{per_channel}*{c} = {params:,} ({2 * c:,} moving statistics, not trained)", 2 * c)
    if isinstance(layer, L.Dropout | L.Activation | L.ReLU | L.Rescaling | L.SpatialDropout2D):
        return in_shape, 0, "", "", "", 0
    raise TutorialError(f"layer {layer.name} ({type(layer).__name__}) has no formula in "
                        "cnn/shapes.py; supported: Conv2D, pooling, Flatten, Dense, "
                        "BatchNormalization, Dropout, Activation")


def _no_batch(shape) -> Shape:
    return tuple(int(d) for d in shape[1:])


def analyse(model) -> list[LayerRow]:
    """Compute each layer's shape and parameters from its settings, walking forward from
    the model's input shape; record Keras's own numbers alongside."""
    if not isinstance(model, keras.Sequential):
        raise TutorialError(f"{model.name} is not a Sequential model: shapes.py follows one "
                            "chain of layers")
    shape = _no_batch(model.inputs[0].shape)
    rows = []
    for layer in model.layers:
        out, params, settings, s_work, p_work, frozen = by_formula(layer, shape)
        rows.append(LayerRow(layer.name, type(layer).__name__, shape, settings, out, params, s_work,
                             p_work, _no_batch(layer.output.shape), int(layer.count_params()), frozen))
        shape = out  # the next layer starts from *our* answer, not Keras's
    return rows


def check(rows: list[LayerRow], model) -> None:
    """Raise :class:`ShapeMismatchError` at the first layer where hand and Keras disagree,
    or if the totals differ."""
    for row in rows:
        if not row.agrees:
            raise ShapeMismatchError(
                f"layer {row.name} ({row.kind}): the formula gives output {fmt_shape(row.output_shape)} "
                f"and {row.params:,} parameters, Keras reports {fmt_shape(row.keras_output)} and "
                f"{row.keras_params:,}")
    total = sum(r.params for r in rows)
    if total != model.count_params():
        raise ShapeMismatchError(f"{model.name}: the layers add up to {total:,} parameters but "
                                 f"Keras counts {model.count_params():,}")


def table(rows: list[LayerRow], title: str) -> str:
    """The per-layer table, the arithmetic under it, and the totals."""
    head = f"{'layer':<34} {'input':>10}  {'settings':<26} {'output':>10} {'params':>9}   Keras says"
    lines = [title, head, "-" * len(head)]
    for r in rows:
        keras_says = "same" if r.agrees else f"{fmt_shape(r.keras_output)}, {r.keras_params:,}  MISMATCH"
        lines.append(f"{r.name + ' (' + r.kind + ')':<34.34} {fmt_shape(r.input_shape):>10}  "
                     f"{r.settings:<26.26} {fmt_shape(r.output_shape):>10} {r.params:>9,}   {keras_says}")
    total = sum(r.params for r in rows)
    frozen = sum(r.non_trainable for r in rows)
    lines.append("-" * len(head))
    lines.append(f"total {total:,} parameters ({total - frozen:,} trainable, {frozen:,} not)")
    lines.append("\nhow each number follows:")
    for r in rows:
        said = [part for part in (r.shape_working and f"output {r.shape_working}",
                                  r.params_working and f"params {r.params_working}") if part]
        if said:
            lines.append(f"  {r.name:<22} " + ";  ".join(said))
    return "\n".join(lines)


def load_model_file(path: Path, unsafe: bool = False):
    model, _ = model_files.load_model(path, safe_mode=not unsafe)
    return model


#: Share of the free memory the weights of a model may take before it is refused.
MEMORY_SHARE = 0.25


def available_memory() -> int | None:
    """Bytes of memory free for a new allocation (MemAvailable), or None when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def estimate_size(spec, image_shape: Shape, classes: int) -> tuple[int, int] | None:
    """(parameters, largest layer output in values per image) of ``spec`` at ``image_shape``,
    from the formulas alone: the layers are created but never built, so nothing is allocated.
    None when some layer has no formula here or the input is too small (Keras says why)."""
    height, width, channels = image_shape
    shape: Shape = (height * width * channels,) if spec.flat_input else tuple(image_shape)
    params, largest = 0, math.prod(shape)
    counts: dict[str, int] = {}

    def name(kind: str) -> str:  # the registry numbers its layers: conv_1, conv_2...
        counts[kind] = counts.get(kind, 0) + 1
        return f"{kind}_{counts[kind]}"

    try:
        built = spec.builder(classes, name)
    except TypeError:  # a builder that names nothing
        built = spec.builder(classes)
    try:
        for layer in built:
            shape, count, *_ = by_formula(layer, shape)
            if min(shape) < 1:
                return None
            params += count
            largest = max(largest, math.prod(shape))
    except (TutorialError, AttributeError, TypeError, IndexError):
        return None
    return params, largest


def check_fits_in_memory(spec, image_shape: Shape, classes: int, memory: int | None = None) -> None:
    """Refuse, before building, a model whose weights alone would fill memory."""
    size = estimate_size(spec, image_shape, classes)
    memory = available_memory() if memory is None else memory
    if size is None or not memory:
        return
    params, largest = size
    needed = params * 4  # float32
    if needed > MEMORY_SHARE * memory or largest >= 2**31:
        raise TutorialError(
            f"--input-shape {' '.join(map(str, image_shape))}: {spec.name} would have {params:,} "
            f"parameters ({needed / 2**30:,.1f} GiB of float32 weights) and a layer output of "
            f"{largest:,} values per image, more than this machine can build "
            f"({memory / 2**30:,.1f} GiB free); give a smaller --input-shape")


def models_to_show(args) -> list:
    if args.list:
        for spec in models.REGISTRY.values():
            print(f"{spec.name:<24} {spec.description}")
        return []
    if args.model_file:
        return [load_model_file(args.model_file, args.unsafe)]
    names = args.model or ["conv_net"]
    if "all" in names:
        names = list(models.REGISTRY)
    specs = [models.get_spec(name) for name in dict.fromkeys(names)]  # unknown names fail here
    shape = tuple(args.input_shape)
    for spec in specs:
        check_fits_in_memory(spec, shape, args.classes)
    built = []
    for spec in specs:
        try:
            built.append(spec.build(shape, args.classes))
        except ValueError as err:  # e.g. a window larger than what is left of the image
            raise TutorialError(f"{spec.name} cannot take {fmt_shape(shape)} inputs: a window "
                                "is larger than what is left of the image by then; give a larger "
                                f"--input-shape (Keras: {type(err).__name__})") from None
    return built


def parse_args(argv=None):
    parser = cli.make_parser(__doc__.split("\n\n")[0], epochs=None, batch_size=None,
                             epilog="models: " + ", ".join(models.REGISTRY))
    parser.add_argument("-m", "--model", action="append", metavar="NAME",
                        help="MNIST registry model; repeat for several, or 'all' (default: conv_net)")
    parser.add_argument("--list", action="store_true", help="list the registry's models and exit")
    parser.add_argument("--model-file", type=Path, default=None, metavar="PATH",
                        help="a saved .keras model to analyse instead")
    model_files.add_unsafe_argument(parser)
    parser.add_argument("--input-shape", type=cli.positive_int, nargs=3, default=[28, 28, 1],
                        metavar=("H", "W", "C"), help="image height, width and channels")
    parser.add_argument("--classes", type=cli.positive_int, default=10, help="output units")
    return parser.parse_args(argv)


@cli.friendly_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    shown = models_to_show(args)
    for model in shown:
        rows = analyse(model)
        print(table(rows, f"\n=== {model.name}"), flush=True)
        check(rows, model)
    if shown:
        print("\nevery shape and parameter count agrees with Keras")
    return 0


if __name__ == "__main__":
    sys.exit(main())
