"""One worker thread owns the model; requests wait in a bounded queue.

Why a single thread: a model forward is not safe to interleave with another request's
adapter switch or KV cache, and on one device parallel forwards only compete for the same
cores. Serialising keeps each request's tokens its own (tested with 100 requests at
concurrency 8). A full queue is refused at once (429) instead of piling up latency.

A job is a function ``job(emit, cancelled)`` run on the worker thread; ``emit`` hands an event
to the request's asyncio queue on the event loop, ``cancelled()`` turns true when the client
has gone away. The job's return and exceptions become the final event.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

Emit = Callable[[object], None]
Job = Callable[[Emit, Callable[[], bool]], None]


class QueueFull(Exception):
    """The bounded queue has no room for another request."""


@dataclass
class Finished:
    """Last event of a job; ``error`` is set when the job raised."""

    error: BaseException | None = None


@dataclass
class JobHandle:
    events: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)

    async def __aiter__(self) -> AsyncIterator[object]:
        """Events until the job ends; re-raises the job's exception."""
        while True:
            event = await self.events.get()
            if isinstance(event, Finished):
                if event.error is not None:
                    raise event.error
                return
            yield event


class Worker:
    """A thread that runs jobs one at a time from a queue of at most ``max_queue`` waiting jobs."""

    def __init__(self, max_queue: int = 64):
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._loop, name="tunelab-model-worker", daemon=True)
        self.busy = False
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        """Jobs waiting (not counting the one running)."""
        return self._queue.qsize()

    def submit(self, job: Job) -> JobHandle:
        """Queue ``job`` for the calling event loop; raises :class:`QueueFull` when full."""
        loop = asyncio.get_running_loop()
        handle = JobHandle(asyncio.Queue())

        def emit(event: object) -> None:
            loop.call_soon_threadsafe(handle.events.put_nowait, event)

        try:
            self._queue.put_nowait((job, emit, handle))
        except queue.Full as err:
            raise QueueFull from err
        return handle

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, emit, handle = item
            self.busy = True
            try:
                if handle.cancelled.is_set():
                    emit(Finished())
                    continue
                job(emit, handle.cancelled.is_set)
                emit(Finished())
            except BaseException as err:  # noqa: BLE001 - every failure is reported to its request
                emit(Finished(err))
            finally:
                self.busy = False

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued jobs, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)
