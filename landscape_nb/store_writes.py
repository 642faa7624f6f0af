"""Buffered writes of a ``SurfaceStore``: tiles are kept in memory and flushed together.

Tiles are buffered in memory and flushed together: when ``FLUSH_SECONDS`` (0.5 s) have
passed since the last flush (or ten times the last flush's duration, when flushes are slow:
very large grids), also while no tile arrives (a background thread); at once for a tile
that took longer than ten flushes to compute (so a flush costs under a tenth of its time and
a slow tile is on disk before listeners hear of it); when the last point is written; before
the provenance is updated; and on ``close``. A flush writes each touched chunk of the value
arrays, then of ``done``; zarr replaces every chunk file atomically (temporary file, then
rename), so at any moment the store on disk is consistent. A ``kill -9`` loses at most the
tiles finished since the last flush (at most the last flush interval, 0.5 s on a typical
store), which a rerun recomputes; an interrupted run resumes with every flushed tile.
A failed write (a full disk, ``OSError`` errno 28, or any other) raises a ``LandscapeError``
naming the path; what was flushed before stays valid and a rerun resumes from it.
"""
from __future__ import annotations

import threading
import time
import weakref
from typing import Any

import numpy as np

from .errors import LandscapeError
from .grid import Tile
from .store_lock import _os_detail

FLUSH_SECONDS = 0.5
FLUSH_COST_FACTOR = 10  # the flush interval is at least this many times the last flush's duration


class _BufferedWrites:
    """Writing a ``SurfaceStore``'s tiles (a base of ``SurfaceStore``; uses its attributes)."""

    _lock: Any
    _arrays: dict[str, Any]
    _values: dict[str, np.ndarray]
    _done: np.ndarray
    _n_todo: int
    _chunks: tuple[int, int]
    SEAL: str  # the seal array's name, and its values (`store_chunks._ChunkReads`)
    _seals: Any

    def write(self, tile: Tile, values: np.ndarray) -> None:
        """Buffer one tile's ``values`` (``*tile.shape``, 1 + n_metrics), loss first; see the module doc.

        A volume's arrays are stored flat, (nz * ny, nx): slice k of a tile is rows k * ny + (y0:y1)."""
        if self._lock is None:
            raise LandscapeError(
                f"the store {str(self.path)!r} is open read-only (it was finished, or opened with mode='r'); "
                "open it with SurfaceStore.open(path, mode='a') to write"
            )
        self._raise_background_error()
        values = np.asarray(values)
        names = self._value_names
        if values.shape != (*tile.shape, len(names)):
            raise LandscapeError(
                f"values of shape {values.shape} for tile {tile.index}; expected {(*tile.shape, len(names))} "
                f"(rows, cols, loss + {len(names) - 1} metric(s))"
            )
        if tile.z0 is None:
            blocks = [(tile.y0, tile.y1, values)]
        else:
            ny = self._store_shape[1]
            blocks = [(k * ny + tile.y0, k * ny + tile.y1, values[k - tile.z0]) for k in range(tile.z0, tile.z1)]
        cy, cx = self._chunks
        with self._mutex:
            for y0, y1, block in blocks:
                sl = (slice(y0, y1), slice(tile.x0, tile.x1))
                for k, name in enumerate(names):
                    self._values[name][sl] = block[..., k]
                self._n_todo -= block[..., 0].size - int(np.count_nonzero(self._done[sl]))
                self._done[sl] = True
                self._dirty.update((i, j) for i in range(y0 // cy, (y1 - 1) // cy + 1)
                                   for j in range(tile.x0 // cx, (tile.x1 - 1) // cx + 1))
            self._pending += 1
            now = time.monotonic()
            # due after the flush interval, or at once for a slow tile (a flush costs under 1/10 of its time)
            due = (now - self._last_flush >= self._interval
                   or now - self._last_write >= FLUSH_COST_FACTOR * max(self._flush_cost, 1e-3))
            self._last_write = now
        if due or self._n_todo == 0:
            self.flush()
        elif self._flusher is None:
            self._flusher = threading.Thread(target=_flush_loop, args=(weakref.ref(self), self._stop),
                                             name=f"store-flush {self.path.name}", daemon=True)
            self._flusher.start()

    def flush(self) -> None:
        """Write every buffered tile: the touched chunks of the value arrays, then of ``done``."""
        self._raise_background_error()
        with self._mutex:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._dirty:
            return
        t0 = time.monotonic()
        regions = [self._region(idx) for idx in sorted(self._dirty)]
        try:
            for name in self._value_names:  # values first: ``done`` never claims a value not on disk
                arr, data = self._arrays[name], self._values[name]
                for region in regions:
                    arr[region] = data[region]
            if self.SEAL in self._arrays:  # then their seals (stores written before them have none)
                for region in regions:
                    self._arrays[self.SEAL][region] = self._seals(region)
            arr = self._arrays["done"]
            for region in regions:
                arr[region] = self._done[region].astype("uint8")
        except Exception as exc:
            raise self._write_error(exc) from exc
        self._dirty.clear()
        self._pending = 0
        now = time.monotonic()
        self._flush_cost = now - t0
        self._interval = max(FLUSH_SECONDS, FLUSH_COST_FACTOR * self._flush_cost)
        self._last_flush = now

    def _write_error(self, exc: BaseException) -> LandscapeError:
        return LandscapeError(
            f"cannot write to the store {str(self.path)!r}: {_os_detail(exc)}; the {self._pending} tile(s) "
            "finished since its last flush are not stored. What is stored stays valid: free space (or fix the "
            "location) and rerun with the same arguments to resume"
        )

    def _raise_background_error(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc


def _flush_loop(ref: "weakref.ref[_BufferedWrites]", stop: threading.Event) -> None:
    """Flush a writer's buffered tiles once they are ``_interval`` old, also while no tile arrives.

    Holds the store only weakly, so a writer dropped without ``close`` is still collected
    (``__del__`` flushes and frees the lock)."""
    interval = FLUSH_SECONDS
    while not stop.wait(min(interval, 1.0) / 2):
        store = ref()
        if store is None:
            return
        with store._mutex:
            interval = store._interval
            if store._dirty and time.monotonic() - store._last_flush >= interval:
                try:
                    store._flush_locked()
                except BaseException as exc:  # handed to the writer's thread at its next call
                    store._error = exc
                    return
        del store
