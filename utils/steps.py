"""``KERAS_MAX_STEPS_PER_EPOCH``: Keras's switch for shortening every loop, and what it means for scores.

With the variable set, Keras stops each ``fit``, ``evaluate`` and ``predict`` after that
many batches. A chapter that scores predictions against labels cuts the labels to the
same first rows, so every number of a shortened run describes one and the same set.
"""

from __future__ import annotations

from utils.lazy import keras


def scored(x, y, batch_size: int):
    """The rows of ``x`` and ``y`` that ``evaluate`` and ``predict`` will both see."""
    steps = keras.config.max_steps_per_epoch()
    if steps:
        x, y = x[:steps * batch_size], y[:steps * batch_size]
    return x, y
