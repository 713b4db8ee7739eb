"""The MNIST chapter's models, declared once in a registry.

Each entry says what the model is, whether it reads images flattened to 784
numbers (the MLPs) or as 28x28x1 arrays (the convolutional nets), and how to
build it. The chapter, its tests and later chapters look models up here.
"""

from __future__ import annotations

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

    def build(self, image_shape: tuple[int, int, int] = (28, 28, 1), classes: int = 10) -> keras.Model:
        height, width, channels = image_shape
        shape = (height * width * channels,) if self.flat_input else image_shape
        return keras.Sequential([keras.Input(shape=shape), *self.builder(classes)], name=self.name)


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
    return layers.Dense(classes, activation="softmax", dtype="float32")


# --- multi-layer perceptrons: every pixel connected to every hidden unit ---------

@register("mlp_one_layer", "784 -> 512 relu -> 10 softmax", flat_input=True)
def _mlp_one_layer(classes):
    return [layers.Dense(512, activation="relu"), _softmax(classes)]


@register("mlp_two_layers", "784 -> 512 relu -> 512 relu -> 10 softmax", flat_input=True)
def _mlp_two_layers(classes):
    return [layers.Dense(512, activation="relu"), layers.Dense(512, activation="relu"), _softmax(classes)]


@register("mlp_two_layers_dropout", "mlp_two_layers with dropout 0.5 after each hidden layer",
          flat_input=True)
def _mlp_two_layers_dropout(classes):
    return [layers.Dense(512, activation="relu"), layers.Dropout(0.5),
            layers.Dense(512, activation="relu"), layers.Dropout(0.5), _softmax(classes)]


# --- the seed's convolutional net and its regularised variants --------------------

def _conv_net(classes, regularizer=None, batch_norm=False, dropout=False):
    """Conv 32 -> pool -> conv 64 -> pool -> conv 64 -> dense 64 -> softmax.

    Shapes: 28x28x1 -> 26x26x32 -> 13x13x32 -> 11x11x64 -> 5x5x64 -> 3x3x64
    -> 576 -> 64 -> 10.
    """
    reg = {"kernel_regularizer": regularizer} if regularizer else {}
    stack = [layers.Conv2D(32, 3, activation="relu", **reg), layers.MaxPooling2D(2)]
    stack += [layers.BatchNormalization()] if batch_norm else []
    stack += [layers.Dropout(0.25)] if dropout else []
    stack += [layers.Conv2D(64, 3, activation="relu", **reg), layers.MaxPooling2D(2),
              layers.Conv2D(64, 3, activation="relu", **reg), layers.Flatten(),
              layers.Dense(64, activation="relu", **reg)]
    stack += [layers.BatchNormalization()] if batch_norm else []
    stack += [layers.Dropout(0.5)] if dropout else []
    return stack + [_softmax(classes)]


@register("conv_net", "3 conv layers (32, 64, 64 filters) + dense 64, 93,322 parameters")
def _plain_conv_net(classes):
    return _conv_net(classes)


@register("conv_net_dropout", "conv_net with dropout 0.25 after the first pooling, 0.5 before the output")
def _conv_net_dropout(classes):
    return _conv_net(classes, dropout=True)


@register("conv_net_batch_norm", "conv_net with batch normalisation after the first pooling and dense 64")
def _conv_net_batch_norm(classes):
    return _conv_net(classes, batch_norm=True)


@register("conv_net_l1", "conv_net with an L1 weight penalty of 1e-4 on every hidden layer")
def _conv_net_l1(classes):
    return _conv_net(classes, regularizer=regularizers.L1(1e-4))


@register("conv_net_l2", "conv_net with an L2 weight penalty (weight decay) of 1e-4 on every hidden layer")
def _conv_net_l2(classes):
    return _conv_net(classes, regularizer=regularizers.L2(1e-4))


@register("le_net", "LeNet-5 (LeCun et al., 1998): conv 6 -> avg pool -> conv 16 -> avg pool "
                    "-> 120 -> 84 -> 10")
def _le_net(classes):
    # "same" padding on the first layer lets 28x28 inputs play the part of
    # LeNet's 32x32 ones: 28x28x6 -> 14x14x6 -> 10x10x16 -> 5x5x16 -> 400.
    return [layers.Conv2D(6, 5, padding="same", activation="tanh"), layers.AveragePooling2D(2),
            layers.Conv2D(16, 5, activation="tanh"), layers.AveragePooling2D(2), layers.Flatten(),
            layers.Dense(120, activation="tanh"), layers.Dense(84, activation="tanh"),
            _softmax(classes)]


# --- the chapter's own model ---------------------------------------------------------

def _conv_bn(filters):
    # Batch normalisation between the convolution and its relu keeps each
    # layer's inputs well scaled, so training is stable at adam's default
    # rate; the bias is dropped because normalisation subtracts it anyway.
    return [layers.Conv2D(filters, 3, padding="same", use_bias=False),
            layers.BatchNormalization(), layers.Activation("relu")]


@register("best_conv_net", "the chapter's own: 3 conv layers (32, 64, 128) with batch norm "
                           "and dropout, dense 256")
def _best_conv_net(classes):
    # 28x28x32 -> 14x14x64 -> 7x7x128 -> 3x3x128: the filters double as the
    # image halves, so the two deeper layers cost the same; the expensive
    # full-resolution layer stays narrow. "same" padding keeps the borders.
    return [*_conv_bn(32), layers.MaxPooling2D(2),
            *_conv_bn(64), layers.MaxPooling2D(2), layers.Dropout(0.2),
            *_conv_bn(128), layers.MaxPooling2D(2), layers.Dropout(0.3),
            layers.Flatten(), layers.Dense(256, use_bias=False), layers.BatchNormalization(),
            layers.Activation("relu"), layers.Dropout(0.5), _softmax(classes)]
