"""One measurement, made inside a child process of ``benchmarks/run.py``.

The parent chooses the backend (``KERAS_BACKEND``) before this module is
imported, so Keras starts on it. Each recipe is trained by the same functions
its own benchmark script uses (benchmarks/xor.py, churn.py, mnist.py), naive
port or chapter, ``repeats`` times from seeds ``seed, seed + 1, ...``.

Per repeat the result holds the steady seconds per epoch (the median of every
epoch after the first, which also pays for tracing and compiling), the first
epoch's seconds, and the training time until the target was first reached.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time

from utils.quiet import import_keras

keras = import_keras()


class Clock(keras.callbacks.Callback):
    """Times every epoch and notes when ``metric`` first reaches ``target``.

    With ``score`` (a function of the model returning the metric), the metric
    is computed after the epoch and its time is left out of the clock; without
    it, the value logged by ``fit`` is used. ``stop`` ends training at the target.
    """

    def __init__(self, metric: str, target: float | None, score=None, stop: bool = False):
        super().__init__()
        self.metric, self.target, self.score, self.stop = metric, target, score, stop
        self.epoch_seconds: list[float] = []
        self.reached: tuple[float, int] | None = None  # (seconds since fit began, epoch)

    def on_train_begin(self, logs=None):
        self._start, self._paused = time.perf_counter(), 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.epoch_seconds.append(now - self._epoch_start)
        if self.target is None or self.reached is not None:
            return
        value = self.score(self.model) if self.score else (logs or {}).get(self.metric, float("nan"))
        if value >= self.target:
            self.reached = (now - self._start - self._paused, epoch + 1)
            if self.stop:
                self.model.stop_training = True
        self._paused += time.perf_counter() - now


def steady(seconds: list[float]) -> float:
    """Median epoch time once compiled: the first epoch is left out when there are others."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def measure_xor(spec: dict) -> dict:
    from benchmarks import xor as bench

    # The chapter's fit runs 10 passes over the 4 samples per Keras epoch.
    passes, train = (1, bench.naive) if spec["variant"] == "naive" else (10, bench.tuned)
    out = _empty()
    for repeat in range(spec["repeats"]):
        clock = Clock("accuracy", spec["target"])
        fit_seconds, accuracy = train(spec["seed"] + repeat, spec["epochs"], callbacks=[clock])
        out["s_per_epoch"].append(steady(clock.epoch_seconds) / passes)
        out["first_epoch_s"].append(clock.epoch_seconds[0])
        out["fit_s"].append(fit_seconds)
        out["epochs_run"].append(len(clock.epoch_seconds) * passes)
        _reached(out, clock.reached, passes)
        out["final_metric"].append(accuracy)
    logged = "training accuracy as fit logs it" + (" (every 10 passes)" if passes > 1 else "")
    return {**out, "final_metric_name": "accuracy on the 4 points", "train_samples": 4,
            "target_metric": logged}


def measure_churn(spec: dict) -> dict:
    from benchmarks import churn as bench
    from mlp import training

    train, (x_val, y_val), (x_test, y_test) = bench.load_arrays()
    naive = spec["variant"] == "naive"

    def validation_accuracy(model):  # the naive port does not validate; score it off the clock
        return float(model.evaluate(x_val, y_val, batch_size=1024, verbose=0)[1])

    out = _empty()
    for repeat in range(spec["repeats"]):
        seed = spec["seed"] + repeat
        keras.utils.set_random_seed(seed)
        model = training.compile_model(training.build_model(train[0].shape[1]))
        clock = Clock("val_accuracy", spec["target"], score=validation_accuracy if naive else None,
                      stop=spec["stop_at_target"])
        start = time.perf_counter()
        bench.train_case("naive" if naive else "recipe", model, train, (x_val, y_val),
                         epochs=spec["epochs"], seed=seed, callbacks=[clock])
        out["fit_s"].append(time.perf_counter() - start)
        out["s_per_epoch"].append(steady(clock.epoch_seconds))
        out["first_epoch_s"].append(clock.epoch_seconds[0])
        out["epochs_run"].append(len(clock.epoch_seconds))
        _reached(out, clock.reached)
        out["final_metric"].append(float(model.evaluate(x_test, y_test, batch_size=1024, verbose=0)[1]))
    return {**out, "final_metric_name": "test accuracy", "train_samples": len(train[0]),
            "target_metric": "validation accuracy (800 rows)"}


class StepClock(keras.callbacks.Callback):
    """Notes when each epoch begins and ends and when each training step ends,
    to extrapolate a short epoch to a full one (see :func:`full_epoch_seconds`)."""

    def __init__(self):
        super().__init__()
        self.epochs: list[tuple[float, list[float], float]] = []  # (begin, step ends, end)

    def on_epoch_begin(self, epoch, logs=None):
        self._begin, self._steps = time.perf_counter(), []

    def on_train_batch_end(self, batch, logs=None):
        float((logs or {}).get("loss", 0.0))  # waits for the step (JAX dispatches asynchronously)
        self._steps.append(time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((self._begin, self._steps, time.perf_counter()))


def full_epoch_seconds(epoch: tuple[float, list[float], float], step: float, full_steps: int,
                       scoring_scale: float) -> float:
    """A full epoch's seconds from a short one: its start-up and first step as
    measured (a fixed cost), ``full_steps - 1`` further steps of ``step``
    seconds, and the scoring after the last step scaled with the images scored.
    Scaling the whole short epoch instead would multiply the fixed costs too."""
    begin, steps, end = epoch
    return (steps[0] - begin) + (full_steps - 1) * step + (end - steps[-1]) * scoring_scale


def subset(data, images: int, slice_scoring: bool = True):
    """The first ``images`` training images; with ``slice_scoring`` also the
    same share of the validation and test images (cheaper, but the scoring's
    fixed costs then get scaled up with it), else all of them."""
    share = images / len(data.x_train)

    def cut(x, scored=True):
        return x[:max(1, round(len(x) * share))] if scored else x

    return dataclasses.replace(data, x_train=cut(data.x_train), y_train=cut(data.y_train),
                               x_val=cut(data.x_val, slice_scoring), y_val=cut(data.y_val, slice_scoring),
                               x_test=cut(data.x_test, slice_scoring),
                               y_test=cut(data.y_test, slice_scoring))


def measure_mnist(spec: dict) -> dict:
    from benchmarks import mnist as bench
    from benchmarks.suite import flops
    from mnist import data as image_data
    from mnist import models

    model_spec = models.get_spec(spec["recipe"])
    full = image_data.load_images(spec["dataset"], seed=spec["seed"])
    data = subset(full, spec["subset"], spec["slice_scoring"]) if spec["subset"] else full
    scale = len(full.x_train) / len(data.x_train)  # seconds per full epoch from a shorter one
    naive = spec["variant"] == "naive"
    train = bench.naive if naive else bench.chapter
    stop_at = spec["target"] if spec["stop_at_target"] else None
    # The images scored inside each epoch: the naive port validates on the test set.
    scored, full_scored = (data.x_test, full.x_test) if naive else (data.x_val, full.x_val)
    full_steps = math.ceil(len(full.x_train) / spec["batch_size"])
    out = _empty()
    out["s_per_epoch_scaled"] = []
    for repeat in range(spec["repeats"]):
        clock = StepClock()
        start = time.perf_counter()
        seconds, accuracy = train(model_spec, data, spec["epochs"], spec["batch_size"],
                                  spec["seed"] + repeat, stop_at=stop_at, callbacks=[clock])
        out["fit_s"].append(time.perf_counter() - start)
        out["s_per_epoch_scaled"].append(steady(seconds) * scale)
        intervals = [b - a for _, steps, _ in clock.epochs[1:] for a, b in zip(steps, steps[1:])]
        if spec["subset"] and intervals:
            step = statistics.median(intervals)
            estimates = [full_epoch_seconds(e, step, full_steps, len(full_scored) / len(scored))
                         for e in clock.epochs]
            out["s_per_epoch"].append(steady(estimates))
            out["first_epoch_s"].append(estimates[0])
        else:  # full epochs, or too short to time single steps
            out["s_per_epoch"].append(steady(seconds) * scale)
            out["first_epoch_s"].append(seconds[0] * scale)
        out["epochs_run"].append(len(seconds))
        reached = bench.first_reach(spec["target"], seconds, accuracy) if spec["target"] else None
        _reached(out, reached)
        out["final_metric"].append(accuracy[-1])
    # Scoring inside the epoch's timed span: the naive port validates on the test set,
    # the chapter on its validation split (benchmarks/mnist.py).
    return {**out, "final_metric_name": f"test accuracy ({len(data.x_test):,} images)",
            "train_samples": len(full.x_train),
            "eval_samples": len(full_scored),
            "timed_epoch_images": len(data.x_train),
            "flops_per_sample": flops.forward_flops(model_spec.build(full.image_shape, 10)),
            "dataset": full.name, "target_metric": "test accuracy after each epoch"}


def _empty() -> dict:
    keys = ("s_per_epoch", "first_epoch_s", "fit_s", "epochs_run", "time_to_target_s", "target_epoch",
            "final_metric")
    return {key: [] for key in keys}


def _reached(out: dict, reached: tuple[float, int] | None, passes: int = 1) -> None:
    out["time_to_target_s"].append(reached[0] if reached else None)
    out["target_epoch"].append(reached[1] * passes if reached else None)


MEASURES = {"xor": measure_xor, "churn": measure_churn, "conv_net": measure_mnist,
            "best_conv_net": measure_mnist}


def measure(spec: dict) -> dict:
    """Run the measurement ``spec`` describes (see benchmarks/run.py's plan); return its numbers."""
    result = MEASURES[spec["recipe"]](spec)
    return {**result, "backend": keras.backend.backend(), "keras": keras.__version__}
