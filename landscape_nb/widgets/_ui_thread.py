"""Hand updates from a worker thread to the UI thread (the kernel's event loop), throttled.

The Explorer computes in a worker thread, but traits and the live figure may change only
on the kernel's main thread. `UiQueue.post` (any thread) queues a callable and wakes the
event loop; `UiQueue.drain` (the loop's thread, or whoever waits) runs what is due, in order.

Three kinds of update:

- ``"tile"``: a new partial surface. Only the newest pending tile is kept, and tiles are
  applied at most once per ``throttle`` seconds: each one makes the browser redraw a WebGL
  surface, and a kernel busy redrawing does not answer.
- ``"end"``: the final result. It never waits, and the tiles still pending are dropped.
- anything else (``"status"``): applied in order, at once.

Without an event loop (a plain script, no ``asyncio`` loop running when the loop was
captured) ``post`` runs the update at once, on the posting thread; a tile within ``throttle``
seconds of the last one applied is dropped (a newer tile, or the end, shows its points).
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable

TILE, END = "tile", "end"


class UiQueue:
    """A queue of updates from worker threads to one event loop.

    Parameters
    ----------
    throttle : float
        At least this many seconds between two ``"tile"`` updates; may be changed at any time.
    """

    def __init__(self, throttle: float = 0.5):
        self.throttle = float(throttle)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[str, Callable[[], None]]] = []
        self._last_tile = 0.0
        self._lock = threading.Lock()

    def capture_loop(self) -> asyncio.AbstractEventLoop | None:
        """Deliver to the event loop running in this thread from now on (None if there is none).

        Called when a run starts: its first tile is shown at once, however recent the last
        run's last tile (the throttle spaces updates within a run).
        """
        self._last_tile = 0.0
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        return self.loop

    @property
    def pending(self) -> bool:
        """Whether updates are waiting to be applied."""
        return bool(self._pending)

    def post(self, kind: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop's thread (at once if there is no loop); a tile replaces an older pending tile."""
        loop = self.loop
        if loop is None or loop.is_closed():
            if kind == TILE:  # throttled here too: each tile redrew the figure, 7x the engine's time (s36); a
                now = time.monotonic()  # newer tile, or the end, shows what one dropped would have
                if now - self._last_tile < self.throttle:
                    return
                self._last_tile = now
            fn()
            return
        with self._lock:
            if kind == TILE:
                self._pending = [p for p in self._pending if p[0] != TILE]
            self._pending.append((kind, fn))
        try:
            loop.call_soon_threadsafe(self.drain)
        except RuntimeError:  # the loop closed meanwhile; whoever waits drains
            pass

    def drain(self) -> None:
        """Apply the updates that are due, in order; schedule another drain for a tile held back."""
        now = time.monotonic()
        with self._lock:
            pending, self._pending = self._pending, []
            ended = any(kind == END for kind, _ in pending)
            due = []
            for kind, fn in pending:
                if kind == TILE and ended:
                    continue
                if kind == TILE and now - self._last_tile < self.throttle:
                    self._pending.append((kind, fn))  # the newest tile, kept for later
                    continue
                due.append((kind, fn))
        for k, (kind, fn) in enumerate(due):
            try:
                fn()
            except BaseException:  # an interrupt (■ during `wait`) or an update's error: the updates after it stay
                with self._lock:  # queued for the next drain (the run's end among them: dropped, the state
                    self._pending[:0] = due[k + 1:]  # read "running" after the run had stopped), which is
                loop = self.loop                     # scheduled: nothing else may post again
                if due[k + 1:] and loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(self.drain)
                raise
            if kind == TILE:
                self._last_tile = time.monotonic()  # measured after the update: spacing >= throttle
        with self._lock:
            wait = self.throttle - (time.monotonic() - self._last_tile) if self._pending else None
        loop = self.loop
        if wait is not None and loop is not None and not loop.is_closed():
            loop.call_later(max(wait, 0.01), self.drain)
