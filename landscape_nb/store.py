"""A persistent, resumable surface store: a zarr group plus a JSON manifest, one writer at a time.

Layout of ``path/`` (zarr v3, plain JSON metadata and binary chunks, no pickle):
``loss`` and ``metric.<name>`` float64 arrays (rows, cols) — (nz * ny, nx) for a volume, slice k
in rows k * ny to (k + 1) * ny — and a ``done`` uint8 array,
all with the same chunks, and the manifest in the group attributes (``zarr.json``): the
format, the spec, its hash key, the tile shape, the metric names and the provenance.

Format ``landscape_nb.surface/2`` (written now): chunks are whole multiples of the tile,
up to ``CHUNK_POINTS`` points each, so a 10,000-tile store is one chunk per array and loads
in a few reads; every chunk ends with a CRC-32C of its compressed bytes (zarr's ``crc32c``
codec), so a damaged chunk is detected when read. Format ``/1`` (one chunk per tile, no
checksum) still loads and resumes; there a damaged chunk is one that is missing or does
not decode (a ``/1`` tile whose loss was NaN everywhere was never written, so it is
reported missing and recomputed once).

Integrity: opening a store reads ``done`` first, then the values, and checks every chunk
that holds finished points is present and decodes. A chunk that does not is reported with
its file path (a logged warning, and ``provenance["damaged_tiles"]`` /
``provenance["damaged_chunks"]`` on the loaded Surface); its points count as not done, read
as NaN and are recomputed on resume. Missing arrays or manifest keys raise a
``LandscapeError`` naming what is missing.

Writing: one writer per store. A run that has points to compute holds an advisory lock,
``<path>.lock`` beside the store (``filelock``), with the owner's pid, host and start time in
``<path>.lock.owner.json``; a second writer waits up to ``LANDSCAPE_NB_STORE_WAIT`` seconds
(default 10; ``inf`` waits for ever) and then refuses, naming that owner. A new store is
built under a temporary sibling name and renamed into place, so no one ever sees a half-made
store. Opening a finished store (nothing to compute) takes no lock and writes nothing, so
finished stores load and "resume" on read-only locations.

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

import json
import logging
import math
import os
import shutil
import socket
import sys
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import LandscapeError
from .grid import Grid, Tile
from .surface import Surface

logger = logging.getLogger(__name__)

FORMAT = "landscape_nb.surface/2"
FORMAT_V1 = "landscape_nb.surface/1"
READABLE_FORMATS = (FORMAT, FORMAT_V1)
MANIFEST_KEYS = ("format", "key", "spec", "tile", "metrics", "provenance")
CHUNK_POINTS = 1 << 16  # target points per chunk (512 KiB of float64)
FLUSH_SECONDS = 0.5
FLUSH_COST_FACTOR = 10  # the flush interval is at least this many times the last flush's duration
WAIT_ENV = "LANDSCAPE_NB_STORE_WAIT"
DEFAULT_WAIT_SECONDS = 10.0


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def spec_differences(stored: Mapping, wanted: Mapping) -> list[str]:
    a, b = _flatten(stored), _flatten(wanted)
    return [f"{k}: stored {a.get(k)!r}, now {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def wait_seconds(wait: float | None = None) -> float:
    """How long a second writer waits for the store's lock: ``wait``, else ``$LANDSCAPE_NB_STORE_WAIT``, else 10 s."""
    if wait is None:
        raw = os.environ.get(WAIT_ENV)
        if raw is None or not raw.strip():
            return DEFAULT_WAIT_SECONDS
        try:
            wait = float(raw)
        except ValueError:
            raise LandscapeError(
                f"{WAIT_ENV}={raw!r}; expected a number of seconds (0 refuses at once, inf waits for ever)"
            ) from None
    if math.isnan(wait) or wait < 0:
        raise LandscapeError(f"store wait of {wait!r} s; expected a number ≥ 0 (inf waits for ever)")
    return float(wait)


class WriterLock:
    """The advisory lock that makes one process at a time the writer of the store at ``store_path``.

    ``<store>.lock`` is locked with ``filelock`` (``flock``: released by the OS when the
    holder dies, so a ``kill -9`` never leaves a stale lock); ``<store>.lock.owner.json``
    records who holds it, for the message a waiting writer gives.
    """

    def __init__(self, store_path: str | Path):
        self.store_path = Path(store_path)
        self.path = self.store_path.with_name(self.store_path.name + ".lock")
        self.owner_path = self.store_path.with_name(self.store_path.name + ".lock.owner.json")
        self._lock = None

    @property
    def held(self) -> bool:
        return self._lock is not None and self._lock.is_locked

    def owner(self) -> str:
        """"process N on host H since T", or what is known about the holder."""
        try:
            o = json.loads(self.owner_path.read_text())
            return f"process {o['pid']} on host {o['host']} since {o['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return f"another process (its owner record {str(self.owner_path)!r} is not written yet or unreadable)"

    def live_owner(self) -> str | None:
        """The holder's description when its owner record names a live writer (or one on another host), else None.

        Reads the record only (no locking, nothing written), so it works on read-only locations."""
        try:
            o = json.loads(self.owner_path.read_text())
            pid, host = int(o["pid"]), str(o["host"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if host == socket.gethostname():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None  # a writer killed with -9 left its record; its flock died with it
            except OSError:
                pass
        return self.owner()

    def acquire(self, wait: float | None = None) -> "WriterLock":
        from filelock import FileLock, Timeout

        seconds = wait_seconds(wait)
        lock = FileLock(str(self.path), thread_local=False)
        try:
            lock.acquire(timeout=-1 if math.isinf(seconds) else seconds)
        except Timeout:
            raise LandscapeError(
                f"the store {str(self.store_path)!r} is being written by {self.owner()}; waited {seconds:g} s. "
                "Wait for that run to finish and rerun (it resumes from the store), use another store path, "
                f"or wait longer with {WAIT_ENV}=<seconds> (inf waits for ever)"
            ) from None
        except OSError as exc:
            raise LandscapeError(
                f"cannot lock the store {str(self.store_path)!r} for writing: opening {str(self.path)!r} failed "
                f"({_os_detail(exc)}); the location must be writable to compute missing points. "
                "load_surface(path) still reads it; copy it to a writable place to resume it"
            ) from exc
        self._lock = lock
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        try:
            tmp = self.owner_path.with_name(f".{self.owner_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.owner_path)
        except OSError as exc:  # the lock holds without the record; only a waiter's message is poorer
            logger.debug("could not record the owner of %s: %s", self.path, exc)
        return self

    def release(self) -> None:
        if self._lock is None:
            return
        try:
            self.owner_path.unlink(missing_ok=True)  # before releasing: never delete the next owner's record
        except OSError:
            pass
        finally:
            lock, self._lock = self._lock, None
            lock.release()


@dataclass(frozen=True)
class Damage:
    """A chunk whose finished points cannot be trusted: ``problem`` is "missing" or "unreadable (...)"."""

    path: str
    array: str
    rows: tuple[int, int]
    cols: tuple[int, int]
    problem: str

    def describe(self) -> str:
        return f"{self.path}: {self.problem} (rows {self.rows[0]}:{self.rows[1]}, cols {self.cols[0]}:{self.cols[1]})"


def _chunk_shape(tile: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
    """Whole multiples of ``tile`` (clipped to ``shape``), whole rows first, about ``CHUNK_POINTS`` points."""
    ny, nx = shape
    ty, tx = min(tile[0], ny), min(tile[1], nx)
    cx = min(nx, tx * min(math.ceil(nx / tx), max(1, CHUNK_POINTS // (ty * tx))))
    cy = min(ny, ty * min(math.ceil(ny / ty), max(1, CHUNK_POINTS // (ty * cx))))
    return cy, cx


def _os_detail(exc: BaseException) -> str:
    """``[Errno 28] No space left on device (the file)`` for an OSError, else the exception's type and text."""
    if isinstance(exc, OSError) and exc.strerror:
        code = f"[Errno {exc.errno}] " if exc.errno else ""
        return f"{code}{exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
    return f"{type(exc).__name__}: {exc}"


def _check_path(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise LandscapeError(
            f"store={str(path)!r} is a file; expected a directory for the surface store (a new or existing "
            "landscape store): choose another path"
        )


class SurfaceStore:
    """An open store. ``open`` reads one (verified), ``open_or_create`` resumes or makes one for writing.

    A store opened for writing holds the writer lock until ``close``; ``write`` buffers
    tiles, ``flush`` writes them. Use it as a context manager or call ``close``.
    """

    def __init__(self, path: Path, group: Any, manifest: dict):
        self.path = Path(path)
        self.group = group
        self.manifest = manifest
        self.damage: list[Damage] = []
        self._lock: WriterLock | None = None
        self._arrays: dict[str, Any] = {}
        self._values: dict[str, np.ndarray] = {}
        self._done = np.zeros((0, 0), dtype=bool)
        self._n_todo = 0  # points not done
        self._shape = (0, 0)
        self._chunks = (1, 1)
        self._dirty: set[tuple[int, int]] = set()
        self._pending = 0  # tiles written since the last flush
        self._mutex = threading.RLock()
        self._interval = FLUSH_SECONDS
        self._flush_cost = 0.0  # seconds the last flush took
        self._last_flush = self._last_write = time.monotonic()
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ opening ----

    @classmethod
    def open(cls, path: str | Path, mode: str = "r", *, wait: float | None = None) -> "SurfaceStore":
        """The store at ``path``, read and verified; ``mode="a"`` also takes the writer lock."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise LandscapeError(f"mode={mode!r}; expected 'r' (read) or 'a' (resume, taking the writer lock)")
        if mode == "r":
            return cls._read(path)
        lock = WriterLock(path).acquire(wait)
        try:
            store = cls._read(path)
            store._become_writer(lock)
        except BaseException:
            lock.release()
            raise
        return store

    @classmethod
    def _read(cls, path: Path) -> "SurfaceStore":
        import zarr

        _check_path(path)
        if not (path / "zarr.json").is_file():
            raise LandscapeError(
                f"no landscape store at {str(path)!r} (no zarr.json there); expected a directory written by "
                "compute_surface(..., store=PATH)"
            )
        try:
            group = zarr.open_group(str(path), mode="r")
            attrs = group.attrs.asdict()
        except Exception as exc:  # zarr raises many kinds for damaged metadata
            raise LandscapeError(
                f"cannot read the landscape store at {str(path)!r} ({type(exc).__name__}: {exc}); "
                "its zarr.json is damaged or it is not a landscape_nb store: recompute into another path "
                "(or delete this one and rerun)"
            ) from None
        manifest = attrs.get("landscape_nb")
        where = f"{str(path / 'zarr.json')!r}, attribute 'landscape_nb'"
        if not isinstance(manifest, dict):
            raise LandscapeError(
                f"{str(path)!r} is a zarr group but not a landscape store: its manifest ({where}) is missing; "
                "expected a directory written by compute_surface(..., store=PATH)"
            )
        fmt = manifest.get("format")
        if fmt not in READABLE_FORMATS:
            raise LandscapeError(
                f"{str(path)!r} holds format {fmt!r}; expected one of {READABLE_FORMATS}: choose another path"
            )
        missing = [k for k in MANIFEST_KEYS if k not in manifest]
        grid_ok = isinstance(manifest.get("spec"), Mapping) and isinstance(manifest["spec"].get("grid"), Mapping)
        if missing or not grid_ok:
            what = ", ".join(repr(k) for k in missing) if missing else "'spec.grid'"
            raise LandscapeError(
                f"the landscape store {str(path)!r} is damaged: its manifest ({where}) lacks {what}; expected the "
                f"keys {', '.join(MANIFEST_KEYS)} (and spec.grid). Recompute into another path (or delete this "
                "one and rerun)"
            )
        try:
            grid_from_spec(manifest["spec"])
        except (KeyError, TypeError, ValueError) as exc:  # LandscapeError is a ValueError
            raise LandscapeError(
                f"the landscape store {str(path)!r} is damaged: its manifest ({where}) has spec.grid="
                f"{manifest['spec'].get('grid')!r} ({type(exc).__name__}: {exc}); expected "
                "{'x': [start, stop, num], 'y': [start, stop, num] or None}. Recompute into another path"
            ) from None
        store = cls(path, group, dict(manifest))
        store._load()
        return store

    def _load(self) -> None:
        """Read ``done`` then the values, verify every chunk holding finished points, drop damaged ones."""
        shape = self._shape = _flat_shape(grid_from_spec(self.spec))
        names = ["done"] + self._value_names
        arrays = {}
        for name in names:
            try:
                arr = self.group[name]
            except Exception:
                raise LandscapeError(
                    f"the landscape store {str(self.path)!r} is damaged: array {name!r} "
                    f"({str(self.path / name / 'zarr.json')!r}) is missing or unreadable; expected the arrays "
                    f"{', '.join(repr(n) for n in names)}. Recompute into another path (or delete this one and rerun)"
                ) from None
            if tuple(arr.shape) != tuple(shape):
                raise LandscapeError(
                    f"the landscape store {str(self.path)!r} is damaged: array {name!r} has shape {tuple(arr.shape)}, "
                    f"expected {tuple(shape)} for its grid. Recompute into another path (or delete this one and rerun)"
                )
            if name != "done" and tuple(arr.chunks) != tuple(arrays["done"].chunks):
                raise LandscapeError(
                    f"the landscape store {str(self.path)!r} is damaged: array {name!r} has chunks {arr.chunks}, "
                    f"'done' has {arrays['done'].chunks}; expected the same. Recompute into another path"
                )
            arrays[name] = arr
        self._chunks = tuple(int(c) for c in arrays["done"].chunks)  # type: ignore[assignment]
        bad: list[tuple[str, tuple[int, int], str]] = []
        done_raw, bad_done = self._read_checked("done", arrays["done"], 0)
        bad += [("done", idx, problem) for idx, problem in bad_done]
        done = done_raw.astype(bool)
        values = {}
        for name in self._value_names:
            data, bad_values = self._read_checked(name, arrays[name], np.nan)
            bad += [(name, idx, problem) for idx, problem in bad_values]
            bad += [(name, idx, "missing") for idx in self._missing_chunks(name, arrays[name], done)]
            values[name] = data
        damage = []
        for name, idx, problem in sorted(set(bad)):
            region = self._region(idx)
            done[region] = False
            key = arrays[name].metadata.encode_chunk_key(idx)
            damage.append(Damage(str(self.path / name / key), name, (region[0].start, region[0].stop),
                                 (region[1].start, region[1].stop), problem))
        for data in values.values():
            data[~done] = np.nan  # not done (never computed, unflushed or damaged): NaN
        self._arrays, self._values, self._done, self.damage = arrays, values, done, damage
        self._n_todo = int(done.size - np.count_nonzero(done))
        if damage:
            logger.warning(
                "the landscape store %s has %d damaged chunk(s) (%d tile(s)); their points count as not computed "
                "and are recomputed when the run is resumed: %s", self.path, len(damage), len(self.damaged_tiles()),
                "; ".join(d.describe() for d in damage[:8]) + (f"; and {len(damage) - 8} more" if len(damage) > 8 else ""))

    def _chunk_indices(self) -> list[tuple[int, int]]:
        ny, nx = self._shape
        cy, cx = self._chunks
        return [(i, j) for i in range(math.ceil(ny / cy)) for j in range(math.ceil(nx / cx))]

    def _region(self, idx: tuple[int, int]) -> tuple[slice, slice]:
        cy, cx = self._chunks
        ny, nx = self._shape
        return (slice(idx[0] * cy, min(ny, (idx[0] + 1) * cy)), slice(idx[1] * cx, min(nx, (idx[1] + 1) * cx)))

    def _read_checked(self, name: str, arr, fill) -> tuple[np.ndarray, list[tuple[tuple[int, int], str]]]:
        """The whole array in one read; chunk by chunk only when that fails, to find the bad ones."""
        try:
            return np.asarray(arr[...]), []
        except Exception:  # a chunk does not decode (truncated, checksum mismatch, ...)
            pass
        data = np.full(arr.shape, fill, dtype=arr.dtype)
        bad = []
        for idx in self._chunk_indices():
            region = self._region(idx)
            try:
                data[region] = arr[region]
            except Exception as exc:
                bad.append((idx, f"unreadable ({type(exc).__name__}: {exc})"))
        return data, bad

    def _missing_chunks(self, name: str, arr, done: np.ndarray) -> list[tuple[int, int]]:
        """Chunks that hold finished points but whose file is gone (zarr would read them as NaN)."""
        root = self.path / name
        out = []
        for idx in self._chunk_indices():
            if done[self._region(idx)].any() and not (root / arr.metadata.encode_chunk_key(idx)).is_file():
                out.append(idx)
        return out

    @classmethod
    def create(cls, path: str | Path, spec: dict, key: str, tile: tuple[int, int],
               metric_names: list[str], provenance: dict, *, lock: WriterLock | None = None,
               wait: float | None = None) -> "SurfaceStore":
        """A new store at ``path``, open for writing; built under a temporary sibling name, then renamed.

        Takes the writer lock unless ``lock`` (held) is given."""
        import zarr
        from zarr.codecs import Crc32cCodec, ZstdCodec

        path = Path(path)
        _check_path(path)
        if path.exists() and any(path.iterdir()):
            raise LandscapeError(
                f"{str(path)!r} exists and is not an empty landscape store; choose a new path or delete it"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        own = lock is None
        lock = lock or WriterLock(path).acquire(wait)
        try:
            if (path / "zarr.json").exists():  # made while we waited for the lock
                raise LandscapeError(
                    f"{str(path)!r} was created by another process while this one waited; resume it with "
                    "open_or_create or choose another path")
            for stale in os.listdir(path.parent):  # orphans: creation only happens under the lock
                if stale.startswith(f".{path.name}.creating-"):
                    shutil.rmtree(path.parent / stale, ignore_errors=True)
            shape = _flat_shape(grid_from_spec(spec))
            chunks = _chunk_shape(tuple(tile)[-2:], shape)  # type: ignore[arg-type]
            tmp = path.with_name(f".{path.name}.creating-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            manifest = {"format": FORMAT, "key": key, "spec": spec, "tile": list(tile),
                        "metrics": list(metric_names), "provenance": provenance}
            try:
                group = zarr.open_group(str(tmp), mode="w-")
                codecs = dict(compressors=[ZstdCodec(level=1), Crc32cCodec()])
                for name in ["loss"] + [f"metric.{m}" for m in metric_names]:
                    group.create_array(name, shape=shape, chunks=chunks, dtype="float64", fill_value=np.nan, **codecs)
                group.create_array("done", shape=shape, chunks=chunks, dtype="uint8", fill_value=0, **codecs)
                group.attrs["landscape_nb"] = json.loads(json.dumps(manifest))
                os.rename(tmp, path)  # atomic; replaces an empty directory
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise LandscapeError(
                    f"cannot create the store {str(path)!r}: {_os_detail(exc)}; nothing was left there: "
                    "free space or choose a writable path"
                ) from exc
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            store = cls._read(path)
            store._become_writer(lock)
        except BaseException:
            if own:
                lock.release()
            raise
        return store

    @classmethod
    def open_or_create(cls, path, spec: dict, key: str, tile, default_tile, metric_names,
                       provenance, *, wait: float | None = None) -> "SurfaceStore":
        """Resume a store whose spec key matches; refuse one that holds a different surface.

        A finished, undamaged store is opened read-only: no lock, nothing written (so it
        "resumes" on a read-only location). Otherwise the writer lock is taken and the store
        is re-read under it (another writer may have added tiles meanwhile), or created.

        Parameters
        ----------
        path : str or Path
            The store directory; its parent holds ``<name>.lock`` and ``<name>.lock.owner.json``.
        spec, key : dict, str
            The surface's JSON spec and its hash; a stored key that differs is refused.
        tile, default_tile : (rows, cols) or None, (rows, cols)
            ``tile=None`` resumes with the stored tiling, or creates with ``default_tile``.
        metric_names : list of str
            One ``metric.<name>`` array each, after ``loss``.
        provenance : dict
            JSON-able descriptive extras, stored in the manifest.
        wait : float, optional
            Seconds to wait for another writer; default ``$LANDSCAPE_NB_STORE_WAIT`` or 10.

        Returns
        -------
        SurfaceStore
            Verified (damaged chunks logged, their points not done); ``writable`` unless finished.

        Raises
        ------
        LandscapeError
            A different surface or tiling is stored; another process writes it (after ``wait``);
            the location is not writable but points are missing; a missing array or manifest key.
        """
        path = Path(path)
        _check_path(path)
        found = None
        if (path / "zarr.json").exists():
            found = cls._read(path)
            found._check_resumable(spec, key, tile)
            if found.is_complete:
                return found
        if not path.parent.is_dir():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LandscapeError(
                    f"cannot create the folder {str(path.parent)!r} for the store {str(path)!r}: "
                    f"{_os_detail(exc)}; choose a writable path") from exc
        try:
            lock = WriterLock(path).acquire(wait)
        except LandscapeError as exc:
            if found is None:
                raise
            raise LandscapeError(f"{exc} (it holds {found._done.size - found._n_todo} of {found._done.size} "
                                 "points)") from exc.__cause__
        try:
            if (path / "zarr.json").exists():  # re-read under the lock: another writer may have added tiles
                store = cls._read(path)
                store._check_resumable(spec, key, tile)
                if store.is_complete:  # finished by the writer we waited for: nothing to write
                    lock.release()
                    return store
                store._become_writer(lock)
                if store.damage:
                    logger.warning("recomputing %d damaged tile(s) of %s", len(store.damaged_tiles()), path)
                return store
            return cls.create(path, spec, key, tile or default_tile, metric_names, provenance, lock=lock)
        except BaseException:
            lock.release()
            raise

    def _check_resumable(self, spec: Mapping, key: str, tile) -> None:
        if self.manifest["key"] != key:
            diffs = spec_differences(self.manifest["spec"], spec)
            owner = WriterLock(self.path).live_owner()
            fix = (f"it is being written by {owner}: use another store path" if owner
                   else "Use another store path, or delete this one to recompute")
            raise LandscapeError(
                f"the store {str(self.path)!r} holds a different surface, so it cannot be resumed; differences: "
                + "; ".join(diffs[:6]) + f". {fix}."
            )
        if tile is not None and tuple(self.manifest["tile"]) != tuple(tile):
            raise LandscapeError(
                f"the store {str(self.path)!r} was tiled {tuple(self.manifest['tile'])}, now {tuple(tile)} was asked; "
                "pass tile=None (or the stored tile) to resume it"
            )

    def _become_writer(self, lock: WriterLock) -> None:
        import zarr

        group = zarr.open_group(str(self.path), mode="r+")
        self.group = group
        self._arrays = {n: group[n].with_config({"write_empty_chunks": True}) for n in ["done"] + self._value_names}
        self._lock = lock
        self._last_flush = self._last_write = time.monotonic()

    # --------------------------------------------------------------- properties ----

    @property
    def spec(self) -> dict:
        return self.manifest["spec"]

    @property
    def tile(self) -> tuple[int, int]:
        return tuple(self.manifest["tile"])  # type: ignore[return-value]

    @property
    def metric_names(self) -> list[str]:
        return list(self.manifest["metrics"])

    @property
    def _value_names(self) -> list[str]:
        return ["loss"] + [f"metric.{m}" for m in self.metric_names]

    @property
    def writable(self) -> bool:
        return self._lock is not None

    @property
    def is_complete(self) -> bool:
        return self._n_todo == 0

    def damaged_tiles(self) -> list[list[int]]:
        """Indices ``[row, col]`` (``[slab, row, col]`` for a volume) of the tiles that overlap a
        damaged chunk."""
        ty, tx = self.tile[-2:]
        tz, ny = (self.tile[0], self._store_shape[1]) if len(self.tile) == 3 else (1, None)
        out = set()
        for d in self.damage:
            for r in range(d.rows[0], d.rows[1]):
                k, row = (r // ny, r % ny) if ny else (None, r)
                for j in range(d.cols[0] // tx, (d.cols[1] - 1) // tx + 1):
                    out.add((row // ty, j) if k is None else (k // tz, row // ty, j))
        return [list(ij) for ij in sorted(out)]

    @property
    def _store_shape(self) -> tuple[int, ...]:
        return grid_from_spec(self.spec).store_shape

    # ------------------------------------------------------------------ reading ----

    def done_mask(self) -> np.ndarray:
        with self._mutex:
            return self._done.reshape(self._store_shape).copy()

    def read(self) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Copies of (loss, {metric: values}, done), each of ``Grid.store_shape`` ((rows, cols), or
        (nz, ny, nx) for a volume); NaN where not done."""
        shape = self._store_shape
        with self._mutex:
            loss = self._values["loss"].reshape(shape).copy()
            metrics = {m: self._values[f"metric.{m}"].reshape(shape).copy() for m in self.metric_names}
            return loss, metrics, self._done.reshape(shape).copy()

    def surface(self) -> Surface:
        loss, metrics, done = self.read()
        provenance = dict(self.manifest["provenance"])
        if self.damage:
            provenance["damaged_tiles"] = self.damaged_tiles()
            provenance["damaged_chunks"] = [d.describe() for d in self.damage]
        return make_surface(self.spec, loss, metrics, done, provenance)

    # ------------------------------------------------------------------ writing ----

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

    def update_provenance(self, extra: Mapping[str, Any]) -> None:
        """Merge ``extra`` into the provenance; written (after a flush) only by a store open for writing."""
        self.manifest["provenance"] = {**self.manifest["provenance"], **extra}
        if self._lock is None:
            return
        manifest = json.loads(json.dumps(self.manifest))
        self.flush()
        try:
            self.group.attrs["landscape_nb"] = manifest
        except Exception as exc:
            raise self._write_error(exc) from exc

    def close(self) -> None:
        """Flush what is buffered and release the writer lock (idempotent).

        If an exception is already propagating, a failed flush is added to it as a note
        (and logged) instead of replacing it."""
        if self._lock is None:
            return
        outer = sys.exc_info()[1]  # an exception propagating through the caller's finally
        self._stop.set()
        if self._flusher is not None:
            if self._flusher is not threading.current_thread():  # __del__ may run on the flusher itself
                self._flusher.join()
            self._flusher = None
        try:
            self.flush()
        except BaseException as exc:
            if outer is None:
                raise
            if str(exc) != str(outer):  # not the same failed flush again
                logger.error("%s", exc)
                outer.add_note(str(exc))
        finally:
            lock, self._lock = self._lock, None
            lock.release()

    def __enter__(self) -> "SurfaceStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # a writer dropped without close: keep its tiles, free the lock
        try:
            if self._lock is not None:
                self.close()
        except Exception:
            pass


def _flush_loop(ref: "weakref.ref[SurfaceStore]", stop: threading.Event) -> None:
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


def grid_from_spec(spec: Mapping) -> Grid:
    g = spec["grid"]
    return Grid.make(tuple(g["x"]), None if g["y"] is None else tuple(g["y"]),
                     None if g.get("z") is None else tuple(g["z"]))


def _flat_shape(grid: Grid) -> tuple[int, int]:
    """The 2D shape the arrays are stored in: (rows, cols), or (nz * ny, nx) for a volume."""
    shape = grid.store_shape
    return shape if len(shape) == 2 else (shape[0] * shape[1], shape[2])


def make_surface(spec: Mapping, loss: np.ndarray, metrics: Mapping[str, np.ndarray], done: np.ndarray,
                 provenance: Mapping) -> Surface:
    """Build a Surface from stored (rows, cols) or (nz, ny, nx) arrays; 1D grids are squeezed to (cols,)."""
    grid = grid_from_spec(spec)
    shape = grid.shape
    return Surface(
        x=grid.x.values(),
        y=None if grid.y is None else grid.y.values(),
        loss=loss.reshape(shape),
        metrics={k: v.reshape(shape) for k, v in metrics.items()},
        done=done.reshape(shape).astype(bool),
        spec=dict(spec),
        provenance=dict(provenance),
        z=None if grid.z is None else grid.z.values(),
    )


def load_surface(path: str | Path) -> Surface:
    """The (possibly partial) surface saved at ``path`` by ``compute_surface(..., store=path)``.

    Reads only (no lock, nothing written), so it works on read-only locations and while a
    run is writing the store (it then sees every tile flushed so far). Each array is read
    whole, so a load takes a few reads whatever the number of tiles (10,000 tiles: ~5 ms).

    Parameters
    ----------
    path : str or Path
        The store directory.

    Returns
    -------
    Surface
        ``loss`` and ``metrics`` of shape (ny, nx), or (nx,) for a line; NaN with ``done``
        False where not computed. Every chunk is verified (present, decodable, its CRC-32C
        matching): damaged ones are logged as a warning, their points count as not done,
        and ``provenance["damaged_tiles"]`` (``[row, col]`` tile indices) and
        ``provenance["damaged_chunks"]`` (file path, problem, rows and columns) list them;
        rerunning the computation recomputes them.

    Raises
    ------
    LandscapeError
        No store at ``path``, ``path`` is a file, unreadable metadata, or a missing array or
        manifest key (named, with its path).

    References
    ----------
    Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural Nets",
    NeurIPS 2018.
    """
    return SurfaceStore.open(path).surface()
