"""ImageNet models from ``keras.applications``, and where their weights come from.

Keras downloads pretrained weights on first use into ``<Keras home>/models/``
(``~/.keras/models`` unless ``KERAS_HOME`` says otherwise) and reads them from
there afterwards. Without internet that download fails deep inside Keras with
a long traceback; :func:`resolve_weights` looks in the cache first and, when
the file is missing and cannot be fetched, says which file to get from where
and where to put it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from utils.cli import keras_home
from utils.errors import WeightsNotAvailableError
from utils.lazy import keras, lazy  # Keras is imported on first use, after the flags are read

BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
CLASS_INDEX_URL = "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
CLASS_INDEX_FILE = "imagenet_class_index.json"


@dataclass(frozen=True)
class Architecture:
    name: str
    constructor: Callable[..., keras.Model]
    preprocess: Callable  # the architecture's own preprocess_input
    size: int             # the input height and width its ImageNet weights were trained at
    folder: str           # below BASE_URL
    top_file: str         # weights with the 1000-class classifier
    notop_file: str       # the convolutional base only
    year: int
    paper: str

    def weights_file(self, include_top: bool = True, size: int | None = None) -> str:
        name = self.top_file if include_top else self.notop_file
        return name.format(size=size or self.size)

    def weights_url(self, include_top: bool = True, size: int | None = None) -> str:
        return f"{BASE_URL}{self.folder}/{self.weights_file(include_top, size)}"


def _arch(name, constructor, module, size, folder, top, notop, year, paper):
    preprocess = lazy("keras.applications", f"{module.__name__.rsplit('.', 1)[-1]}.preprocess_input")
    return Architecture(name, constructor, preprocess, size, folder, top, notop, year, paper)


class _Applications:
    """``keras.applications.<name>``, each looked up on first use: the table below needs no Keras."""

    def __getattr__(self, name):
        return lazy("keras.applications", name)


_A = _Applications()
_TF = "_weights_tf_dim_ordering_tf_kernels"
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    _arch("vgg16", _A.VGG16, _A.vgg16, 224, "vgg16", f"vgg16{_TF}.h5", f"vgg16{_TF}_notop.h5",
          2014, "Simonyan & Zisserman"),
    _arch("vgg19", _A.VGG19, _A.vgg19, 224, "vgg19", f"vgg19{_TF}.h5", f"vgg19{_TF}_notop.h5",
          2014, "Simonyan & Zisserman"),
    _arch("resnet50", _A.ResNet50, _A.resnet50, 224, "resnet", f"resnet50{_TF}.h5",
          f"resnet50{_TF}_notop.h5", 2015, "He et al."),
    _arch("inception_v3", _A.InceptionV3, _A.inception_v3, 299, "inception_v3",
          f"inception_v3{_TF}.h5", f"inception_v3{_TF}_notop.h5", 2015, "Szegedy et al."),
    _arch("xception", _A.Xception, _A.xception, 299, "xception", f"xception{_TF}.h5",
          f"xception{_TF}_notop.h5", 2016, "Chollet"),
    _arch("densenet121", _A.DenseNet121, _A.densenet, 224, "densenet", f"densenet121{_TF}.h5",
          f"densenet121{_TF}_notop.h5", 2016, "Huang et al."),
    _arch("mobilenet", _A.MobileNet, _A.mobilenet, 224, "mobilenet", "mobilenet_1_0_{size}_tf.h5",
          "mobilenet_1_0_{size}_tf_no_top.h5", 2017, "Howard et al."),
    _arch("mobilenet_v2", _A.MobileNetV2, _A.mobilenet_v2, 224, "mobilenet_v2",
          f"mobilenet_v2{_TF}_1.0_{{size}}.h5", f"mobilenet_v2{_TF}_1.0_{{size}}_no_top.h5",
          2018, "Sandler et al."),
)}


def cache_dirs() -> list[Path]:
    """Where Keras keeps downloaded weights: ``<Keras home>/models``, or ``/tmp/.keras/models``
    when the home folder is not writable (Keras falls back there)."""
    home = keras_home()
    dirs = [home / "models"]
    if home.exists() and not os.access(home, os.W_OK):
        dirs.append(Path("/tmp/.keras/models"))
    return dirs


def cached(file_name: str) -> Path | None:
    return next((d / file_name for d in cache_dirs() if (d / file_name).is_file()), None)


def downloads_allowed() -> bool:
    return os.environ.get("KERAS_TUTORIAL_OFFLINE", "") in ("", "0")


def missing_message(what: str, file_name: str, url: str, why: str) -> str:
    return (f"{what} needs {file_name}, which is not in {cache_dirs()[0]} and {why}. Fix: download "
            f"{url} on a machine with internet and copy it into {cache_dirs()[0]}/ "
            "(or give a weights file with --weights PATH, or --weights none for random weights)")


def fetch(file_name: str, url: str, what: str) -> Path:
    """A file Keras would download: from the cache, else downloaded now, else a one-line error."""
    found = cached(file_name)
    if found:
        return found
    if not downloads_allowed():
        raise WeightsNotAvailableError(missing_message(what, file_name, url,
                                                       "downloads are off (KERAS_TUTORIAL_OFFLINE=1)"))
    try:
        return Path(keras.utils.get_file(file_name, url, cache_subdir="models"))
    except Exception as err:  # get_file raises a bare Exception for network failures
        detail = str(err).splitlines()[0].split(" -- ")[-1][:120] if str(err) else type(err).__name__
        raise WeightsNotAvailableError(
            missing_message(what, file_name, url, f"downloading it failed ({detail})")) from None


def resolve_weights(arch: Architecture, weights: str, include_top: bool = True,
                    size: int | None = None) -> str | None:
    """Turn a ``--weights`` value into what the Keras constructor takes.

    ``imagenet``: make sure the file is cached (downloading it if allowed) and
    return "imagenet", so Keras finds it in its cache. ``none``: None (random
    weights). Anything else is a path to a weights file.
    """
    if weights.lower() == "none":
        return None
    if weights == "imagenet":
        fetch(arch.weights_file(include_top, size), arch.weights_url(include_top, size),
              f"{arch.name} with ImageNet weights")
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsNotAvailableError(f"weights file {path} does not exist: give 'imagenet', 'none' "
                                       "or the path of a .weights.h5 / .h5 file")
    return str(path)


def build(arch: Architecture, weights: str | None, **kwargs) -> keras.Model:
    """Call the architecture's constructor; a weights file that does not fit becomes a named error."""
    if weights in (None, "imagenet"):
        return arch.constructor(weights=weights, **kwargs)
    try:
        with warnings.catch_warnings():  # one warning per layer that does not fit: the error says it
            warnings.simplefilter("ignore")
            return arch.constructor(weights=weights, **kwargs)
    except (ValueError, OSError, KeyError) as err:
        reason = str(err).splitlines()[0].split(" Example error")[0][:160]
        raise WeightsNotAvailableError(
            f"cannot load {weights} into {arch.name} ({reason}): the file must hold weights saved "
            "from this same architecture") from None


def class_names(download: bool = True) -> list[str] | None:
    """The 1000 ImageNet class names from Keras's class index file, or None when it cannot
    be had. The cached copy (``<Keras home>/models/imagenet_class_index.json``) is always
    used when present; ``download=False`` never goes to the network, so a run with random
    weights offline prints no download attempt."""
    import json

    if download:
        try:
            path = fetch(CLASS_INDEX_FILE, CLASS_INDEX_URL, "naming the ImageNet classes")
        except WeightsNotAvailableError:
            return None
    else:
        path = cached(CLASS_INDEX_FILE)
        if path is None:
            return None
    index = json.loads(path.read_text())
    return [index[str(i)][1] for i in range(len(index))]
