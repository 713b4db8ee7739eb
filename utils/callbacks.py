"""Callbacks the chapters share.

Keras already ships the rest (``CSVLogger``, ``ModelCheckpoint``,
``EarlyStopping``, ``BackupAndRestore``, ``TensorBoard``); only what Keras
lacks lives here.
"""

from __future__ import annotations

import time

from utils.quiet import import_keras

keras = import_keras()


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (wall time of the epoch) to each epoch's logs.

    Keras runs user callbacks before its own ``History``, so the value lands in
    ``history.history["epoch_seconds"]`` and in any ``CSVLogger`` placed after
    this callback.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


class EveryNEpochsPrinter(keras.callbacks.Callback):
    """One progress line every ``every`` epochs (and on the last one).

    ``scale`` turns Keras epochs into the unit the learner thinks in, e.g.
    passes over the data when one Keras epoch covers several passes.
    """

    def __init__(self, total_epochs: int, every: int = 1, scale: int = 1, unit: str = "epoch"):
        super().__init__()
        self.total, self.every, self.scale, self.unit = total_epochs, every, scale, unit

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every and done != self.total:
            return
        shown = "  ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items() if k != "epoch_seconds")
        width = len(str(self.total * self.scale))
        print(f"{self.unit} {done * self.scale:>{width}}/{self.total * self.scale}  {shown}",
              flush=True)
