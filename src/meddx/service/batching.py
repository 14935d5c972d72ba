"""Dynamic micro-batching of model calls for the prediction route.

Concurrent requests each want one forward pass over one image. On a CPU the
fixed cost of a call (Python, dispatch, thread wake-up) dominates a 28-px image,
so the service queues requests for a model and runs whatever has arrived within
``max_wait`` seconds (up to ``max_batch`` images) as one batch, in a worker
thread so the event loop keeps accepting requests. With ``enabled=False`` every
request runs alone (the baseline the load benchmark compares against).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class _Item:
    image: np.ndarray
    future: asyncio.Future[Any]


@dataclass
class MicroBatcher:
    """Collect single-image calls to ``fn(images (N, H, W[, C])) -> list`` into batches."""

    fn: Callable[[np.ndarray], list[Any]]
    max_batch: int = 32
    max_wait: float = 0.004
    enabled: bool = True
    _queue: asyncio.Queue[_Item] | None = field(default=None, init=False, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    batches: int = field(default=0, init=False)
    items: int = field(default=0, init=False)

    async def submit(self, image: np.ndarray) -> Any:
        """The result for one image (awaits its batch)."""
        if not self.enabled:
            self.batches += 1
            self.items += 1
            return (await asyncio.to_thread(self.fn, image[None]))[0]
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop:  # first call, or a new event loop (tests)
            self._queue, self._loop = asyncio.Queue(), loop
            self._task = loop.create_task(self._run())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(image, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            batch = [first]
            deadline = asyncio.get_running_loop().time() + self.max_wait
            while len(batch) < self.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            await self._dispatch(batch)

    async def _dispatch(self, batch: list[_Item]) -> None:
        groups: dict[tuple[int, ...], list[_Item]] = {}
        for item in batch:  # images of one shape go together
            groups.setdefault(item.image.shape, []).append(item)
        for items in groups.values():
            try:
                results = await asyncio.to_thread(self.fn, np.stack([i.image for i in items]))
            except Exception as exc:  # hand the error to every waiting request
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(items)
            for item, result in zip(items, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    async def close(self) -> None:
        if self._task is not None and self._loop is asyncio.get_running_loop():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._task = None
        self._queue = None
