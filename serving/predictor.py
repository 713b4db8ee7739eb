"""Where the model runs, relative to the server's event loop.

uvicorn answers every connection from one thread running an asyncio event
loop. A model call is plain blocking computation: made on that thread, it
freezes every other request (even ``/health``) until it returns. Three modes,
compared by ``benchmarks/serving_load.py``:

``inline``
    call the model on the event loop: the naive version, the baseline.
``thread``
    one model call per request, in a worker thread: the loop keeps accepting,
    decoding and answering while the model computes.
``batch`` (default)
    requests that arrive while the model is busy queue up; the worker takes
    everything queued (up to ``max_batch`` inputs) as one batch. One call on 16
    inputs costs little more than one call on 1, so under load this multiplies
    throughput; when requests come one at a time nobody waits for a batch to
    fill.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading

import numpy as np

MODES = ("batch", "thread", "inline")
WARM_UP_SIZE = 32  # for axes a model leaves open, e.g. images of any size: (None, None, 3)


def rows(x) -> int:
    """How many inputs a batch holds (an array, or a dict of arrays for several inputs)."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def signature(x) -> tuple:
    """Batches can be joined only when every input has the same shape past the batch axis."""
    if isinstance(x, dict):
        return tuple(sorted((name, a.shape[1:], a.dtype.str) for name, a in x.items()))
    return (x.shape[1:], x.dtype.str)


def join(batches: list):
    if isinstance(batches[0], dict):
        return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    return np.concatenate(batches)


def cut(outputs, start: int, stop: int):
    """Rows start:stop of a model's outputs (an array, a list or a dict of arrays)."""
    if isinstance(outputs, dict):
        return {name: a[start:stop] for name, a in outputs.items()}
    if isinstance(outputs, list):
        return [a[start:stop] for a in outputs]
    return outputs[start:stop]


def as_numpy(outputs):
    if isinstance(outputs, dict):
        return {name: np.asarray(a) for name, a in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(a) for a in outputs]
    return np.asarray(outputs)


def zeros(specs, n: int):
    """A batch of n zero inputs for specs of (name, shape, dtype); a dict for several."""
    def one(shape, dtype):
        return np.zeros((n, *(WARM_UP_SIZE if d is None else d for d in shape)), dtype=dtype)
    if len(specs) == 1:
        return one(specs[0][1], specs[0][2])
    return {name: one(shape, dtype) for name, shape, dtype in specs}


class Predictor:
    def __init__(self, model, mode: str = "batch", max_batch: int = 32):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.model = model
        self.mode = mode
        self.max_batch = max_batch
        # One worker thread: calls never overlap, and TensorFlow already spreads
        # a single call over every core.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")
        self._lock = threading.Lock()
        self._pending: collections.deque = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.calls = 0   # model calls made, and the inputs they covered:
        self.inputs = 0  # inputs / calls is the mean batch size

    def run(self, x):
        """One blocking model call on a batch (N, *input_shape) -> (N, outputs); for
        several inputs, x is a dict of arrays (and the outputs may be a dict too)."""
        with self._lock:
            self.calls += 1
            self.inputs += rows(x)
            return as_numpy(self.model.predict_on_batch(x))

    def warm_up(self, specs) -> None:
        """Trace the model's predict function before the first request pays for it;
        two batch sizes let TensorFlow settle on one graph for any batch size.
        ``specs``: (name, shape, dtype) for each input, or one input shape."""
        if specs and not isinstance(specs[0], (tuple, list)):
            specs = [("input", tuple(specs), "float32")]
        for n in (1, 2):
            self.run(zeros(specs, n))
        self.calls = self.inputs = 0

    async def start(self) -> None:
        if self.mode == "batch":
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._batches())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def predict(self, x):
        if self.mode == "inline":
            return self.run(x)
        loop = asyncio.get_running_loop()
        if self.mode == "thread" or self._task is None or self._task.done():
            return await loop.run_in_executor(self._executor, self.run, x)
        future = loop.create_future()
        self._pending.append((x, future))
        self._wake.set()
        return await future

    def _take(self) -> list:
        """The oldest waiting request, and those queued behind it with the same
        shapes, up to max_batch inputs; the others keep their place."""
        first = self._pending.popleft()
        items, size, kind, others = [first], rows(first[0]), signature(first[0]), []
        while size < self.max_batch and self._pending:
            item = self._pending.popleft()
            if signature(item[0]) == kind:
                items.append(item)
                size += rows(item[0])
            else:
                others.append(item)
        self._pending.extendleft(reversed(others))
        return [(x, future) for x, future in items if not future.done()]  # callers gone

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            items = self._take()
            if not items:
                continue
            try:
                outputs = await loop.run_in_executor(self._executor, self.run, join([x for x, _ in items]))
            except Exception as err:  # a bug or a broken model: every waiting request hears of it
                for _, future in items:
                    if not future.done():
                        future.set_exception(err)
                continue
            start = 0
            for x, future in items:
                if not future.done():
                    future.set_result(cut(outputs, start, start + rows(x)))
                start += rows(x)
