"""Chapter 3: a runnable tour of the Keras model API.

Four parts, each runnable on its own with ``--part``:

* ``api``: one small network (8 inputs -> 16 -> 8 -> 3 classes) built three ways,
  with ``keras.Sequential``, the Functional API and a ``keras.Model`` subclass;
  the parameter counts must agree with each other and with the hand count
  (307), and the shape of the data is followed layer by layer. Also: what the
  common weight initialisers give.
* ``functional``: a network Sequential cannot express, with two inputs (six
  numbers and a category) and two outputs (a class and a number), each output
  with its own loss, trained on generated data.
* ``activations``: every activation function next to its derivative, computed
  by the backend's automatic differentiation, in one PNG grid.
* ``losses``: the "last-layer activation + loss" table as six small trainings,
  one per kind of problem, each printing its falling loss and a test metric.

    python mlp/model_api.py                      # all four parts, about 20 s of CPU time
    python mlp/model_api.py --part activations   # only the activation grid
    python mlp/model_api.py --backend torch --epochs 10

Each run leaves ``outputs/model_api/<time>_<part>/`` with run.json,
history.csv (one row per epoch, a column per example and metric),
activations.png/.csv, losses.csv, loss_curves.png, model.keras (the
two-input model) and report.html.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `utils` imports from any folder

from collections.abc import Callable  # noqa: E402

from utils import cli, report, runs  # noqa: E402
from utils.errors import ShapeMismatchError  # noqa: E402
from utils.lazy import deferred, keras, lazy  # noqa: E402  (Keras loads on first use, after the flags)
from utils.plots import plt  # noqa: E402  (pyplot on the headless backend, imported on first use)

np, pd = lazy("numpy"), lazy("pandas")
layers, ops = lazy("keras.layers"), lazy("keras.ops")
EveryNEpochsPrinter = lazy("utils.callbacks", "EveryNEpochsPrinter")
StopOnNaN = lazy("utils.callbacks", "StopOnNaN")

CHAPTER = "model_api"
PARTS = ("api", "functional", "activations", "losses")

# --- Part 1: one network, three ways to write it -----------------------------------------

FEATURES, HIDDEN_1, HIDDEN_2, CLASSES, DROPOUT = 8, 16, 8, 3, 0.2


def dense_params(inputs: int, units: int) -> int:
    """A Dense layer holds one weight per (input, unit) pair plus one bias per unit."""
    return inputs * units + units


# 8*16+16 = 144, 16*8+8 = 136, 8*3+3 = 27; Dropout has no weights.
EXPECTED_PARAMS = (dense_params(FEATURES, HIDDEN_1) + dense_params(HIDDEN_1, HIDDEN_2)
                   + dense_params(HIDDEN_2, CLASSES))


def build_sequential(features: int = FEATURES) -> keras.Model:
    """A stack: each layer feeds the next; only the input's shape is given."""
    return keras.Sequential([
        keras.Input(shape=(features,)),
        layers.Dense(HIDDEN_1, activation="relu", name="hidden_1"),
        layers.Dropout(DROPOUT, name="dropout"),
        layers.Dense(HIDDEN_2, activation="relu", name="hidden_2"),
        layers.Dense(CLASSES, activation="softmax", name="output"),
    ], name="sequential")


def build_functional(features: int = FEATURES) -> keras.Model:
    """The same stack, written as calls on symbolic tensors from Input to output."""
    inputs = keras.Input(shape=(features,), name="features")
    x = layers.Dense(HIDDEN_1, activation="relu", name="hidden_1")(inputs)   # (None, 16)
    x = layers.Dropout(DROPOUT, name="dropout")(x)                            # (None, 16)
    x = layers.Dense(HIDDEN_2, activation="relu", name="hidden_2")(x)        # (None, 8)
    outputs = layers.Dense(CLASSES, activation="softmax", name="output")(x)  # (None, 3)
    return keras.Model(inputs, outputs, name="functional")


@deferred
def SmallNet():  # a Keras class, defined once Keras is loaded
    class SmallNet(keras.Model):
        """The same stack as a subclass: layers made in __init__, the forward pass in call()."""

        def __init__(self, classes: int = CLASSES, **kwargs):
            super().__init__(**kwargs)
            self.hidden_1 = layers.Dense(HIDDEN_1, activation="relu", name="hidden_1")
            self.dropout = layers.Dropout(DROPOUT, name="dropout")
            self.hidden_2 = layers.Dense(HIDDEN_2, activation="relu", name="hidden_2")
            self.classifier = layers.Dense(classes, activation="softmax", name="output")

        def call(self, inputs, training=False):
            # Plain Python runs here, so a branch or a loop could depend on the data;
            # the price is that Keras cannot see the graph before the model is called.
            x = self.hidden_1(inputs)
            x = self.dropout(x, training=training)  # active only while fitting
            x = self.hidden_2(x)
            return self.classifier(x)

    return SmallNet


def build_subclassed(features: int = FEATURES) -> keras.Model:
    """A SmallNet, built by calling it once: it has no weights until it sees a batch."""
    model = SmallNet(name="subclassed")
    model(np.zeros((4, features), dtype="float32"))
    return model


def build_all(features: int = FEATURES) -> dict[str, keras.Model]:
    return {"sequential": build_sequential(features), "functional": build_functional(features),
            "subclassed": build_subclassed(features)}


def check_parameter_counts(models: dict[str, keras.Model], expected: int = EXPECTED_PARAMS) -> dict[str, int]:
    """Every model's parameter count; raises ShapeMismatchError unless all equal ``expected``."""
    counts = {name: model.count_params() for name, model in models.items()}
    wrong = {name: n for name, n in counts.items() if n != expected}
    if wrong:
        raise ShapeMismatchError(f"parameter counts {wrong} differ from the hand count {expected:,}")
    return counts


def same_function(models: dict[str, keras.Model], seed: int = 0) -> float:
    """Copy the first model's weights into the others; the largest output difference on one batch.

    Zero means the three builds are the same function, not just the same size.
    """
    names = list(models)
    reference = models[names[0]]
    batch = np.random.default_rng(seed).normal(size=(32, FEATURES)).astype("float32")
    expected = ops.convert_to_numpy(reference(batch))
    worst = 0.0
    for name in names[1:]:
        models[name].set_weights(reference.get_weights())
        worst = max(worst, float(np.abs(ops.convert_to_numpy(models[name](batch)) - expected).max()))
    return worst


def _shape(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def shape_flow(model: keras.Model, input_shape: tuple = (None, FEATURES), batch: int = 4) -> list[dict]:
    """Follow the data through the layers: one row per layer.

    ``symbolic``: what ``compute_output_shape`` infers from the previous layer's
    shape alone (the batch size stays ``None``, unknown); ``with a batch``: the
    shape of a real tensor of ``batch`` samples after the layer.
    """
    shape = tuple(input_shape)
    x = np.zeros((batch, *input_shape[1:]), dtype="float32")
    rows = []
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):  # a functional model lists its input as a layer
            continue
        out_shape = layer.compute_output_shape(shape)
        x = layer(x)
        rows.append({"layer": layer.name, "type": type(layer).__name__, "input": _shape(shape),
                     "output (symbolic)": _shape(out_shape), f"output (batch of {batch})": _shape(x.shape),
                     "params": layer.count_params()})
        shape = out_shape
    return rows


# Each initialiser's expected standard deviation for a (fan_in, fan_out) kernel.
INITIALIZERS: dict[str, tuple[str, Callable[[int, int], float]]] = {
    "glorot_uniform": ("sqrt(2 / (fan_in + fan_out))", lambda i, o: (2 / (i + o)) ** 0.5),
    "he_normal": ("sqrt(2 / fan_in)", lambda i, o: (2 / i) ** 0.5),
    "lecun_normal": ("sqrt(1 / fan_in)", lambda i, o: (1 / i) ** 0.5),
    "random_normal": ("0.05 (fixed)", lambda i, o: 0.05),
    "random_uniform": ("0.05 / sqrt(3) (fixed +-0.05)", lambda i, o: 0.05 / 3 ** 0.5),
    "orthogonal": ("sqrt(1 / fan_in) for a square kernel", lambda i, o: (1 / i) ** 0.5),
    "zeros": ("0 (every unit identical)", lambda i, o: 0.0),
}


def initializer_table(fan_in: int = 256, fan_out: int = 256, seed: int = 0) -> list[dict]:
    """Draw one kernel per initialiser; its spread and what it does to unit-variance inputs."""
    x = np.random.default_rng(seed).normal(size=(1000, fan_in)).astype("float32")
    rows = []
    for name, (formula, expected) in INITIALIZERS.items():
        init = keras.initializers.get({"class_name": name, "config": {"seed": seed}}
                                      if name != "zeros" else name)
        kernel = ops.convert_to_numpy(init(shape=(fan_in, fan_out)))
        rows.append({"initializer": name, "expected std": formula,
                     "expected": round(expected(fan_in, fan_out), 4),
                     "measured std": round(float(kernel.std()), 4),
                     "output std (x ~ N(0,1))": round(float((x @ kernel).std()), 3)})
    return rows


def summary_text(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line), line_length=80)
    return "\n".join(lines)


def run_api(args, show: bool) -> dict:
    models = build_all()
    summaries = {name: summary_text(model) for name, model in models.items()}
    if show:
        for text in summaries.values():
            print(text)
    counts = check_parameter_counts(models)
    gap = same_function(models, args.seed)
    flow = shape_flow(models["sequential"])
    inits = initializer_table(seed=args.seed)
    print("\nparameters: " + ", ".join(f"{name} {n:,}" for name, n in counts.items())
          + f"; by hand {dense_params(FEATURES, HIDDEN_1)} + {dense_params(HIDDEN_1, HIDDEN_2)} + "
          f"{dense_params(HIDDEN_2, CLASSES)} = {EXPECTED_PARAMS}: all agree")
    print(f"same weights, same outputs: largest difference between the three builds {gap:.1e}")
    print(f"\nshape of the data, layer by layer (sequential, input {_shape((None, FEATURES))}):")
    print(pd.DataFrame(flow).to_string(index=False))
    print("\ninitialisers, one 256x256 kernel each:")
    print(pd.DataFrame(inits).to_string(index=False))
    return {"counts": counts, "gap": gap, "flow": flow, "initializers": inits, "summaries": summaries}


# --- Part 2: two inputs, two outputs -----------------------------------------------------

NUMBERS, CATEGORIES, LABELS = 6, 5, 3


def make_two_input_data(samples: int, seed: int = 0):
    """Six numbers and a category (0-4) per sample -> a class (0-2) and a value.

    The category shifts both targets, so the model has to use both inputs.
    Returns dicts keyed by the model's input and output names.
    """
    rng = np.random.default_rng(seed)
    setup = np.random.default_rng(1234)  # the same hidden rule for every sample set
    w_class = setup.normal(size=(NUMBERS, LABELS))
    cat_class = setup.normal(scale=1.5, size=(CATEGORIES, LABELS))
    w_value = setup.normal(size=NUMBERS)
    cat_value = setup.normal(scale=2.0, size=CATEGORIES)
    numbers = rng.normal(size=(samples, NUMBERS)).astype("float32")
    category = rng.integers(0, CATEGORIES, size=(samples, 1))
    label = np.argmax(numbers @ w_class + cat_class[category[:, 0]], axis=1)
    value = numbers @ w_value + cat_value[category[:, 0]] + rng.normal(scale=0.3, size=samples)
    x = {"numbers": numbers, "category": category.astype("int32")}
    y = {"label": label.astype("int32"), "value": value.astype("float32")[:, None]}
    return x, y


def build_two_input_model(numbers: int = NUMBERS, categories: int = CATEGORIES,
                          labels: int = LABELS) -> keras.Model:
    """numbers (None, 6) + category (None, 1) -> label (None, 3) and value (None, 1)."""
    numbers_in = keras.Input(shape=(numbers,), name="numbers")
    category_in = keras.Input(shape=(1,), dtype="int32", name="category")
    # Each category gets a learned vector of 4 numbers: (None, 1) -> (None, 1, 4) -> (None, 4)
    embedded = layers.Flatten(name="flatten")(layers.Embedding(categories, 4, name="embedding")(category_in))
    x = layers.Concatenate(name="merge")([numbers_in, embedded])             # (None, 10)
    x = layers.Dense(32, activation="relu", name="shared")(x)                # both heads read this
    label = layers.Dense(labels, activation="softmax", name="label")(x)      # class probabilities
    value = layers.Dense(1, name="value")(x)                                 # linear: any real number
    return keras.Model({"numbers": numbers_in, "category": category_in},
                       {"label": label, "value": value}, name="two_in_two_out")


def compile_two_input_model(model: keras.Model) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.01),
        loss={"label": "sparse_categorical_crossentropy", "value": "mse"},
        loss_weights={"label": 1.0, "value": 0.2},  # mse is in squared units; keep it from dominating
        metrics={"label": ["accuracy"], "value": ["mae"]},
    )
    return model


def train_two_input(epochs: int, batch_size: int = 32, seed: int = 0, show: bool = True,
                    samples: int = 1000):
    """Train on generated data; returns (model, history DataFrame, test metrics dict)."""
    keras.utils.set_random_seed(seed)
    x, y = make_two_input_data(samples, seed)
    x_test, y_test = make_two_input_data(500, seed + 1)
    model = compile_two_input_model(build_two_input_model())
    if show:
        print(summary_text(model))
    callbacks = [StopOnNaN()] + ([EveryNEpochsPrinter(epochs)] if show else [])
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=callbacks)
    metrics = model.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)
    return model, runs.history_frame(history.history), {k: float(v) for k, v in metrics.items()}


def run_functional(args, show: bool) -> dict:
    model, history, metrics = train_two_input(args.epochs, args.batch_size, args.seed, show)
    x_new, y_new = make_two_input_data(3, args.seed + 2)
    predicted = model.predict(x_new, verbose=0)  # a dict, like the outputs the model was built with
    print(f"\ntwo inputs, two outputs, test set of 500: label accuracy {metrics['label_accuracy']:.3f}, "
          f"value MAE {metrics['value_mae']:.3f} (label loss {metrics['label_loss']:.3f}, "
          f"value loss (mse) {metrics['value_loss']:.3f})")
    print("predict() returns " + ", ".join(f"{k}: {v.shape}" for k, v in predicted.items()))
    for i in range(3):
        print(f"  sample {i}: category {x_new['category'][i, 0]}, class {predicted['label'][i].argmax()} "
              f"(true {y_new['label'][i]}), value {predicted['value'][i, 0]:+.2f} "
              f"(true {y_new['value'][i, 0]:+.2f})")
    return {"model": model, "history": history, "metrics": metrics,
            "summary": summary_text(model)}


# --- Part 3: activation functions and their derivatives ----------------------------------


def _softmax_pair(v):
    # softmax needs a vector: take [x, 0] and show the first probability as x varies
    # (with two classes this is exactly sigmoid(x)).
    return keras.activations.softmax(ops.stack([v, ops.zeros_like(v)], axis=-1))[..., 0]


# name -> (function of a tensor, where it is used); lazy(...) is keras.activations.<name>
ACTIVATIONS: dict[str, tuple[Callable, str]] = {
    "sigmoid": (lazy("keras.activations", "sigmoid"), "output: binary / multi-label"),
    "tanh": (lazy("keras.activations", "tanh"), "recurrent cells"),
    "relu": (lazy("keras.activations", "relu"), "hidden layers (default choice)"),
    "leaky_relu": (lazy("keras.activations", "leaky_relu"), "hidden; keeps a gradient below 0"),
    "elu": (lazy("keras.activations", "elu"), "hidden"),
    "selu": (lazy("keras.activations", "selu"), "hidden, self-normalising nets"),
    "softplus": (lazy("keras.activations", "softplus"), "smooth relu; positive outputs"),
    "softsign": (lazy("keras.activations", "softsign"), "like tanh, slower saturation"),
    "silu (swish)": (lazy("keras.activations", "silu"), "hidden (EfficientNet)"),
    "gelu": (lazy("keras.activations", "gelu"), "hidden (transformers)"),
    "softmax([x, 0])[0]": (_softmax_pair, "output: one class of many"),
    "linear": (lazy("keras.activations", "linear"), "output: regression"),
    "hard_sigmoid": (lazy("keras.activations", "hard_sigmoid"), "cheap sigmoid (mobile)"),
    "exponential": (lazy("keras.activations", "exponential"), "output: positive rates"),
}

# Where a function has a corner, autodiff returns the backend's convention, and
# a numerical derivative straddles the corner; the check skips these points.
KINKS = {"relu": (0.0,), "leaky_relu": (0.0,), "selu": (0.0,), "hard_sigmoid": (-3.0, 3.0)}


def derivative(fn: Callable, x: np.ndarray) -> np.ndarray:
    """f'(x) for an element-wise ``fn`` by the backend's automatic differentiation.

    Each output depends only on its own input, so the gradient of sum(f(x))
    with respect to x is exactly the vector of f'(x_i).
    """
    backend = keras.backend.backend()
    x = np.asarray(x, dtype="float32")
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: ops.sum(fn(v)))(ops.convert_to_tensor(x)))
    if backend == "tensorflow":
        import tensorflow as tf

        v = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(v)
            total = ops.sum(fn(v))
        return tape.gradient(total, v).numpy()
    if backend == "torch":
        v = ops.convert_to_tensor(x).detach().requires_grad_(True)
        ops.sum(fn(v)).backward()
        return v.grad.detach().cpu().numpy()
    raise NotImplementedError(f"no automatic differentiation wired up for backend {backend!r}")


def numerical_derivative(fn: Callable, x: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Central difference (f(x+h) - f(x-h)) / 2h, the check on ``derivative``."""
    x = np.asarray(x, dtype="float32")
    up = ops.convert_to_numpy(fn(ops.convert_to_tensor(x + h)))
    down = ops.convert_to_numpy(fn(ops.convert_to_tensor(x - h)))
    return (up - down) / (2 * h)


def activation_curves(x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (f(x), f'(x)) for every entry of ACTIVATIONS."""
    return {name: (ops.convert_to_numpy(fn(ops.convert_to_tensor(np.asarray(x, "float32")))),
                   derivative(fn, x))
            for name, (fn, _) in ACTIVATIONS.items()}


def activation_table(points=(-4.0, 0.0, 4.0), grid: np.ndarray | None = None) -> list[dict]:
    """One row per activation: its range on the grid, f' at ``points``, and the check
    that autodiff agrees with a central difference (away from corners)."""
    grid = np.linspace(-4, 4, 161, dtype="float32") if grid is None else grid
    rows = []
    for name, (fn, use) in ACTIVATIONS.items():
        values = ops.convert_to_numpy(fn(ops.convert_to_tensor(grid)))
        slope = derivative(fn, grid)
        smooth = np.ones_like(grid, dtype=bool)
        for kink in KINKS.get(name, ()):
            smooth &= np.abs(grid - kink) > 0.01
        gap = np.abs(slope - numerical_derivative(fn, grid)) / (1 + np.abs(slope))
        at = derivative(fn, np.array(points, dtype="float32"))
        rows.append({"activation": name, "used for": use,
                     "min f": round(float(values.min()), 3), "max f": round(float(values.max()), 3),
                     **{f"f'({p:g})": round(float(d), 4) for p, d in zip(points, at)},
                     "max f'": round(float(slope.max()), 3),
                     "autodiff vs numeric": float(gap[smooth].max())})
    return rows


def plot_activations(curves: dict, x: np.ndarray, path: Path, backend: str) -> Path:
    """A 4x4 grid: each function solid, its derivative dashed, on the same axes."""
    columns = 4
    rows = -(-(len(curves) + 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(12, 2.4 * rows), sharex=True, sharey=True)
    flat = axes.ravel()
    for ax, (name, (y, dy)) in zip(flat, curves.items()):
        ax.axhline(0, color="#bbb", lw=0.8)
        ax.axvline(0, color="#bbb", lw=0.8)
        ax.plot(x, y, color="#e24a33", lw=2, label="f(x)")
        ax.plot(x, dy, color="#348abd", lw=1.6, ls="--", label="f'(x)")
        ax.set_title(name, fontsize=11)
        ax.set_ylim(-2, 4.5)  # one scale for all; exponential leaves it at x = 1.5
        ax.grid(alpha=0.3)
    flat[len(curves)].legend(*flat[0].get_legend_handles_labels(), loc="center", frameon=False,
                             fontsize=11, title=f"f'(x) by autodiff\n({backend} backend)")
    for ax in flat[len(curves):]:
        ax.axis("off")
    fig.suptitle("Keras activation functions (solid) and their derivatives (dashed), x in [-4, 4]")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return path


def run_activations(run: runs.Run, show: bool) -> dict:
    x = np.linspace(-4, 4, 401, dtype="float32")
    curves = activation_curves(x)
    path = plot_activations(curves, x, run.path("activations.png"), keras.backend.backend())
    table = activation_table()
    pd.DataFrame(table).to_csv(run.path("activations.csv"), index=False)
    frame = pd.DataFrame(table).drop(columns="used for")
    print(f"\nactivations, derivatives by {keras.backend.backend()} autodiff "
          "(last column: largest relative gap to a central difference, corners skipped):")
    print(frame.to_string(index=False, formatters={"autodiff vs numeric": "{:.1e}".format}))
    print(f"activation grid: {runs.shown_path(path)}")
    return {"table": table, "png": path}


# --- Part 4: last-layer activation + loss, per kind of problem ---------------------------

INPUTS = 10


@dataclass
class LossExample:
    """One row of the table: a problem, the output layer and loss it calls for."""

    key: str
    problem: str
    last_activation: str
    units: int
    loss: str
    metric: str
    data: str  # which generator in make_problem_data

    def decode(self, output: np.ndarray) -> str:
        """Turn one row of predict() output into the answer a user wants."""
        if self.data == "binary":
            return f"p={output[0]:.2f} -> class {int(output[0] > 0.5)}"
        if self.data == "multiclass":
            return f"argmax -> class {int(output.argmax())} (p={output.max():.2f})"
        if self.data == "multilabel":
            return "p>0.5 -> labels {" + ",".join(str(i) for i in np.flatnonzero(output > 0.5)) + "}"
        return f"{output[0]:+.3f}"

    def truth(self, target: np.ndarray) -> str:
        """The target of one sample, written like ``decode`` writes the answer."""
        if self.data == "multilabel":
            return "{" + ",".join(str(i) for i in np.flatnonzero(target > 0.5)) + "}"
        if self.data == "multiclass":
            return str(int(target.argmax()) if np.ndim(target) else int(target))  # one-hot or index
        if self.data == "binary":
            return str(int(np.ravel(target)[0]))
        return f"{np.ravel(target)[0]:+.3f}"


LOSS_EXAMPLES = [
    LossExample("binary", "binary classification", "sigmoid", 1, "binary_crossentropy", "accuracy",
                "binary"),
    LossExample("multiclass", "multi-class, single-label", "softmax", 4,
                "sparse_categorical_crossentropy", "accuracy", "multiclass"),
    LossExample("multiclass_onehot", "multi-class, single-label (one-hot targets)", "softmax", 4,
                "categorical_crossentropy", "accuracy", "multiclass"),
    LossExample("multilabel", "multi-class, multi-label", "sigmoid", 5, "binary_crossentropy",
                "binary_accuracy", "multilabel"),
    LossExample("regression", "regression to any value", "linear", 1, "mse", "mae", "regression"),
    LossExample("bounded", "regression to values in [0, 1]", "sigmoid", 1, "mse", "mae", "bounded"),
]
EXAMPLES = {e.key: e for e in LOSS_EXAMPLES}


def make_problem_data(kind: str, samples: int, seed: int = 0, one_hot: bool = False):
    """Generated (x, y) for one kind of problem; x is (samples, 10) standard normal.

    The hidden rule (the weights) is fixed, so training and test sets drawn with
    different seeds follow the same rule.
    """
    rng = np.random.default_rng(seed)
    rule = np.random.default_rng({"binary": 1, "multiclass": 2, "multilabel": 3, "regression": 4,
                                  "bounded": 5}[kind])
    x = rng.normal(size=(samples, INPUTS)).astype("float32")
    noise = rng.normal(scale=0.3, size=samples)
    if kind == "binary":        # y: (samples, 1) of 0/1
        y = (x @ rule.normal(size=INPUTS) / 3 + noise > 0).astype("float32")[:, None]
    elif kind == "multiclass":  # y: (samples,) class index 0-3, or (samples, 4) one-hot
        y = np.argmax(x @ rule.normal(size=(INPUTS, 4)) + rng.normal(scale=0.3, size=(samples, 4)), axis=1)
        y = np.eye(4, dtype="float32")[y] if one_hot else y.astype("int32")
    elif kind == "multilabel":  # y: (samples, 5) of 0/1, any number of labels per sample
        scores = x @ rule.normal(size=(INPUTS, 5)) / 3 + rule.normal(size=5)
        y = (scores + rng.normal(scale=0.3, size=(samples, 5)) > 0).astype("float32")
    elif kind == "regression":  # y: (samples, 1), any real number (std about 3)
        y = (x @ rule.normal(size=INPUTS) + np.sin(2 * x[:, 0]) + noise).astype("float32")[:, None]
    elif kind == "bounded":     # y: (samples, 1) in (0, 1), e.g. 0 broken .. 1 new
        y = (1 / (1 + np.exp(-(x @ rule.normal(size=INPUTS) / 2 + noise)))).astype("float32")[:, None]
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return x, y


def build_loss_example(example: LossExample) -> keras.Model:
    """The same hidden layer for every problem; only the output layer and loss change."""
    model = keras.Sequential([
        keras.Input(shape=(INPUTS,)),
        layers.Dense(32, activation="relu", name="hidden"),
        layers.Dense(example.units, activation=example.last_activation, name="output"),
    ], name=example.key)
    # Adam at 10x its default step size: a few epochs on small data are enough to see the loss fall.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss=example.loss,
                  metrics=[example.metric])
    return model


def train_loss_examples(epochs: int, batch_size: int = 32, seed: int = 0, keys=None,
                        show: bool = True, samples: int = 1000) -> tuple[list[dict], dict[str, pd.DataFrame]]:
    """Train each example briefly; returns (table rows, key -> history DataFrame)."""
    rows, histories = [], {}
    for example in LOSS_EXAMPLES:
        if keys is not None and example.key not in keys:
            continue
        one_hot = example.key == "multiclass_onehot"
        x, y = make_problem_data(example.data, samples, seed, one_hot)
        x_test, y_test = make_problem_data(example.data, 500, seed + 1, one_hot)
        keras.utils.set_random_seed(seed)  # same start for every example: the one-hot twin matches
        model = build_loss_example(example)
        start = time.perf_counter()
        history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[StopOnNaN()])
        seconds = time.perf_counter() - start
        test = model.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)
        # One sample: call the model directly; predict() is built for many batches
        # (and on TensorFlow traces a new function for every new model).
        output = ops.convert_to_numpy(model(x_test[:1], training=False))[0]
        losses = history.history["loss"]
        histories[example.key] = runs.history_frame(history.history)
        row = {"problem": example.problem, "last activation": example.last_activation,
               "loss": example.loss, "metric": example.metric,
               "first-epoch loss": round(float(losses[0]), 4), "last-epoch loss": round(float(losses[-1]), 4),
               "test metric": round(float(test[example.metric]), 4),
               "first test sample": f"{example.decode(output)} (true {example.truth(y_test[0])})",
               "fit seconds": round(seconds, 2)}
        rows.append(row)
        if show:
            print(f"{example.problem:<45} loss by epoch " + " ".join(f"{v:.4f}" for v in losses)
                  + f"  | test {example.metric} {row['test metric']:.4f}", flush=True)
    return rows, histories


def plot_loss_curves(histories: dict[str, pd.DataFrame], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(histories), figsize=(3 * len(histories), 2.8))
    for ax, (key, frame) in zip(np.atleast_1d(axes), histories.items()):
        ax.plot(frame["epoch"], frame["loss"], marker="o", color="#e24a33")
        ax.set_title(f"{key}\n{EXAMPLES[key].loss}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def run_losses(args, run: runs.Run, show: bool) -> dict:
    if show:
        print()
    rows, histories = train_loss_examples(args.epochs, args.batch_size, args.seed, show=show)
    pd.DataFrame(rows).to_csv(run.path("losses.csv"), index=False)
    plot = plot_loss_curves(histories, run.path("loss_curves.png"))
    shown = pd.DataFrame(rows).drop(columns=["first test sample", "fit seconds"])
    print(f"\nlast-layer activation and loss per problem ({args.epochs} epochs, 1,000 generated samples, "
          "metric on 500 new ones):")
    print(shown.to_string(index=False))
    print("\nfirst test sample, the model's output turned into an answer:")
    for row in rows:
        print(f"  {row['problem']:<45} {row['first test sample']}")
    return {"rows": rows, "histories": histories, "plot": plot}


# --- Putting it together -----------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    parser = cli.make_parser(
        "A tour of the Keras model API: Sequential, Functional and subclassed models, a two-input "
        "two-output network, activation functions with their derivatives, and the right last "
        "activation and loss for each kind of problem.",
        epochs=5, batch_size=32,
        epilog="example: python mlp/model_api.py --part losses --epochs 10",
    )
    parser.add_argument("--part", choices=(*PARTS, "all"), default="all",
                        help="run one part only: api (three builds, shapes, initialisers), functional "
                             "(two inputs, two outputs), activations (grid PNG), losses (the table)")
    return parser.parse_args(argv)


def run_parts(args, argv: list[str] | None = None) -> runs.RunResult:
    parts = PARTS if args.part == "all" else (args.part,)
    show = not args.quiet
    keras.utils.set_random_seed(args.seed)
    run = runs.Run(CHAPTER, args.part, args, argv)
    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}; parts: {', '.join(parts)}")
    done: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for part in parts:
        start = time.perf_counter()
        print(f"\n=== {part} ===")
        if part == "api":
            done[part] = run_api(args, show)
        elif part == "functional":
            done[part] = run_functional(args, show)
        elif part == "activations":
            done[part] = run_activations(run, show)
        else:
            done[part] = run_losses(args, run, show)
        seconds[part] = round(time.perf_counter() - start, 2)

    history = pd.DataFrame()
    metrics: dict[str, float] = {}
    sections = []
    if "api" in done:
        api = done["api"]
        metrics.update({f"params_{k}": v for k, v in api["counts"].items()})
        metrics["max_output_difference"] = api["gap"]
        sections += [
            ("One network, three ways", report.table(
                [{"build": k, "parameters": v} for k, v in api["counts"].items()])
             + report.preformatted("\n\n".join(api["summaries"].values()))),
            ("Shape of the data, layer by layer", report.table(api["flow"])),
            ("Initialisers (256x256 kernel)", report.table(api["initializers"])),
        ]
    if "functional" in done:
        fn = done["functional"]
        metrics.update({f"two_inputs_{k}": v for k, v in fn["metrics"].items()})
        history = _join(history, fn["history"], "two_inputs")
        sections.append(("Two inputs, two outputs", report.key_values(fn["metrics"])
                         + report.preformatted(fn["summary"])))
    if "activations" in done:
        sections.append(("Activation functions and their derivatives",
                         report.images([done["activations"]["png"]])
                         + report.table(done["activations"]["table"])))
    if "losses" in done:
        losses = done["losses"]
        for row in losses["rows"]:
            key = next(e.key for e in LOSS_EXAMPLES if e.problem == row["problem"])
            metrics[f"{key}_test_{EXAMPLES[key].metric}"] = row["test metric"]
            metrics[f"{key}_last_loss"] = row["last-epoch loss"]
        for key, frame in losses["histories"].items():
            history = _join(history, frame, key)
        sections.append(("Last-layer activation and loss per problem",
                         report.table(losses["rows"]) + report.images([losses["plot"]])))
    sections.append(("Run", report.key_values({"command": run.command, "backend": keras.backend.backend(),
                                               "seconds per part": seconds})))
    report.write_report(run.path("report.html"), "Chapter 3: the Keras model API", sections)
    model = done.get("functional", {}).get("model")
    return run.finish(model=model, history=history, metrics=metrics, parts=list(parts), part_seconds=seconds)


def _join(history: pd.DataFrame, frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Add one example's columns as ``<prefix>.<metric>``, aligned on the epoch."""
    renamed = frame.rename(columns={c: f"{prefix}.{c}" for c in frame.columns if c != "epoch"})
    return renamed if history.empty else history.merge(renamed, on="epoch", how="outer")


@cli.friendly_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    start = time.perf_counter()
    result = run_parts(args, argv)
    print(f"\nrun folder: {runs.shown_path(result.run_dir)}  ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
