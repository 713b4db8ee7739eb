"""Callbacks the chapters share.

Keras already ships the rest (``CSVLogger``, ``ModelCheckpoint``,
``EarlyStopping``, ``BackupAndRestore``, ``TensorBoard``); only what Keras
lacks lives here. :func:`standard` is the set every chapter's ``fit`` gets.
"""

from __future__ import annotations

import math
import time

from utils.errors import TrainingDiverged
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


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # not a number at all: nothing to judge


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """Keras's ``TerminateOnNaN`` that also says why, in one line, and marks the run.

    Like its parent it stops training after the first batch whose loss is NaN
    or infinite (without the parent's "Invalid loss" print), and it checks the
    epoch's logs too (the plain PyTorch loop reports per epoch). When training
    ends after such a loss, the run folder in progress is marked
    ``"status": "diverged"`` in run.json, nothing is saved from the NaN
    weights, and :class:`~utils.errors.TrainingDiverged` ends the script with
    ``error: training diverged: ...`` and exit code 2.

    ``scale`` turns Keras epochs into the epochs the learner counts, as in
    :class:`EveryNEpochsPrinter`.
    """

    def __init__(self, scale: int = 1):
        super().__init__()
        self.scale = scale
        self.epoch = 0
        self.bad_epoch: int | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _check(self, logs) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not _finite(loss) and self.bad_epoch is None:
            self.bad_epoch = (self.epoch + 1) * self.scale
            self.model.stop_training = True

    def on_batch_end(self, batch, logs=None):
        self._check(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs)

    def on_train_end(self, logs=None):
        if self.bad_epoch is None:
            return
        from utils import runs

        run = runs.current_run()
        if run is not None:
            run.diverged(self.bad_epoch)  # raises TrainingDiverged
        raise TrainingDiverged(runs.diverged_message(self.bad_epoch))


def standard(scale: int = 1) -> list:
    """The callbacks every chapter's training uses: time each epoch, stop on a NaN loss."""
    return [EpochTimer(), StopOnNaN(scale)]
