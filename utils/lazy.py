"""Import heavy libraries on first use, so ``--help`` answers at once.

Importing Keras loads TensorFlow (and JAX or PyTorch): seconds of work that a
script asked only for ``--help``, or given a misspelt flag, should not wait
for. A chapter therefore writes::

    from utils.lazy import keras, lazy

    np = lazy("numpy")
    plots = lazy("utils.plots")

and uses ``keras``, ``np`` and ``plots`` exactly as if it had imported them:
the real import happens the first time an attribute is read (``keras.layers``)
or the object is called. By then ``main`` has parsed the flags and chosen the
backend (``--backend``), which must happen before Keras is imported.

``lazy("module", "name")`` stands for ``from module import name`` (for
example a class used as ``EpochTimer()``); ``name`` may be dotted
(``lazy("keras.applications", "vgg16.preprocess_input")``).

Keras (and every module that imports it) is imported through
:func:`utils.quiet.import_keras`, which drops TensorFlow's native start-up
INFO lines.
"""

from __future__ import annotations

import importlib
import sys
import types

# Modules whose import pulls in Keras; they are loaded after ``import_keras``
# so its filter catches the start-up chatter.
_KERAS_PREFIXES = ("keras", "tensorflow", "jax", "torch")


def _needs_keras(name: str) -> bool:
    return name.split(".")[0] in _KERAS_PREFIXES


class Lazy(types.ModuleType):
    """Stands in for ``import module`` (or ``from module import name``) until first use."""

    def __init__(self, module: str, name: str | None = None, *, keras: bool | None = None):
        super().__init__(module if name is None else f"{module}.{name}")
        object.__setattr__(self, "_lazy_spec", (module, name,
                                                _needs_keras(module) if keras is None else keras))
        object.__setattr__(self, "_lazy_target", None)

    def _lazy_load(self):
        target = object.__getattribute__(self, "_lazy_target")
        if target is None:
            module, name, keras = object.__getattribute__(self, "_lazy_spec")
            if keras and "keras" not in sys.modules:
                from utils.quiet import import_keras

                import_keras()
            target = importlib.import_module(module)
            for part in (name or "").split(".") if name else ():
                target = getattr(target, part)
            object.__setattr__(self, "_lazy_target", target)
        return target

    @property
    def loaded(self) -> bool:
        """Whether the real module has been imported through this stand-in."""
        return object.__getattribute__(self, "_lazy_target") is not None

    def __getattr__(self, attribute):
        if attribute.startswith("__") and attribute.endswith("__"):
            # help(), copy, pickle and doctest probe dunders; answer without importing
            if attribute in ("__path__", "__file__", "__wrapped__", "__loader__"):
                raise AttributeError(attribute)
        return getattr(self._lazy_load(), attribute)

    def __setattr__(self, attribute, value):
        setattr(self._lazy_load(), attribute, value)

    def __call__(self, *args, **kwargs):
        return self._lazy_load()(*args, **kwargs)

    def __instancecheck__(self, instance):  # isinstance(x, lazy("m", "SomeClass"))
        return isinstance(instance, self._lazy_load())

    def __dir__(self):
        return dir(self._lazy_load())

    def __repr__(self):
        module, name, _ = object.__getattribute__(self, "_lazy_spec")
        state = "loaded" if self.loaded else "not imported yet"
        return f"<lazy {module}{'' if name is None else ':' + name} ({state})>"


def lazy(module: str, name: str | None = None, *, keras: bool | None = None) -> Lazy:
    """A stand-in for ``module`` (or ``module.name``), imported on first use.

    ``keras=True`` says that importing ``module`` imports Keras, so Keras is
    loaded first through the chatter filter.
    """
    return Lazy(module, name, keras=keras)


class _Deferred(Lazy):
    def __init__(self, factory):
        super().__init__(factory.__module__, factory.__name__, keras=False)
        object.__setattr__(self, "_lazy_factory", factory)

    def _lazy_load(self):
        if not self.loaded:
            object.__setattr__(self, "_lazy_target", object.__getattribute__(self, "_lazy_factory")())
        return object.__getattribute__(self, "_lazy_target")


def deferred(factory):
    """Decorator: the object ``factory()`` returns, made on first use.

    For a class whose base comes from Keras (``class SmallNet(keras.Model)``),
    which cannot be defined before Keras is imported::

        @deferred
        def SmallNet():
            class SmallNet(keras.Model):
                ...
            return SmallNet

    ``SmallNet(...)`` and ``isinstance(x, SmallNet)`` then work as usual.
    """
    return _Deferred(factory)


#: ``keras`` itself, imported on first use.
keras = Lazy("keras")
