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


class OutputError(ValueError):
    """The model's answer for a request cannot be sent (NaN or infinity)."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple          # without the batch axis; None where any size goes
    dtype: str
    index_limit: int | None = None  # read by an Embedding: whole numbers 0 <= i < index_limit

    def text(self) -> str:
        dims = ", ".join("any" if d is None else str(d) for d in self.shape)
        return f"(N, {dims})".replace(", )", ")")


@dataclass(frozen=True)
class OutputSpec:
    name: str
    units: int
    kind: str                        # "softmax", "sigmoid", "logits" (classes) or "values"
    class_names: tuple = ()

    @property
    def classes(self) -> int:
        return len(self.class_names)


@dataclass
class ServedModel:
    model: keras.Model
    source: str
    class_names: list[str]
    kind: str  # "mnist", "rgb", "gray", "rgb_any", "gray_any" (images accepted) or "vector" (JSON only)
    preprocess: object = None  # an application's preprocess_input, applied to images only
    notes: list[str] = field(default_factory=list)
    inputs: list[InputSpec] = field(default_factory=list)
    outputs: list[OutputSpec] = field(default_factory=list)

    def __post_init__(self):
        if not self.inputs:
            self.inputs = input_specs(self.model)
        if not self.outputs:
            self.outputs = output_specs(self.model, self.class_names or None)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def input_shape(self) -> tuple:
        """The input shape without the batch axis (the first input's, for several)."""
        return self.inputs[0].shape

    @property
    def multi_input(self) -> bool:
        return len(self.inputs) > 1

    @property
    def classes(self) -> int:
        """Classes of the largest classifier output; 0 when every output is a value."""
        return max((o.classes for o in self.outputs if o.kind != "values"), default=0)

    def describe(self) -> dict:
        single = not self.multi_input
        return {
            "name": self.name,
            "source": self.source,
            "input_shape": list(self.input_shape) if single else
            {i.name: list(i.shape) for i in self.inputs},
            "accepts_images": self.kind != "vector",
            "image_conversion": {
                "mnist": "grayscale, light digit on dark, fitted into 20x20 and centred in 28x28",
                "rgb": f"RGB, shorter side scaled to {self.input_shape[0]}, centre crop",
                "gray": f"grayscale, shorter side scaled to {self.input_shape[0]}, centre crop",
                "rgb_any": f"RGB at its own size, scaled down to at most "
                           f"{images.MAX_OWN_SIZE_PIXELS:,} pixels",
                "gray_any": f"grayscale at its own size, scaled down to at most "
                            f"{images.MAX_OWN_SIZE_PIXELS:,} pixels",
                "vector": "none: this model takes JSON arrays only" if single else
                "none: this model takes JSON only, an object with one array per named input",
            }[self.kind],
            "outputs": [{"name": o.name, "answers": "values" if o.kind == "values" else "probabilities",
                         "units": o.units} for o in self.outputs],
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
        elif self.kind in ("rgb_any", "gray_any"):
            x = images.to_own_size(image, 3 if self.kind == "rgb_any" else 1) / 255.0
            return x[None].astype("float32")
        else:
            raise images.ImageError(415, f"model {self.name} takes arrays of shape "
                                         f"{self.expected_shape()}, not images: send JSON instead")
        return x.reshape((1, *self.input_shape)).astype("float32")

    def expected_shape(self) -> str:
        if self.multi_input:
            return "{" + ", ".join(f'"{i.name}": {i.text()}' for i in self.inputs) + "}"
        text = self.inputs[0].text()
        if self.kind == "mnist":
            text += " or (N, 28, 28)"
        return text

    def json_input(self, value):
        """``[[...], ...]`` or ``{"inputs": [[...], ...]}`` as a float32 batch; for a
        model with several inputs, ``{"inputs": {"name": [...], ...}}`` (or the
        names at the top level) as a dict of batches.

        One input without the batch axis is accepted too. Values go to the model
        as they are (MNIST models expect pixels scaled to 0-1).
        """
        if self.multi_input:
            return self._named_inputs(value)
        if isinstance(value, dict):
            if set(value) != {"inputs"}:
                raise InputError('a JSON object must have exactly one key, "inputs", holding an '
                                 f"array of shape {self.expected_shape()}")
            value = value["inputs"]
        return self._array(value, self.inputs[0], self.kind == "mnist")

    def _named_inputs(self, value) -> dict:
        names = [i.name for i in self.inputs]
        if isinstance(value, dict) and set(value) == {"inputs"} and "inputs" not in names:
            value = value["inputs"]
        if not isinstance(value, dict) or set(value) != set(names):
            got = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise InputError(f"model {self.name} has {len(names)} inputs: send a JSON object "
                             f"{self.expected_shape()} (got {got})")
        arrays = {spec.name: self._array(value[spec.name], spec, False, prefix=f"input {spec.name!r}: ")
                  for spec in self.inputs}
        if len({len(a) for a in arrays.values()}) > 1:
            raise InputError("every input needs the same number N of rows; got "
                             + ", ".join(f"{k}: {len(a)}" for k, a in arrays.items()))
        return arrays

    def _array(self, value, spec: InputSpec, mnist: bool, prefix: str = "") -> np.ndarray:
        try:
            x = np.asarray(value, dtype="float64")
        except OverflowError:  # a whole number with hundreds of digits
            raise InputError(f"{prefix}a number is too large: inputs must be finite numbers") from None
        except (ValueError, TypeError, RecursionError):
            raise InputError(f"{prefix}inputs must be a rectangular array of numbers of shape "
                             f"{spec.text()}") from None
        shape = spec.shape
        fits = x.ndim == len(shape) and all(d is None or d == n for d, n in zip(shape, x.shape))
        if fits:
            x = x[None]
        elif mnist and x.ndim == 3 and x.shape[1:] == (28, 28):
            x = x.reshape((len(x), *shape))
        if x.ndim != len(shape) + 1 or not all(d is None or d == n for d, n in zip(shape, x.shape[1:])):
            raise InputError(f"{prefix}expected an array of shape {self.expected_shape()}, "
                             f"got shape {x.shape}")
        if len(x) == 0:
            raise InputError(f"{prefix}no inputs: expected an array of shape {spec.text()} with N >= 1")
        if len(x) > MAX_INPUTS:
            raise InputError(f"{len(x)} inputs in one request; at most {MAX_INPUTS}")
        if 0 in x.shape:
            raise InputError(f"{prefix}got shape {x.shape}: every axis needs at least one value")
        if not np.isfinite(x).all():
            raise InputError(f"{prefix}inputs must be finite numbers (no NaN or infinity)")
        if spec.index_limit is not None:
            if (x != np.round(x)).any() or x.min() < 0 or x.max() >= spec.index_limit:
                raise InputError(f"{prefix}this input is a category index read by an Embedding: whole "
                                 f"numbers from 0 to {spec.index_limit - 1}")
        if spec.dtype.startswith(("int", "uint")):
            if (x != np.round(x)).any() or np.abs(x).max() >= 2**31:
                raise InputError(f"{prefix}this input takes whole numbers ({spec.dtype})")
            return x.astype(spec.dtype)
        if np.abs(x).max() > np.finfo("float32").max:
            raise InputError(f"{prefix}a number is too large for float32 (over 3.4e38)")
        return x.astype("float32")

    # --- outputs -----------------------------------------------------------------
    def answer(self, outputs, top_k: int) -> dict:
        """The JSON answer for the raw model outputs of one request's batch:
        ``{"predictions": [...]}`` for one output, ``{"outputs": {name: [...]}}``
        for several. Raises :class:`OutputError` for NaN or infinite outputs."""
        if isinstance(outputs, dict):
            arrays = [np.asarray(outputs[o.name]) for o in self.outputs]
        elif isinstance(outputs, (list, tuple)):
            arrays = [np.asarray(a) for a in outputs]
        else:
            arrays = [np.asarray(outputs)]
        rows = [self._rows(spec, array, top_k) for spec, array in zip(self.outputs, arrays)]
        if len(rows) == 1:
            return {"predictions": rows[0]}
        return {"outputs": {spec.name: r for spec, r in zip(self.outputs, rows)}}

    def _rows(self, spec: OutputSpec, outputs: np.ndarray, top_k: int) -> list:
        outputs = np.asarray(outputs, dtype="float64").reshape(len(outputs), -1)
        if not np.isfinite(outputs).all():
            raise OutputError(f"model {self.name} gave NaN or infinity for this input (output "
                              f"{spec.name!r}); inputs far outside what it was trained on can cause this")
        if spec.kind == "values":
            if spec.units == 1:
                return [{"value": round(float(row[0]), 6)} for row in outputs]
            return [{"values": [round(float(v), 6) for v in row]} for row in outputs]
        return self.top_k(self.probabilities(outputs, spec), top_k, spec)

    def probabilities(self, outputs: np.ndarray, spec: OutputSpec | None = None) -> np.ndarray:
        """(N, classes) probabilities from a classifier output's raw values."""
        spec = spec or self.outputs[0]
        outputs = np.asarray(outputs, dtype="float64").reshape(len(outputs), -1)
        if spec.kind == "sigmoid" and spec.units == 1:
            return np.concatenate([1.0 - outputs, outputs], axis=1)
        if spec.kind == "logits":  # a classifier without a softmax layer
            shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
            return shifted / shifted.sum(axis=1, keepdims=True)
        return outputs  # softmax, or independent sigmoids (several labels may apply)

    def top_k(self, probabilities: np.ndarray, k: int, spec: OutputSpec | None = None) -> list[list[dict]]:
        names = (spec or self.outputs[0]).class_names
        k = min(k, probabilities.shape[1])
        answers = []
        for row in probabilities:
            best = np.argsort(row)[::-1][:k]
            answers.append([{"label": names[i], "class": int(i),
                             "probability": round(float(row[i]), 6)} for i in best])
        return answers


def _kind(shape: tuple) -> str:
    if shape in ((28, 28, 1), (784,), (28, 28)):
        return "mnist"
    if len(shape) == 3 and shape[2] in (1, 3):
        if None not in shape:
            return "rgb" if shape[2] == 3 else "gray"
        if shape[0] is None and shape[1] is None:
            return "rgb_any" if shape[2] == 3 else "gray_any"
    return "vector"


#: Layers that move or copy their input's numbers without changing them: an Embedding behind
#: them still reads the model input's values as its indices.
_PASS_THROUGH = ("Reshape", "Flatten", "Permute", "RepeatVector", "Cropping1D", "Identity", "InputLayer")


def _source_input(tensor, inputs: list):
    """The model input ``tensor`` is, or is made from by pass-through layers only (else None)."""
    for _ in range(32):  # a chain, not a graph search: each pass-through layer has one input
        for candidate in inputs:
            if tensor is candidate or getattr(tensor, "name", None) == candidate.name:
                return candidate
        try:
            layer = tensor._keras_history[0]
            if type(layer).__name__ not in _PASS_THROUGH:
                return None
            tensor = layer.input
        except (AttributeError, IndexError, TypeError, ValueError):
            return None
    return None


def input_specs(model) -> list[InputSpec]:
    """Name, shape and dtype of every model input; an input an Embedding layer reads (straight,
    or through layers that only reshape or copy it) carries the number of rows of its table."""
    tensors = list(model.inputs)
    limits: dict[str, int] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Embedding):
            try:
                source = _source_input(layer.input, tensors)
            except (AttributeError, ValueError):  # shared layer: several inputs
                continue
            if source is not None:
                limits[source.name] = min(limits.get(source.name, layer.input_dim), layer.input_dim)
    return [InputSpec(t.name, tuple(t.shape[1:]), str(t.dtype), limits.get(t.name)) for t in tensors]


def _activation(model, tensor) -> str:
    """The name of the activation that produces an output tensor ("linear" if none)."""
    try:
        layer = tensor._keras_history[0]
    except (AttributeError, IndexError, TypeError):
        layer = model.layers[-1]
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    function = getattr(layer, "activation", None)
    return getattr(function, "__name__", "linear") if function is not None else "linear"


def output_specs(model, class_names: list[str] | None) -> list[OutputSpec]:
    """How each output is answered. Softmax and sigmoid outputs are probabilities;
    a linear output is a value (a regression), unless class names were given
    (run.json's dataset, or --labels): then it is a classifier's logits."""
    shapes = model.output_shape
    shapes = list(shapes.values()) if isinstance(shapes, dict) else shapes
    shapes = shapes if isinstance(shapes, list) else [shapes]
    tensors = list(model.outputs)
    names = list(getattr(model, "output_names", None) or [])
    specs = []
    for i, (shape, tensor) in enumerate(zip(shapes, tensors)):
        name = names[i] if i < len(names) else f"output_{i}"
        if len(shape) != 2 or shape[-1] is None:
            raise ModelLoadError(f"model {model.name} has output shape {tuple(shape)} ({name}); the "
                                 "service answers for outputs of shape (N, classes) or (N, values)")
        units = int(shape[-1])
        activation = _activation(model, tensor)
        if activation in ("softmax", "sigmoid"):
            kind = activation
        elif class_names and len(tensors) == 1:
            kind = "logits"
        else:
            kind = "values"
        count = 2 if (kind == "sigmoid" and units == 1) else units
        labels = tuple(class_names) if (class_names and len(tensors) == 1) else tuple(
            str(c) for c in range(count))
        if kind != "values" and len(labels) != count:
            raise ModelLoadError(f"{len(labels)} class names for a model with {count} classes")
        specs.append(OutputSpec(name, units, kind, labels if kind != "values" else ()))
    return specs


def check_weights(model) -> None:
    """Refuse a model whose weights hold NaN or infinity: every answer would be NaN."""
    for variable in model.weights:
        values = np.asarray(keras.ops.convert_to_numpy(variable))
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ModelLoadError(f"model {model.name} has NaN or infinite weights (in "
                                 f"{getattr(variable, 'path', variable.name)}), so every answer would be "
                                 "NaN: retrain it (a learning rate that is too high often causes this)")


def read_labels(path: str | Path) -> list[str]:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ModelLoadError(f"cannot read labels file {path}: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise ModelLoadError(f"labels file {path} is not a text file: write one class name per line")
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise ModelLoadError(f"labels file {path} is empty: write one class name per line")
    return labels


def _run_class_names(run_json: Path) -> tuple[list[str] | None, str]:
    """The class names a run folder's ``run.json`` gives, and where they came from: its own
    ``class_names`` list (written by every image run, a learner's own classes included),
    else the classes of the built-in dataset it names."""
    try:
        record = json.loads(run_json.read_text())
    except (OSError, ValueError):
        return None, ""
    if not isinstance(record, dict):
        raise ModelLoadError(f"{run_json} holds a JSON {type(record).__name__}, not the object a "
                             "chapter writes; remove it, or give the .keras file itself")
    listed = record.get("class_names")
    dataset = record.get("dataset")
    if isinstance(listed, list) and listed and all(isinstance(n, str | int) for n in listed):
        return [str(n) for n in listed], "class names from run.json" + (
            f" (dataset {dataset})" if isinstance(dataset, str) else "")
    names = DATASET_CLASSES.get(dataset) if isinstance(dataset, str) else None
    return (list(names), f"class names from run.json (dataset {dataset})") if names else (None, "")


def load_from_path(path: str | Path, labels: str | Path | None = None, safe_mode: bool = True) -> ServedModel:
    """A model from a ``.keras`` file or a run folder."""
    file = find_model_file(path)
    names = read_labels(labels) if labels else None  # a bad labels file fails before the model loads
    model = load_model_file(file, safe_mode=safe_mode)
    check_weights(model)
    notes = []
    run_json = file.parent / "run.json"
    if names is None and run_json.is_file():
        names, source = _run_class_names(run_json)
        if names:
            notes.append(source)
    served = ServedModel(model, str(file), [], "vector", notes=notes, inputs=input_specs(model),
                         outputs=output_specs(model, names))
    if not served.multi_input:
        served.kind = _kind(served.input_shape)
    heads = [o for o in served.outputs if o.kind != "values"]
    served.class_names = list(heads[0].class_names) if len(served.outputs) == 1 and heads else []
    if labels and not heads:
        raise ModelLoadError(f"--labels names classes, but model {model.name} answers values (a linear "
                             "output with no class names); leave out --labels")
    for o in served.outputs:
        if o.kind == "values":
            notes.append(f"output {o.name!r} has no softmax or sigmoid: answered as values, not "
                         "probabilities")
        elif o.kind == "logits":
            notes.append(f"output {o.name!r} has no softmax: its scores are turned into probabilities")
    return served


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
    return ServedModel(model, source, names, "rgb", preprocess=preprocess, notes=notes,
                       outputs=[OutputSpec(model.output_names[0] if getattr(model, "output_names", None)
                                           else "predictions", 1000, "softmax", tuple(names))])
