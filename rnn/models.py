"""The forecasters: recurrent networks, a linear model, and two rules of thumb.

Every network reads a window of shape (window, 1), one scaled change per step, and
outputs one number: the scaled change expected over the horizon.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from utils.lazy import keras, lazy  # Keras is imported on first use, after the flags are read

np = lazy("numpy")
EpochTimer = lazy("utils.callbacks", "EpochTimer")
EveryNEpochsPrinter = lazy("utils.callbacks", "EveryNEpochsPrinter")
StopOnNaN = lazy("utils.callbacks", "StopOnNaN")


@dataclass(frozen=True)
class Cell:
    """A recurrent layer type and the facts the chapter states about it."""

    layer: type
    title: str
    gates: int  # weight blocks per unit: 1 (plain tanh), 3 (GRU), 4 (LSTM)

    def params(self, units: int, features: int) -> int:
        """Trainable weights of one layer: each block has input weights (features x units),
        recurrent weights (units x units) and a bias. Keras's GRU keeps two biases per block
        (``reset_after=True``, the cuDNN-compatible form)."""
        biases = 2 if self.title == "GRU" else 1
        return self.gates * units * (features + units + biases)


CELLS = {
    "simple_rnn": Cell(lazy("keras.layers", "SimpleRNN"), "SimpleRNN", 1),  # keras.layers.SimpleRNN
    "gru": Cell(lazy("keras.layers", "GRU"), "GRU", 3),
    "lstm": Cell(lazy("keras.layers", "LSTM"), "LSTM", 4),
}
MODELS = (*CELLS, "linear")


def build_model(name: str, input_shape: tuple[int, int], units: tuple[int, ...] = (32,)) -> keras.Model:
    """``name`` is a cell from :data:`CELLS` (stacked, one layer per entry of ``units``)
    or ``"linear"`` (one weight per step of the window plus a bias)."""
    layers: list = [keras.Input(shape=input_shape)]
    if name == "linear":
        layers += [keras.layers.Flatten(), keras.layers.Dense(1)]
        return keras.Sequential(layers, name="linear")
    cell = CELLS[name]
    for i, size in enumerate(units):
        # Every layer but the last hands its whole output sequence (batch, window, size) to
        # the next; the last returns only its final state (batch, size).
        layers.append(cell.layer(size, return_sequences=i < len(units) - 1))
    layers.append(keras.layers.Dense(1))
    return keras.Sequential(layers, name=f"{name}_" + "-".join(map(str, units)))


def expected_params(name: str, input_shape: tuple[int, int], units: tuple[int, ...] = (32,)) -> int:
    """The parameter count of :func:`build_model`, worked out by hand."""
    window, features = input_shape
    if name == "linear":
        return window * features + 1
    total, fan_in = 0, features
    for size in units:
        total += CELLS[name].params(size, fan_in)
        fan_in = size
    return total + fan_in + 1  # the Dense output: one weight per unit plus a bias


def add_network_arguments(group) -> None:
    """The training flags forecast.py and compare_cells.py share."""
    from utils import cli

    group.add_argument("--units", type=cli.positive_int, nargs="+", default=[32], metavar="UNITS",
                       help="units per recurrent layer; several numbers stack layers, e.g. --units 64 32")
    group.add_argument("--learning-rate", type=cli.positive_float, default=1e-3, help="Adam step size")
    group.add_argument("--patience", type=cli.positive_int, default=8,
                       help="epochs without a better validation loss before training stops early")


def train(model: keras.Model, windows, *, epochs: int, batch_size: int, seed: int, learning_rate: float,
          patience: int, verbose: bool, label: str = "") -> tuple[keras.callbacks.History, float]:
    """Fit on the training windows, stopping when validation loss stops improving.

    ``EarlyStopping(restore_best_weights=True)`` hands back the weights of the best
    validation epoch, so the test set never influences which weights are kept.
    Returns the history and the seconds ``fit`` took.
    """
    if keras.backend.backend() == "torch":
        # One step of a small recurrent layer is a few tiny matrix products: spreading each over
        # two OpenMP threads costs more than it saves, and the idle thread spins on a core that
        # the data pipeline needs, so epochs slow down many times over (benchmarks/rnn_torch_epochs.py).
        import torch

        torch.set_num_threads(1)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse", metrics=["mae"])
    callbacks = [EpochTimer(), StopOnNaN(),
                 keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)]
    if verbose:
        every = max(1, epochs // 10)
        callbacks.append(EveryNEpochsPrinter(epochs, every=every, unit=f"{label} epoch".strip()))
    start = time.perf_counter()
    history = model.fit(windows.dataset("train", batch_size, shuffle=True, seed=seed),
                        validation_data=windows.dataset("val", 256), epochs=epochs,
                        callbacks=callbacks, verbose=0, shuffle=False)  # the windows come shuffled
    return history, time.perf_counter() - start


def forecast(model: keras.Model, windows, split: str) -> np.ndarray:
    """The model's forecasts for every window of ``split``, in original units."""
    return windows.to_units(split, model.predict(windows.dataset(split, 1024), verbose=0))


# ---------------------------------------------------------------------------- baselines


def persistence(windows, split: str, season: int) -> np.ndarray:
    """Tomorrow looks like today: the last known value, whatever the horizon."""
    return windows.values[windows.last_time(split)]


def seasonal_naive(windows, split: str, season: int) -> np.ndarray:
    """The value one cycle before the target time ("same week last year"), or whole cycles
    further back when the horizon is longer than a cycle, so it is always already known."""
    cycles = math.ceil(windows.horizon / season)
    source = windows.target_time(split) - cycles * season
    if source.min() < 0:
        from rnn.data import SeriesError

        raise SeriesError(f"the {split} period starts less than one season ({season} steps) into the "
                          "series, so the seasonal naive forecast has no past value; use a longer series "
                          "or a smaller --season")
    return windows.values[source]


BASELINES = {"persistence": persistence, "seasonal_naive": seasonal_naive}


def errors(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """RMSE and MAE in the series' own units."""
    diff = np.asarray(predicted, dtype="float64") - np.asarray(actual, dtype="float64")
    return {"rmse": float(np.sqrt(np.mean(diff ** 2))), "mae": float(np.mean(np.abs(diff)))}


def input_gradients(model: keras.Model, inputs: np.ndarray) -> np.ndarray:
    """d(prediction)/d(input) for every step of every window: shape (N, window, 1).

    This is the signal back-propagation through time carries from the output back to
    each step; where it is tiny the network cannot learn from that step. Keras has no
    backend-neutral gradient call, so each backend's own autodiff is used.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(inputs)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(model(x, training=False))
        return tape.gradient(total, x).numpy()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        return np.asarray(jax.grad(lambda x: jnp.sum(model(x, training=False)))(jnp.asarray(inputs)))
    import torch

    x = torch.tensor(inputs, requires_grad=True)
    model(x, training=False).sum().backward()
    return x.grad.detach().cpu().numpy()
