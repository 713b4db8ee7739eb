"""The churn network, and training it fast without changing the recipe.

The recipe is the original tutorial's: batches of 10 customers, 100 passes over the
training rows, reshuffled every pass, adam, binary cross-entropy. That is
72,000 weight updates on 7,200 rows, each one tiny (121 weights), so the time
goes on the bookkeeping around each update, not on the arithmetic:

- ``model.fit(x, y, batch_size=10)`` on NumPy arrays rebuilds its input
  pipeline every epoch and returns to Python after every batch: about 1 ms per
  update on TensorFlow (1.5 ms on a busy 2-core CPU).
- On JAX, :func:`fit` hands each whole pass (720 updates) to the compiler as one
  loop (``jax.lax.scan``), so Python is visited once per pass instead of once
  per batch: under 10 microseconds per update once compiled.
- On TensorFlow, :func:`fit` uses ``model.fit`` with one input stream built
  once and ``steps_per_execution`` (a whole pass per call), as the XOR chapter
  does.
- On PyTorch, where ``steps_per_execution`` must be 1, a plain PyTorch loop
  (``utils/torch_fit.py``) trains the same Keras model without ``fit``'s
  per-step bookkeeping.

Every path applies the same updates: same batches of 10, same order rules,
same optimiser state; ``benchmarks/churn.py`` checks the accuracy stays put.
"""

from __future__ import annotations

import math

from utils import torch_fit
from utils.lazy import keras, lazy

np = lazy("numpy")
OPTIMIZERS = {
    "adam": lazy("keras.optimizers", "Adam"),
    "rmsprop": lazy("keras.optimizers", "RMSprop"),
    "sgd": lazy("keras.optimizers", "SGD"),
}
# he_uniform: uniform in +-sqrt(6 / inputs), scaled for relu units.
# random_uniform: uniform in +-0.05, the original tutorial's init='uniform' (Keras 2).
INITIALIZERS = ("he_uniform", "glorot_uniform", "random_uniform")


def build_model(input_dim: int = 11, hidden: tuple[int, ...] = (6, 6),
                init: str = "he_uniform") -> keras.Model:
    """Dense relu layers of the given sizes, then one sigmoid unit (the
    probability of leaving). The default is the original tutorial's 11 -> 6 -> 6 -> 1,
    121 weights."""
    layers = [keras.Input(shape=(input_dim,))]
    layers += [keras.layers.Dense(units, activation="relu", kernel_initializer=init)
               for units in hidden]
    layers.append(keras.layers.Dense(1, activation="sigmoid", kernel_initializer=init))
    return keras.Sequential(layers, name="churn_mlp_" + "-".join(map(str, hidden)))


def compile_model(model: keras.Model, optimizer: str = "adam",
                  learning_rate: float | None = None, steps_per_execution: int = 1) -> keras.Model:
    kwargs = {} if learning_rate is None else {"learning_rate": learning_rate}
    model.compile(optimizer=OPTIMIZERS[optimizer](**kwargs), loss="binary_crossentropy",
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)
    return model


def fit(model: keras.Model, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
        seed: int, validation_data=None, callbacks=()) -> keras.callbacks.History:
    """Train like ``model.fit(x, y, batch_size, epochs, shuffle=True)``, faster.

    ``x`` is (rows, features), ``y`` is (rows, 1); ``model`` must be compiled.
    Returns a History with loss and accuracy per epoch (val_ too when
    ``validation_data`` is given), as ``model.fit`` does.
    """
    if keras.backend.backend() == "torch":
        return torch_fit.fit(model, x, y, epochs=epochs, batch_size=batch_size, seed=seed,
                             validation_data=validation_data, callbacks=callbacks)
    if keras.backend.backend() == "jax":
        return _fit_scanned(model, x, y, epochs=epochs, batch_size=batch_size, seed=seed,
                            validation_data=validation_data, callbacks=callbacks)
    return _fit_streamed(model, x, y, epochs=epochs, batch_size=batch_size, seed=seed,
                         validation_data=validation_data, callbacks=callbacks)


def _fit_streamed(model, x, y, *, epochs, batch_size, seed, validation_data, callbacks):
    import tensorflow as tf  # the input pipeline; works under every backend

    steps = math.ceil(len(x) / batch_size)
    # Shuffling before repeat() draws a new order every pass, as fit(shuffle=True) does.
    stream = (tf.data.Dataset.from_tensor_slices((x, y))
              .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
              .batch(batch_size).repeat())
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                  steps_per_execution=steps)
    return model.fit(stream, epochs=epochs, steps_per_epoch=steps, validation_data=validation_data,
                     validation_batch_size=1024, callbacks=list(callbacks), verbose=0,
                     shuffle=False)  # the stream shuffles itself


def _fit_scanned(model, x, y, *, epochs, batch_size, seed, validation_data, callbacks):
    """One compiled loop per pass: the "training loop from scratch" of the
    Keras JAX guide, with the per-batch step folded into ``jax.lax.scan``."""
    import jax
    import jax.numpy as jnp

    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.BinaryCrossentropy()  # what compile's "binary_crossentropy" means

    def loss_and_output(trainable, non_trainable, xb, yb):
        y_pred, non_trainable = model.stateless_call(trainable, non_trainable, xb, training=True)
        return loss_fn(yb, y_pred), (y_pred, non_trainable)

    gradient = jax.value_and_grad(loss_and_output, has_aux=True)

    def train_step(state, batch):
        trainable, non_trainable, optimizer_vars = state
        xb, yb = batch  # (batch, features), (batch, 1)
        (loss, (y_pred, non_trainable)), grads = gradient(trainable, non_trainable, xb, yb)
        trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads, trainable)
        correct = jnp.sum((y_pred > 0.5) == (yb > 0.5))
        return (trainable, non_trainable, optimizer_vars), (loss * xb.shape[0], correct)

    @jax.jit
    def train_batches(state, xs, ys):  # xs: (steps, batch, features), one pass in one call
        state, (losses, correct) = jax.lax.scan(train_step, state, (xs, ys))
        return state, losses.sum(), correct.sum()

    @jax.jit
    def score(state, xv, yv):
        trainable, non_trainable, _ = state
        y_pred, _ = model.stateless_call(trainable, non_trainable, xv, training=False)
        return loss_fn(yv, y_pred), jnp.mean((y_pred > 0.5) == (yv > 0.5))

    last_step = jax.jit(train_step)  # the short final batch, when rows % batch_size != 0
    state = ([v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    rng = np.random.default_rng(seed)
    full = len(x) // batch_size * batch_size
    history = keras.callbacks.History()
    hooks = keras.callbacks.CallbackList([*callbacks, history], model=model, epochs=epochs,
                                         steps=math.ceil(len(x) / batch_size))
    hooks.on_train_begin()
    for epoch in range(epochs):
        hooks.on_epoch_begin(epoch)
        order = rng.permutation(len(x))
        xe, ye = x[order], y[order]
        loss_sum, correct = 0.0, 0
        if full:
            state, loss_sum, correct = train_batches(
                state, xe[:full].reshape(-1, batch_size, x.shape[1]), ye[:full].reshape(-1, batch_size, 1))
        if full < len(x):
            state, (tail_loss, tail_correct) = last_step(state, (xe[full:], ye[full:]))
            loss_sum, correct = loss_sum + tail_loss, correct + tail_correct
        logs = {"loss": float(loss_sum) / len(x), "accuracy": float(correct) / len(x)}
        if validation_data is not None:
            val_loss, val_accuracy = score(state, *validation_data)
            logs.update(val_loss=float(val_loss), val_accuracy=float(val_accuracy))
        _store(model, state)  # so callbacks (and a crash) see this epoch's weights
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training:  # e.g. EarlyStopping
            break
    hooks.on_train_end()
    return history


def _store(model, state) -> None:
    trainable, non_trainable, optimizer_vars = state
    for variables, values in ((model.trainable_variables, trainable),
                              (model.non_trainable_variables, non_trainable),
                              (model.optimizer.variables, optimizer_vars)):
        for variable, value in zip(variables, values):
            variable.assign(value)
