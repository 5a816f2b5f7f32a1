"""Event-loop lag: how late a periodic wake-up fires. If heavy work ever lands on the loop, this shows it."""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np


class LoopLagMonitor:
    def __init__(self, interval_s: float = 0.1, window: int = 300) -> None:
        self.interval_s = interval_s
        self._lags: deque[float] = deque(maxlen=window)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-lag-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self._lags.append(max(0.0, (time.perf_counter() - t0 - self.interval_s) * 1000.0))

    def summary(self) -> dict[str, float | None]:
        if not self._lags:
            return {"p50": None, "p99": None, "max": None}
        a = np.fromiter(self._lags, float)
        p50, p99 = np.percentile(a, [50, 99])
        return {"p50": round(float(p50), 2), "p99": round(float(p99), 2), "max": round(float(a.max()), 2)}
