"""A deduplicating asyncio work queue of model keys, like client-go's.

Called by `handlers`: every watch event only *adds* the key of the model it
concerns; workers take keys one at a time. A key is never processed by two
workers at once, and a key added while it is processed runs once more after,
so bursts of events collapse into few reconciles and none is lost.

Concurrency: the queue's state (three sets and an `asyncio.Queue`) belongs to
one event loop and is only ever touched on that loop's thread, so it needs no
lock. `add` may be called from any thread (the artifact verifier's pool adds a
model when a check finishes): off the loop it hops onto it with
`call_soon_threadsafe`. Doing the work in place from another thread would be a
data race: `asyncio.Queue.put_nowait` wakes a waiting `get` through a future,
and waking a future from a foreign thread neither is safe nor wakes the loop.

Metrics (optional, `metrics.QueueMetrics`) are client-go's: depth, adds, time
queued, time worked on; `retried` counts the keys a worker puts back with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from modelreg.metrics import QueueMetrics

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, metrics: QueueMetrics | None = None) -> None:
        self._metrics = metrics
        self._added_at: dict[K, float] = {}  # waiting keys: since when (monotonic)
        self._started_at: dict[K, float] = {}  # keys being worked on: since when
        self._waited: dict[K, float] = {}  # keys being worked on: how long they were queued
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        # The loop that owns the state above: the first one to add or get.
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, key: K) -> None:
        """Queue `key`; safe from any thread once the queue has met its loop
        (the workers' first `get` does that). From another thread the key is
        queued a moment later, on the loop; after the loop closed it is dropped,
        since nobody would take it."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and self._loop in (None, running):
            self._loop = running
            self._add(key)
            return
        if self._loop is None:
            raise RuntimeError("WorkQueue.add from another thread before the queue has an event loop")
        with contextlib.suppress(RuntimeError):  # the loop is closed: the operator is stopping
            self._loop.call_soon_threadsafe(self._add, key)

    def _add(self, key: K) -> None:
        if key in self._queued or key in self._dirty:
            return
        if self._metrics is not None:
            self._metrics.adds.inc()
        self._added_at[key] = time.monotonic()
        if key in self._active:
            self._dirty.add(key)
        else:
            self._queued.add(key)
            self._ready.put_nowait(key)
        self._measure()

    def retried(self) -> None:
        """A worker will add a key again after a backoff (counted, as client-go does)."""
        if self._metrics is not None:
            self._metrics.retries.inc()

    def _measure(self) -> None:
        if self._metrics is not None:
            self._metrics.depth.set(len(self))

    async def get(self) -> K:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        key = await self._ready.get()
        self._queued.discard(key)
        self._active.add(key)
        now = time.monotonic()
        self._started_at[key] = now
        added = self._added_at.pop(key, now)
        self._waited[key] = now - added
        if self._metrics is not None:
            self._metrics.queue_time.observe(now - added)
        self._measure()
        return key

    def done(self, key: K) -> None:
        """Called on the loop by the worker that took `key`."""
        self._active.discard(key)
        self._waited.pop(key, None)
        started = self._started_at.pop(key, None)
        if self._metrics is not None and started is not None:
            self._metrics.work_time.observe(time.monotonic() - started)
        if key in self._dirty:
            # Added while worked on: now it waits like any other (counted once, at that add).
            self._dirty.discard(key)
            self._queued.add(key)
            self._ready.put_nowait(key)
        self._measure()

    def waited(self, key: K) -> float:
        """Seconds the key, now being worked on, waited in the queue (0 if it is not)."""
        return self._waited.get(key, 0.0)

    def __len__(self) -> int:
        return len(self._queued) + len(self._dirty)
