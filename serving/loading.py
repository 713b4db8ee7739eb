"""Find, load and describe the one model a server answers with.

A model comes from a ``.keras`` file, from a run folder another chapter wrote
(its ``run.json`` says which dataset, and so which class names), or from
``keras.applications`` with ImageNet weights already in the Keras cache: the
server never downloads anything.

:class:`ServedModel` wraps the Keras model with what the service needs to know:
how an image becomes an input, which JSON shapes are accepted, and the label of
each output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving import images
from utils.cli import keras_home
from utils.errors import ModelLoadError
from utils.lazy import keras  # Keras is imported on first use, after the flags are read
from utils.model_files import find_model_file, load_model_file

#: Run folders name the dataset they were trained on; these are its classes.
DATASET_CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "digits": [str(d) for d in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}
MAX_INPUTS = 256  # JSON inputs per request: a bound on the work one request can ask for


@dataclass(frozen=True)
class Application:
    builder: str        # the constructor in keras.applications
    module: str         # its module, for preprocess_input
    size: int           # input height and width
    weights_file: str   # the file Keras caches in <KERAS_HOME>/models/
    megabytes: int


APPLICATIONS = {
    "resnet50": Application("ResNet50", "resnet50", 224,
                            "resnet50_weights_tf_dim_ordering_tf_kernels.h5", 98),
    "mobilenet_v2": Application("MobileNetV2", "mobilenet_v2", 224,
                                "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5", 14),
}
CLASS_INDEX_FILE = "imagenet_class_index.json"


class InputError(ValueError):
    """A JSON body the model cannot take; the message names the expected shape."""


@dataclass
class ServedModel:
    model: keras.Model
    source: str
    class_names: list[str]
    kind: str  # "mnist", "rgb", "gray" (images accepted) or "vector" (JSON only)
    preprocess: object = None  # an application's preprocess_input, applied to images only
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def input_shape(self) -> tuple:
        return tuple(self.model.input_shape[1:])

    @property
    def binary(self) -> bool:
        """One sigmoid output (the XOR network): probability of class 1."""
        return self.model.output_shape[-1] == 1

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "input_shape": list(self.input_shape),
            "accepts_images": self.kind != "vector",
            "image_conversion": {
                "mnist": "grayscale, light digit on dark, fitted into 20x20 and centred in 28x28",
                "rgb": f"RGB, shorter side scaled to {self.input_shape[0]}, centre crop",
                "gray": f"grayscale, shorter side scaled to {self.input_shape[0]}, centre crop",
                "vector": "none: this model takes JSON arrays only",
            }[self.kind],
            "classes": self.class_names,
            "parameters": int(self.model.count_params()),
            "notes": self.notes,
        }

    # --- inputs ------------------------------------------------------------------
    def image_input(self, image) -> np.ndarray:
        """One decoded image as a batch of one model input."""
        height, width = self.input_shape[:2] if len(self.input_shape) >= 2 else (28, 28)
        if self.kind == "mnist":
            x = images.to_mnist(image)
        elif self.kind == "rgb":
            x = images.to_rgb(image, height, width)
            x = self.preprocess(x[None])[0] if self.preprocess else x / 255.0
        elif self.kind == "gray":
            x = images.to_gray(image, height, width) / 255.0
        else:
            raise images.ImageError(415, f"model {self.name} takes arrays of shape "
                                         f"{self.input_shape}, not images: send JSON instead")
        return x.reshape((1, *self.input_shape)).astype("float32")

    def expected_shape(self) -> str:
        text = f"(N, {', '.join(map(str, self.input_shape))})".replace(", )", ")")
        if self.kind == "mnist":
            text += " or (N, 28, 28)"
        return text

    def json_input(self, value) -> np.ndarray:
        """``[[...], ...]`` or ``{"inputs": [[...], ...]}`` as a float32 batch.

        One input without the batch axis is accepted too. Values go to the model
        as they are (MNIST models expect pixels scaled to 0-1).
        """
        if isinstance(value, dict):
            if set(value) != {"inputs"}:
                raise InputError('a JSON object must have exactly one key, "inputs", holding an '
                                 f"array of shape {self.expected_shape()}")
            value = value["inputs"]
        try:
            x = np.asarray(value, dtype="float32")
        except (ValueError, TypeError, RecursionError):
            raise InputError("inputs must be a rectangular array of numbers of shape "
                             f"{self.expected_shape()}") from None
        shape = self.input_shape
        if x.shape == shape:
            x = x[None]
        elif self.kind == "mnist" and x.ndim == 3 and x.shape[1:] == (28, 28):
            x = x.reshape((len(x), *shape))
        if x.shape[1:] != shape or x.ndim != len(shape) + 1:
            raise InputError(f"expected an array of shape {self.expected_shape()}, "
                             f"got shape {x.shape}")
        if len(x) == 0:
            raise InputError(f"no inputs: expected an array of shape {self.expected_shape()} with N >= 1")
        if len(x) > MAX_INPUTS:
            raise InputError(f"{len(x)} inputs in one request; at most {MAX_INPUTS}")
        if not np.isfinite(x).all():
            raise InputError("inputs must be finite numbers (no NaN or infinity)")
        return x

    # --- outputs -----------------------------------------------------------------
    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """(N, classes) probabilities from the model's raw outputs."""
        outputs = np.asarray(outputs, dtype="float64").reshape(len(outputs), -1)
        if self.binary:
            return np.concatenate([1.0 - outputs, outputs], axis=1)
        sums = outputs.sum(axis=1)
        if (outputs >= 0).all() and np.allclose(sums, 1.0, atol=1e-3):
            return outputs
        # Logits (a model without a softmax layer): turn them into probabilities.
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def top_k(self, probabilities: np.ndarray, k: int) -> list[list[dict]]:
        k = min(k, probabilities.shape[1])
        answers = []
        for row in probabilities:
            best = np.argsort(row)[::-1][:k]
            answers.append([{"label": self.class_names[i], "class": int(i),
                             "probability": round(float(row[i]), 6)} for i in best])
        return answers


def _kind(shape: tuple) -> str:
    if shape in ((28, 28, 1), (784,), (28, 28)):
        return "mnist"
    if len(shape) == 3 and None not in shape and shape[2] in (1, 3):
        return "rgb" if shape[2] == 3 else "gray"
    return "vector"


def _class_count(model) -> int:
    outputs = model.output_shape
    if isinstance(outputs, list) or len(outputs) != 2:
        raise ModelLoadError(f"model {model.name} has output shape {outputs}; the service answers for "
                             "models with one output of shape (N, classes)")
    return outputs[-1]


def read_labels(path: str | Path) -> list[str]:
    try:
        labels = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as err:
        raise ModelLoadError(f"cannot read labels file {path}: {err.strerror}") from None
    if not labels:
        raise ModelLoadError(f"labels file {path} is empty: write one class name per line")
    return labels


def load_from_path(path: str | Path, labels: str | Path | None = None, safe_mode: bool = True) -> ServedModel:
    """A model from a ``.keras`` file or a run folder."""
    file = find_model_file(path)
    model = load_model_file(file, safe_mode=safe_mode)
    classes = _class_count(model)
    notes, names = [], None
    run_json = file.parent / "run.json"
    if labels:
        names = read_labels(labels)
    elif run_json.is_file():
        try:
            dataset = json.loads(run_json.read_text()).get("dataset")
        except (OSError, ValueError):
            dataset = None
        names = DATASET_CLASSES.get(dataset)
        if names:
            notes.append(f"class names from run.json (dataset {dataset})")
    count = 2 if classes == 1 else classes
    if names is None:
        names = [str(i) for i in range(count)]
    if len(names) != count:
        raise ModelLoadError(f"{len(names)} class names for a model with {count} classes")
    return ServedModel(model, str(file), names, _kind(tuple(model.input_shape[1:])), notes=notes)


def weights_path(app: Application) -> Path:
    return keras_home() / "models" / app.weights_file


def load_application(name: str, weights: str = "imagenet") -> ServedModel:
    """An ImageNet classifier from ``keras.applications``.

    ``weights`` is ``imagenet`` (from the Keras cache, never downloaded),
    ``none`` (random weights: meaningless answers, for trying the plumbing) or
    the path of a weights file.
    """
    app = APPLICATIONS[name]
    notes = []
    if weights == "imagenet":
        file = weights_path(app)
        if not file.is_file():
            raise ModelLoadError(
                f"--application {name} needs the ImageNet weights file {app.weights_file} "
                f"(about {app.megabytes} MB) in {file.parent}, and the server never downloads; fetch it "
                f"once with: python -c \"import keras; keras.applications.{app.builder}()\" "
                "(or use --weights none for an untrained network)")
        source = f"keras.applications.{app.builder}, ImageNet weights from {file}"
        weights_arg = str(file)
    elif weights == "none":
        source, weights_arg = f"keras.applications.{app.builder}, random weights", None
        notes.append("untrained (random weights): the answers mean nothing")
    else:
        if not Path(weights).is_file():
            raise ModelLoadError(f"no such weights file: {weights}")
        source, weights_arg = f"keras.applications.{app.builder}, weights from {weights}", weights
    builder = getattr(keras.applications, app.builder)
    try:
        model = builder(weights=weights_arg, input_shape=(app.size, app.size, 3))
    except Exception as err:
        raise ModelLoadError(f"could not build {app.builder} with weights {weights}: "
                             f"{' '.join(str(err).split())[:300]}") from None
    index_file = keras_home() / "models" / CLASS_INDEX_FILE
    try:
        index = json.loads(index_file.read_text())
        names = [index[str(i)][1] for i in range(1000)]
    except (OSError, ValueError, KeyError):
        names = [f"imagenet class {i}" for i in range(1000)]
        notes.append(f"no {CLASS_INDEX_FILE} in {index_file.parent}: labels are class numbers")
    preprocess = getattr(keras.applications, app.module).preprocess_input
    return ServedModel(model, source, names, "rgb", preprocess=preprocess, notes=notes)
