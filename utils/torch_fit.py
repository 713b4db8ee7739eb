"""A plain PyTorch training loop for the tiny binary classifiers (XOR, churn).

On the torch backend a Keras model *is* a ``torch.nn.Module`` and its weights
are torch tensors, so it can be trained by an ordinary PyTorch loop: forward
pass, ``torch.autograd.grad``, optimizer step. That skips what ``model.fit``
does around every step (its data adapter, metric objects, callbacks per batch),
which on a model of a few hundred weights costs more than the arithmetic, and
``steps_per_execution`` cannot fold steps together on torch. The updates are
the recipe's: same batches (a new shuffle every pass), same loss, same Keras
optimizer (``optimizer.apply``), so the same weights up to float rounding.

The loop reports like ``fit``: a ``History`` with loss and accuracy per epoch
(``val_`` too with ``validation_data``), and the given callbacks' epoch hooks.
"""

from __future__ import annotations

import math

from utils.lazy import lazy

np = lazy("numpy")


def fit(model, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, seed: int,
        validation_data=None, callbacks=(), passes_per_epoch: int = 1):
    """Train a compiled binary classifier (one sigmoid output) on the torch backend.

    ``epochs`` Keras epochs of ``passes_per_epoch`` passes over ``(x, y)`` each;
    ``y`` is (rows, 1). Returns a ``keras.callbacks.History``.
    """
    import keras
    import torch

    loss_fn = keras.losses.BinaryCrossentropy()  # what compile's "binary_crossentropy" means
    optimizer = model.optimizer
    variables = model.trainable_variables
    if not optimizer.built:
        optimizer.build(variables)
    xt = torch.as_tensor(np.asarray(x, dtype="float32"))
    yt = torch.as_tensor(np.asarray(y, dtype="float32").reshape(len(y), -1))
    rng = np.random.default_rng(seed)

    history = keras.callbacks.History()
    hooks = keras.callbacks.CallbackList([*callbacks, history], model=model, epochs=epochs,
                                         steps=passes_per_epoch * math.ceil(len(x) / batch_size))
    model.stop_training = False
    hooks.on_train_begin()
    for epoch in range(epochs):
        hooks.on_epoch_begin(epoch)
        loss_sum, correct, seen = torch.zeros(()), torch.zeros((), dtype=torch.int64), 0
        for _ in range(passes_per_epoch):
            order = torch.as_tensor(rng.permutation(len(x)))
            for start in range(0, len(x), batch_size):
                rows = order[start:start + batch_size]
                xb, yb = xt[rows], yt[rows]
                y_pred = model(xb, training=True)
                loss = loss_fn(yb, y_pred)
                grads = torch.autograd.grad(loss, [v.value for v in variables])
                optimizer.apply(grads, variables)
                with torch.no_grad():  # summed as tensors: no Python number per step
                    loss_sum += loss * len(rows)
                    correct += ((y_pred > 0.5) == (yb > 0.5)).sum()
                seen += len(rows)
        logs = {"loss": float(loss_sum) / seen, "accuracy": int(correct) / seen}
        if validation_data is not None:
            logs.update(_score(model, loss_fn, *validation_data))
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    hooks.on_train_end()
    return history


def _score(model, loss_fn, x_val, y_val) -> dict:
    import torch

    with torch.no_grad():
        xv = torch.as_tensor(np.asarray(x_val, dtype="float32"))
        yv = torch.as_tensor(np.asarray(y_val, dtype="float32").reshape(len(y_val), -1))
        y_pred = model(xv, training=False)
        return {"val_loss": float(loss_fn(yv, y_pred)),
                "val_accuracy": float(((y_pred > 0.5) == (yv > 0.5)).float().mean())}
