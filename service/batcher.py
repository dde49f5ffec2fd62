"""Cross-request batching: the windows of concurrent requests share one model call.

    batcher = Batcher(run, max_batch_size=64, max_wait_s=10.0)
    logits, embeddings = await batcher.infer(patches)    # (n, T, M) -> (n, C), (n, D), from any task

One model call runs at a time, in a worker thread. While it runs, new requests queue; when it ends,
everything queued (up to `max_batch_size` windows) goes into the next call. A lone request never
waits for a batch to fill (its latency is one model call), and under load the batches fill by
themselves. A request with more windows than `max_batch_size` is split across calls. Windows that
waited longer than `max_wait_s` are refused (Overloaded, 503) rather than served late.
Torch-free. The service runs it in its API process.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import anyio
import numpy as np

from core import errors


@dataclass
class _Pending:
    patches: np.ndarray  # (n, T, M), n <= max_batch_size
    future: asyncio.Future
    queued_at: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(self, run, max_batch_size: int, max_wait_s: float, on_batch=lambda size: None):
        self.run = run  # (B, T, M) float32 -> a tuple of (B, ...) arrays (the model's outputs), blocking
        self.on_batch = on_batch  # called with the windows of each model call (metrics)
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queue: deque[_Pending] = deque()
        self.worker: asyncio.Task | None = None
        self.calls, self.patches = 0, 0  # since start: the evidence of batching

    async def infer(self, patches: np.ndarray) -> tuple[np.ndarray, ...]:
        """(n, T, M) -> the model's outputs for these n windows, batched with whatever else is queued."""
        if len(patches) == 0:
            raise ValueError("no windows to score")
        loop = asyncio.get_running_loop()
        chunks = [_Pending(patches[i : i + self.max_batch_size], loop.create_future())
                  for i in range(0, len(patches), self.max_batch_size)]
        self.queue.extend(chunks)
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._drain())
        outputs = await asyncio.gather(*(c.future for c in chunks), return_exceptions=True)
        for out in outputs:
            if isinstance(out, BaseException):
                raise out
        return tuple(np.concatenate(parts) for parts in zip(*outputs))

    async def _drain(self) -> None:
        while self.queue:
            batch = self._take()
            if not batch:
                continue
            try:
                out = await anyio.to_thread.run_sync(self.run, np.concatenate([p.patches for p in batch]))
            except Exception as e:  # noqa: BLE001 - the callers get the error, the batcher goes on
                for p in batch:
                    _settle(p.future, error=e)
                continue
            size = sum(len(p.patches) for p in batch)
            self.calls, self.patches = self.calls + 1, self.patches + size
            self.on_batch(size)
            start = 0
            for p in batch:
                _settle(p.future, result=tuple(o[start : start + len(p.patches)] for o in out))
                start += len(p.patches)

    def _take(self) -> list[_Pending]:
        """The next batch: queued chunks in order, up to max_batch_size windows; stale ones refused."""
        batch, size, now = [], 0, time.monotonic()
        while self.queue and size + len(self.queue[0].patches) <= self.max_batch_size:
            pending = self.queue.popleft()
            if pending.future.done():  # its request was cancelled (client gone)
                continue
            if now - pending.queued_at > self.max_wait_s:
                _settle(pending.future, error=errors.Overloaded(
                    f"windows waited {now - pending.queued_at:.1f} s for the model (limit {self.max_wait_s:g} s)"))
                continue
            batch.append(pending)
            size += len(pending.patches)
        return batch


def _settle(future: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
