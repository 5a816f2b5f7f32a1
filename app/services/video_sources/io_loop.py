"""An asyncio event loop in a daemon thread, for the S3 client and the cache's downloads.

The S3 client is bound to the loop it was made on, but its callers are several: the server's loop (opening
a task, the media endpoint) and each task's decoding thread (the next sub-video at a segment boundary).
One loop of its own serves them all through ``concurrent.futures.Future`` and keeps download work off the
loop that paces frames and serves WebSockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class IoLoop:
    def __init__(self, name: str = "video-io") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Run ``coro`` on this loop; cancelling the returned future cancels the coroutine."""
        if self._closed:
            coro.close()
            raise RuntimeError("the video I/O loop is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def close(self, shutdown: Coroutine[Any, Any, None] | None = None, timeout: float = 10.0) -> None:
        """Cancel what is still running, then run ``shutdown`` (closing clients) and stop the thread."""
        if self._closed:
            if shutdown is not None:
                shutdown.close()
            return
        self._closed = True

        async def wind_down() -> None:
            me = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not me]
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if shutdown is not None:
                await shutdown

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(wind_down(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
