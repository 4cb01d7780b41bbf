"""Micro-batching: concurrent requests are coalesced into one model call, off the event loop.

A request's texts wait in a queue; one consumer task takes the first waiting request, then
keeps taking requests until the batch holds ``max_batch`` texts or ``max_wait_ms`` has passed
since that first request arrived, and runs the batch on a single inference thread. While a
batch runs, the next one fills up, so under load batches form without any waiting. Each batch
reads the model slot once, so a hot swap never splits a batch across two models.
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


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list[str]], tuple[list[dict[str, Any]], Any]],
                 max_batch: int, max_wait_ms: float, on_batch: Callable[[int, float], None] | None = None):
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
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

    async def submit(self, texts: list[str]) -> BatchResult:
        if self._queue is None:
            raise RuntimeError("batcher not started")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((texts, future, time.monotonic()))
        return await future

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        assert queue is not None
        while True:
            first = await queue.get()
            batch = [first]
            size = len(first[0])
            deadline = first[2] + self.max_wait
            while size < self.max_batch:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                if size + len(item[0]) > self.max_batch:
                    # It does not fit: run what we have, and let it open the next batch.
                    await self._run(loop, batch, size)
                    batch, size = [item], len(item[0])
                    deadline = item[2] + self.max_wait
                    continue
                batch.append(item)
                size += len(item[0])
            await self._run(loop, batch, size)

    async def _run(self, loop, batch: list, size: int) -> None:
        texts = [t for item in batch for t in item[0]]
        t0 = time.perf_counter()
        try:
            predictions, model = await loop.run_in_executor(self._executor, self.run_batch, texts)
        except Exception as exc:  # the callers get the error; the batcher keeps running
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        if self.on_batch:
            self.on_batch(size, time.perf_counter() - t0)
        start = 0
        for item_texts, future, _ in batch:
            if not future.done():  # a client that went away cancelled its future
                future.set_result(BatchResult(predictions[start:start + len(item_texts)], model))
            start += len(item_texts)
