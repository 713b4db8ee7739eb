"""A memory budget for decoding: how many bytes of pictures may be in the works at once.

A 51 KB PNG can hold a 6300x6300 picture that takes hundreds of megabytes once
decoded; sixteen of them at once would take gigabytes. Before a request decodes
anything, it reserves the bytes its picture will need (``images.decode_cost``,
known from the header alone). When the budget is spent, the request waits for
others to finish, at most ``wait_seconds``; then it is answered 503 with a
``Retry-After`` header. A request that could never fit is answered 413 at once.

Large pictures leave freed memory scattered over the C allocator's heaps, where
the process keeps it: after one, :func:`return_memory` hands it back to the
operating system (glibc's ``malloc_trim``; elsewhere it does nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import math

from serving.limits import DECODE_MEMORY_MB as DEFAULT_MEMORY_MB  # noqa: F401 (the default, for callers)
from serving.limits import DECODE_WAIT_SECONDS as DEFAULT_WAIT_SECONDS

TRIM_ABOVE_BYTES = 64 * 2**20


class OverBudget(Exception):
    """A request the budget refuses; ``status`` is 413 (never fits) or 503 (busy)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class DecodeBudget:
    def __init__(self, limit_bytes: int, wait_seconds: float = DEFAULT_WAIT_SECONDS):
        self.limit = int(limit_bytes)
        self.wait_seconds = wait_seconds
        self.used = 0
        self.peak = 0      # the most bytes reserved at once
        self.refused = 0   # requests answered 503
        self._changed: asyncio.Condition | None = None

    @contextlib.asynccontextmanager
    async def hold(self, cost: int, what: str = "this image"):
        """Reserve ``cost`` bytes for the block (waiting for them if need be)."""
        if cost > self.limit:
            raise OverBudget(413, f"{what} needs about {cost / 2**20:,.0f} MB to decode, more than the "
                                  f"server allows for all decoding ({self.limit / 2**20:,.0f} MB): send a "
                                  "smaller picture")
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.used + cost <= self.limit),
                                       self.wait_seconds)
            except TimeoutError:
                self.refused += 1
                retry = max(1, math.ceil(self.wait_seconds))
                raise OverBudget(503, "the server is busy decoding other large images: try again in "
                                      f"{retry} s", retry_after=retry) from None
            self.used += cost
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            async with self._changed:
                self.used -= cost
                self._changed.notify_all()


def _load_malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return None


_malloc_trim = _load_malloc_trim()


def return_memory(cost: int) -> None:
    """After work that needed ``cost`` bytes, give freed heap memory back to the OS."""
    if cost >= TRIM_ABOVE_BYTES and _malloc_trim is not None:
        _malloc_trim(0)
