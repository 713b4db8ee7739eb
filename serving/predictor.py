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
import concurrent.futures
import threading

import numpy as np

MODES = ("batch", "thread", "inline")


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
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.calls = 0   # model calls made, and the inputs they covered:
        self.inputs = 0  # inputs / calls is the mean batch size

    def run(self, x: np.ndarray) -> np.ndarray:
        """One blocking model call on a batch (N, *input_shape) -> (N, outputs)."""
        with self._lock:
            self.calls += 1
            self.inputs += len(x)
            return np.asarray(self.model.predict_on_batch(x))

    def warm_up(self, input_shape: tuple) -> None:
        """Trace the model's predict function before the first request pays for it;
        two batch sizes let TensorFlow settle on one graph for any batch size."""
        for n in (1, 2):
            self.run(np.zeros((n, *input_shape), dtype="float32"))
        self.calls = self.inputs = 0

    async def start(self) -> None:
        if self.mode == "batch":
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._batches())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def predict(self, x: np.ndarray) -> np.ndarray:
        if self.mode == "inline":
            return self.run(x)
        loop = asyncio.get_running_loop()
        if self.mode == "thread" or self._task is None or self._task.done():
            return await loop.run_in_executor(self._executor, self.run, x)
        future = loop.create_future()
        self._queue.put_nowait((x, future))
        return await future

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._queue.get()]
            size = len(items[0][0])
            # Take what has queued up meanwhile, without waiting for more.
            while size < self.max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                items.append(item)
                size += len(item[0])
            items = [(x, future) for x, future in items if not future.done()]  # callers gone
            if not items:
                continue
            try:
                outputs = await loop.run_in_executor(
                    self._executor, self.run, np.concatenate([x for x, _ in items]))
            except Exception as err:  # a bug or a broken model: every waiting request hears of it
                for _, future in items:
                    if not future.done():
                        future.set_exception(err)
                continue
            start = 0
            for x, future in items:
                if not future.done():
                    future.set_result(outputs[start:start + len(x)])
                start += len(x)
