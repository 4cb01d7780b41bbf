"""Micro-batching: concurrent requests are coalesced into one model call, off the event loop.

A request's texts wait in a queue; one consumer task takes the first waiting request, then
keeps taking requests until the batch holds ``max_batch`` texts or ``max_wait_ms`` has passed
since that first request arrived, and runs the batch on a single inference thread. While a
batch runs, the next one fills up, so under load batches form without any waiting. Each batch
reads the model slot once, so a hot swap never splits a batch across two models.

The queue is bounded by texts (``max_queue_texts``): past it, :meth:`MicroBatcher.submit`
raises :class:`Overloaded` at once (the route answers 503), since a request that waits behind
seconds of work is one whose client will give up anyway. A request whose future was cancelled
(its client disconnected) is dropped when the consumer reaches it: no model time for nobody.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class BatchResult:
    predictions: list[dict[str, Any]]
    model: Any  # the slot's Loaded model that answered


class Overloaded(Exception):
    """The queue holds more texts than it may: try again later."""


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future
    arrived: float
    taken: bool = False  # off the queue (in a batch, or dropped): no longer counted as waiting


class MicroBatcher:
    def __init__(
        self,
        run_batch: Callable[[list[str]], tuple[list[dict[str, Any]], Any]],
        max_batch: int,
        max_wait_ms: float,
        on_batch: Callable[[int, float], None] | None = None,
        max_queue_texts: int = 1 << 30,
        on_skip: Callable[[int], None] | None = None,
    ):
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self.on_skip = on_skip
        self.max_queue_texts = max_queue_texts
        self.waiting_texts = 0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        # One thread: the model call already uses every core (intra-op threads); two concurrent
        # calls would only fight over them.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmchain-infer")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._consume(), name="lmchain-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    def enqueue(self, texts: list[str]) -> asyncio.Future:
        """Queue ``texts`` without waiting; cancel the future to withdraw them. Raises Overloaded."""
        if self._queue is None:
            raise RuntimeError("batcher not started")
        if self.waiting_texts and self.waiting_texts + len(texts) > self.max_queue_texts:
            raise Overloaded(f"{self.waiting_texts} texts are waiting for the model")
        future = asyncio.get_running_loop().create_future()
        item = _Item(texts, future, time.monotonic())
        self.waiting_texts += len(texts)
        future.add_done_callback(lambda f: self._withdrawn(item) if f.cancelled() else None)
        self._queue.put_nowait(item)  # unbounded asyncio queue: the count above is the bound
        return future

    async def submit(self, texts: list[str]) -> BatchResult:
        return await self.enqueue(texts)

    def _withdrawn(self, item: _Item) -> None:
        if not item.taken:
            item.taken = True
            self.waiting_texts -= len(item.texts)
            if self.on_skip:
                self.on_skip(len(item.texts))

    def _take(self, item: _Item) -> bool:
        """Off the queue: True if it still wants an answer."""
        if item.taken:  # withdrawn while it waited
            return False
        item.taken = True
        self.waiting_texts -= len(item.texts)
        return True

    async def _get(self, queue: asyncio.Queue, timeout: float | None = None) -> _Item | None:
        """The next live item; None when ``timeout`` passes first. Withdrawn items are skipped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                if deadline is None:
                    item = await queue.get()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except asyncio.TimeoutError:
                        return None
            if self._take(item):
                return item

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        assert queue is not None
        while True:
            first = await self._get(queue)
            assert first is not None
            batch = [first]
            size = len(first.texts)
            deadline = first.arrived + self.max_wait
            while size < self.max_batch:
                item = await self._get(queue, max(0.0, deadline - time.monotonic()))
                if item is None:
                    break
                if size + len(item.texts) > self.max_batch:
                    # It does not fit: run what we have, and let it open the next batch.
                    await self._run(loop, batch, size)
                    batch, size = [item], len(item.texts)
                    deadline = item.arrived + self.max_wait
                    continue
                batch.append(item)
                size += len(item.texts)
            await self._run(loop, batch, size)

    async def _run(self, loop, batch: list[_Item], size: int) -> None:
        live = [item for item in batch if not item.future.done()]  # withdrawn while the batch filled
        if len(live) < len(batch):
            if self.on_skip:
                self.on_skip(sum(len(item.texts) for item in batch if item not in live))
            if not live:
                return
            batch, size = live, sum(len(item.texts) for item in live)
        texts = [t for item in batch for t in item.texts]
        t0 = time.perf_counter()
        try:
            predictions, model = await loop.run_in_executor(self._executor, self.run_batch, texts)
        except Exception as exc:  # the callers get the error; the batcher keeps running
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        if self.on_batch:
            self.on_batch(size, time.perf_counter() - t0)
        start = 0
        for item in batch:
            if not item.future.done():  # a client that went away cancelled its future
                item.future.set_result(BatchResult(predictions[start : start + len(item.texts)], model))
            start += len(item.texts)
