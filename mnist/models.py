"""The MNIST chapter's models, declared once in a registry.

Each entry says what the model is, whether it reads images flattened to 784
numbers (the MLPs) or as 28x28x1 arrays (the convolutional nets), and how to
build it. The chapter, its tests and later chapters look models up here.

Every layer has a fixed name, numbered by kind from the input: ``conv_1``,
``pool_1``, ``conv_2``, ..., ``flatten``, ``dense_1``, ..., ``output`` (also
``dropout_N``, ``batch_norm_N`` and ``relu_N``), so ``--layer dense_1`` means the
same layer whatever else ran before in the same process.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from utils.errors import TutorialError
from utils.lazy import keras, lazy  # Keras is imported on first use, after the flags are read

layers, regularizers = lazy("keras.layers"), lazy("keras.regularizers")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    flat_input: bool  # True: input (784,), False: input (28, 28, 1)
    builder: Callable[..., list]

    def _build(self, image_shape, classes: int) -> keras.Model:
        height, width, channels = image_shape
        shape = (height * width * channels,) if self.flat_input else tuple(image_shape)
        return keras.Sequential([keras.Input(shape=shape), *self.builder(classes, _Names())],
                                name=self.name)

    def smallest_side(self, channels: int = 1) -> int:
        """The smallest square image the model can read: each valid convolution and
        pooling shrinks the image, and none may shrink it below one pixel."""
        if self.flat_input:
            return 1
        for side in range(1, 1025):
            try:
                self._build((side, side, channels), 2)
                return side
            except ValueError:
                continue
        raise TutorialError(f"{self.name} cannot be built for any image up to 1024x1024")

    def check_image_shape(self, image_shape) -> None:
        """One line, before any training, when the images are too small for this model."""
        height, width, channels = image_shape
        try:
            self._build((height, width, channels), 2)
            return  # it reads them; the search below builds the model once per side tried
        except ValueError:
            pass
        smallest = self.smallest_side(channels)
        if min(height, width) < smallest:
            raise TutorialError(
                f"{self.name} cannot read {height}x{width}x{channels} images: its convolutions and "
                f"poolings need at least {smallest}x{smallest} pixels; choose another model (an MLP "
                "reads any size) or larger images")

    def build(self, image_shape: tuple[int, int, int] = (28, 28, 1), classes: int = 10) -> keras.Model:
        try:
            return self._build(image_shape, classes)
        except ValueError:
            self.check_image_shape(image_shape)  # the usual cause, said in one line
            raise


class _Names:
    """Layer names numbered per kind, from 1, for one model: ``names("conv")`` -> conv_1, conv_2..."""

    def __init__(self):
        self.counts = defaultdict(int)

    def __call__(self, kind: str) -> str:
        self.counts[kind] += 1
        return f"{kind}_{self.counts[kind]}"


REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, description: str, flat_input: bool = False):
    def add(builder):
        REGISTRY[name] = ModelSpec(name, description, flat_input, builder)
        return builder
    return add


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise TutorialError(
            f"unknown model {name!r}: choose from {', '.join(REGISTRY)} (or 'all'); "
            "`--list` describes each"
        ) from None


def build_model(name: str, image_shape=(28, 28, 1), classes: int = 10) -> keras.Model:
    """Build a registered model, untrained and uncompiled."""
    return get_spec(name).build(image_shape, classes)


def _softmax(classes):
    # float32 even under a mixed-precision policy: probabilities near 0 or 1,
    # and the log the loss takes of them, need more than float16's precision.
    return layers.Dense(classes, activation="softmax", dtype="float32", name="output")


def _dense(n, units, **kwargs):
    return layers.Dense(units, name=n("dense"), **kwargs)


def _dropout(n, rate):
    return layers.Dropout(rate, name=n("dropout"))


def _batch_norm(n):
    return layers.BatchNormalization(name=n("batch_norm"))


def _flatten():
    return layers.Flatten(name="flatten")


# --- multi-layer perceptrons: every pixel connected to every hidden unit ---------

@register("mlp_one_layer", "784 -> 512 relu -> 10 softmax", flat_input=True)
def _mlp_one_layer(classes, n):
    return [_dense(n, 512, activation="relu"), _softmax(classes)]


@register("mlp_two_layers", "784 -> 512 relu -> 512 relu -> 10 softmax", flat_input=True)
def _mlp_two_layers(classes, n):
    return [_dense(n, 512, activation="relu"), _dense(n, 512, activation="relu"), _softmax(classes)]


@register("mlp_two_layers_dropout", "mlp_two_layers with dropout 0.5 after each hidden layer",
          flat_input=True)
def _mlp_two_layers_dropout(classes, n):
    return [_dense(n, 512, activation="relu"), _dropout(n, 0.5),
            _dense(n, 512, activation="relu"), _dropout(n, 0.5), _softmax(classes)]


# --- the original tutorial's convolutional net and its regularised variants --------------------

def _conv_net(classes, n, regularizer=None, batch_norm=False, dropout=False):
    """Conv 32 -> pool -> conv 64 -> pool -> conv 64 -> dense 64 -> softmax.

    Shapes: 28x28x1 -> 26x26x32 -> 13x13x32 -> 11x11x64 -> 5x5x64 -> 3x3x64
    -> 576 -> 64 -> 10.
    """
    reg = {"kernel_regularizer": regularizer} if regularizer else {}
    conv = lambda filters: layers.Conv2D(filters, 3, activation="relu", name=n("conv"), **reg)  # noqa: E731
    pool = lambda: layers.MaxPooling2D(2, name=n("pool"))  # noqa: E731
    stack = [conv(32), pool()]
    stack += [_batch_norm(n)] if batch_norm else []
    stack += [_dropout(n, 0.25)] if dropout else []
    stack += [conv(64), pool(), conv(64), _flatten(), _dense(n, 64, activation="relu", **reg)]
    stack += [_batch_norm(n)] if batch_norm else []
    stack += [_dropout(n, 0.5)] if dropout else []
    return stack + [_softmax(classes)]


@register("conv_net", "3 conv layers (32, 64, 64 filters) + dense 64, 93,322 parameters")
def _plain_conv_net(classes, n):
    return _conv_net(classes, n)


@register("conv_net_dropout", "conv_net with dropout 0.25 after the first pooling, 0.5 before the output")
def _conv_net_dropout(classes, n):
    return _conv_net(classes, n, dropout=True)


@register("conv_net_batch_norm", "conv_net with batch normalisation after the first pooling and dense 64")
def _conv_net_batch_norm(classes, n):
    return _conv_net(classes, n, batch_norm=True)


@register("conv_net_l1", "conv_net with an L1 weight penalty of 1e-4 on every hidden layer")
def _conv_net_l1(classes, n):
    return _conv_net(classes, n, regularizer=regularizers.L1(1e-4))


@register("conv_net_l2", "conv_net with an L2 weight penalty (weight decay) of 1e-4 on every hidden layer")
def _conv_net_l2(classes, n):
    return _conv_net(classes, n, regularizer=regularizers.L2(1e-4))


@register("le_net", "LeNet-5 (LeCun et al., 1998): conv 6 -> avg pool -> conv 16 -> avg pool "
                    "-> 120 -> 84 -> 10")
def _le_net(classes, n):
    # "same" padding on the first layer lets 28x28 inputs play the part of
    # LeNet's 32x32 ones: 28x28x6 -> 14x14x6 -> 10x10x16 -> 5x5x16 -> 400.
    pool = lambda: layers.AveragePooling2D(2, name=n("pool"))  # noqa: E731
    return [layers.Conv2D(6, 5, padding="same", activation="tanh", name=n("conv")), pool(),
            layers.Conv2D(16, 5, activation="tanh", name=n("conv")), pool(), _flatten(),
            _dense(n, 120, activation="tanh"), _dense(n, 84, activation="tanh"),
            _softmax(classes)]


# --- the chapter's own model ---------------------------------------------------------

def _conv_bn(n, filters):
    # Batch normalisation between the convolution and its relu keeps each
    # layer's inputs well scaled, so training is stable at adam's default
    # rate; the bias is dropped because normalisation subtracts it anyway.
    return [layers.Conv2D(filters, 3, padding="same", use_bias=False, name=n("conv")),
            _batch_norm(n), layers.Activation("relu", name=n("relu"))]


@register("best_conv_net", "the chapter's own: 3 conv layers (32, 64, 128) with batch norm "
                           "and dropout, dense 256")
def _best_conv_net(classes, n):
    # 28x28x32 -> 14x14x64 -> 7x7x128 -> 3x3x128: the filters double as the
    # image halves, so the two deeper layers cost the same; the expensive
    # full-resolution layer stays narrow. "same" padding keeps the borders.
    pool = lambda: layers.MaxPooling2D(2, name=n("pool"))  # noqa: E731
    return [*_conv_bn(n, 32), pool(),
            *_conv_bn(n, 64), pool(), _dropout(n, 0.2),
            *_conv_bn(n, 128), pool(), _dropout(n, 0.3),
            _flatten(), _dense(n, 256, use_bias=False), _batch_norm(n),
            layers.Activation("relu", name=n("relu")), _dropout(n, 0.5), _softmax(classes)]
