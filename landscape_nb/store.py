"""A persistent, resumable surface store: a zarr group plus a JSON manifest, one writer at a time.

Layout of ``path/`` (zarr v3, plain JSON metadata and binary chunks, no pickle):
``loss`` and ``metric.<name>`` float64 arrays (rows, cols) — (nz * ny, nx) for a volume, slice k
in rows k * ny to (k + 1) * ny — a ``seal`` uint32 array (`store_chunks.point_seals`; stores
written before it have none) and a ``done`` uint8 array, all with the same chunks, and the
manifest in the group attributes (``zarr.json``): the format, the spec, its hash key, the tile
shape, the metric names and the provenance.

Format ``landscape_nb.surface/2`` (written now): chunks are whole multiples of the tile,
up to ``CHUNK_POINTS`` points each, so a 10,000-tile store is one chunk per array and loads
in a few reads; every chunk ends with a CRC-32C of its compressed bytes (zarr's ``crc32c``
codec), so a damaged chunk is detected when read. Format ``/1`` (one chunk per tile, no
checksum) still loads and resumes; there a damaged chunk is one that is missing or does
not decode (a ``/1`` tile whose loss was NaN everywhere was never written, so it is
reported missing and recomputed once).

Integrity: opening a store reads ``done`` first, then the values, and checks every chunk
that holds finished points is present and decodes, and that its points match their seals (a
chunk copied in from another store passes its CRC, not the seals). A chunk that does not is
reported with its file path (a logged warning, and ``provenance["damaged_tiles"]`` /
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

Buffered writes and flushing: ``landscape_nb.store_writes``; the writer lock:
``landscape_nb.store_lock``; the chunk layout and verified reads: ``landscape_nb.store_chunks``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import LandscapeError
from .store_chunks import SEAL, Damage, _ChunkReads, _flat_shape, grid_from_spec
from .store_mismatch import code_differences, describe_differences
from .store_lock import DEFAULT_WAIT_SECONDS, WAIT_ENV, WriterLock, _os_detail, wait_seconds  # noqa: F401
from .store_writes import FLUSH_COST_FACTOR, FLUSH_SECONDS, _BufferedWrites  # noqa: F401
from .surface import Surface

logger = logging.getLogger(__name__)

FORMAT = "landscape_nb.surface/2"
FORMAT_V1 = "landscape_nb.surface/1"
READABLE_FORMATS = (FORMAT, FORMAT_V1)
MAX_DIRECTION_BYTES = 512 * 2**20  # directions kept in a store up to this size (a 64M-parameter plane in float32)
MANIFEST_KEYS = ("format", "key", "spec", "tile", "metrics", "provenance")
CHUNK_POINTS = 1 << 16  # target points per chunk (512 KiB of float64)


def _codecs() -> dict:
    """How every array of a store is compressed and checked: zstd, then a CRC-32C of each chunk."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return {"compressors": [ZstdCodec(level=1), Crc32cCodec()]}


class StoreMismatch(LandscapeError):
    """The store holds another surface than the one asked for (another spec, model code or settings, or
    other values of the globals the user's code reads), so it cannot be resumed."""


def _chunk_shape(tile: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
    """Whole multiples of ``tile`` (clipped to ``shape``), whole rows first, about ``CHUNK_POINTS`` points."""
    ny, nx = shape
    ty, tx = min(tile[0], ny), min(tile[1], nx)
    cx = min(nx, tx * min(math.ceil(nx / tx), max(1, CHUNK_POINTS // (ty * tx))))
    cy = min(ny, ty * min(math.ceil(ny / ty), max(1, CHUNK_POINTS // (ty * cx))))
    return cy, cx


def _check_path(path: Path) -> None:
    if path.exists() and not path.is_dir():
        reference = path.suffix.lower() in (".h5", ".hdf5")  # load_surface("cli.h5"): the reader is another (s36)
        raise LandscapeError(
            f"the store path {str(path)!r} is a file; expected a directory for the surface store (a new or "
            "existing landscape store): "
            + ("a .h5 surface file (the reference's layout, or --h5's) is read with lnb.load_reference_surface("
               "path)" if reference else "choose another path")
        )


def _refuse_foreign_folder(path: Path) -> None:
    """Refuse ``path`` where it is a folder holding files and no store (not overwritten, not resumed). A store that
    another writer has renamed there since its caller looked is not refused: the caller goes on to the lock, and
    reads it under it (review s57: it was called foreign, with advice to delete it)."""
    if path.is_dir() and not (path / "zarr.json").exists() and any(path.iterdir()):
        raise LandscapeError(
            f"{str(path)!r} exists and is not an empty landscape store; choose a new path or delete it"
        )


class SurfaceStore(_ChunkReads, _BufferedWrites):
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
                "compute_surface(..., store=PATH) or `landscape-nb compute ... --store PATH`"
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

    @classmethod
    def create(cls, path: str | Path, spec: dict, key: str, tile: tuple[int, int],
               metric_names: list[str], provenance: dict, *, lock: WriterLock | None = None,
               wait: float | None = None) -> "SurfaceStore":
        """A new store at ``path``, open for writing; built under a temporary sibling name, then renamed.

        Takes the writer lock unless ``lock`` (held) is given."""
        import zarr

        path = Path(path)
        _check_path(path)
        _refuse_foreign_folder(path)
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
                codecs = _codecs()
                for name in ["loss"] + [f"metric.{m}" for m in metric_names]:
                    group.create_array(name, shape=shape, chunks=chunks, dtype="float64", fill_value=np.nan, **codecs)
                group.create_array(SEAL, shape=shape, chunks=chunks, dtype="uint32", fill_value=0, **codecs)
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
            found._check_resumable(spec, key, tile, provenance)
            if found.is_complete:
                return found
        else:  # refused before the lock: no <path>.lock left beside the user's own folder (trial s56)
            _refuse_foreign_folder(path)
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
            with contextlib.suppress(Exception):  # counted now: the other run kept writing while this one waited
                found = cls._read(path)
            raise LandscapeError(f"{exc} (it holds {found._done.size - found._n_todo} of {found._done.size} "
                                 "points now)") from exc.__cause__
        try:
            if (path / "zarr.json").exists():  # re-read under the lock: another writer may have added tiles
                store = cls._read(path)
                store._check_resumable(spec, key, tile, provenance)
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

    def _check_resumable(self, spec: Mapping, key: str, tile, provenance: Mapping | None = None) -> None:
        code = code_differences(self.manifest["provenance"], provenance)
        if self.manifest["key"] != key:
            diffs = describe_differences(self.manifest["spec"], spec, self.manifest["provenance"], provenance)
            if "globals" in code:  # e.g. why a notebook's loss, fingerprinted with its globals, differs
                diffs.append(f"of what the model, loss_fn or metrics read from their modules, {code['globals']}")
            owner = WriterLock(self.path).live_owner()
            fix = (f"It is being written by {owner}: use another store path" if owner
                   else "To resume it, rerun with the stored values; otherwise use another store path, or delete "
                        "this one to recompute")
            more = f"; and {len(diffs) - 8} more" if len(diffs) > 8 else ""
            raise StoreMismatch(
                f"the store {str(self.path)!r} holds a different surface, so it cannot be resumed; what differs: "
                + "; ".join(diffs[:8]) + more + f". {fix}."
            )
        if "source" in code:  # with the settings it changed, where they say more ("then dm.Net; now dm.Net", s36)
            settings = f"; with it, {code['modules']}" if "modules" in code else ""
            if "globals_beyond_source" in code:  # a global edited too was left out (re-trial s36)
                settings += ("; and of what the model, loss_fn or metrics read from their modules, "
                             f"{code['globals_beyond_source']}")
            raise StoreMismatch(
                f"the store {str(self.path)!r} was computed with other source code for the model's classes "
                f"({code['source']}{settings}), with the same weights: resuming would mix two functions' values. Use "
                "another store path, or delete this one to recompute.")
        if "modules" in code:
            raise StoreMismatch(
                f"the store {str(self.path)!r} was computed with the same weights but other module settings: "
                f"{code['modules']}: resuming would mix two models' values. Set them back to resume, or use another "
                "store path, or delete this one to recompute.")
        if "globals" in code:
            raise StoreMismatch(
                f"the store {str(self.path)!r} was computed with the same weights and arguments but other values of "
                f"what the model, loss_fn or metrics read from their modules: {code['globals']} (a "
                "module-level global, or the source of a function of yours; name() entries are functions): resuming "
                "would mix two functions' values. Set them back to resume, or use another store path, or delete this "
                "one to recompute.")
        if tile is not None and tuple(self.manifest["tile"]) != tuple(tile):
            raise LandscapeError(
                f"the store {str(self.path)!r} was tiled {tuple(self.manifest['tile'])}, now {tuple(tile)} was asked; "
                "pass tile=None or the stored tile to resume it (CLI: leave out --tile)"
            )

    def _become_writer(self, lock: WriterLock) -> None:
        import zarr

        group = zarr.open_group(str(self.path), mode="r+")
        self.group = group
        names = ["done"] + self._value_names + ([SEAL] if SEAL in group else [])  # older stores: no seals
        self._arrays = {n: group[n].with_config({"write_empty_chunks": True}) for n in names}
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

    def save_directions(self, directions) -> None:
        """Keep ``directions`` in the store (array ``directions``, shape (n, n_params), with the layout and
        provenance as attributes) unless they are there already: ``load_directions`` gives them back.
        Over ``MAX_DIRECTION_BYTES`` they are left out and the provenance says so."""
        if self._lock is None:
            return
        found = self.group.get("directions")
        if found is not None and found.attrs.get("complete"):
            return
        from .directions import _jsonable

        vectors = directions.vectors.detach().cpu().numpy()
        if vectors.nbytes > MAX_DIRECTION_BYTES:
            self.update_provenance({"directions_stored": (
                f"no: {vectors.nbytes:,} bytes, over the {MAX_DIRECTION_BYTES:,} a store keeps; keep them "
                "yourself with Directions.save")})
            return
        try:
            if found is not None:  # a write cut short (killed): written again
                del self.group["directions"]
            arr = self.group.create_array("directions", shape=vectors.shape, dtype=vectors.dtype,
                                          chunks=(1, min(vectors.shape[1], 2**22)), **_codecs())
            arr[...] = vectors
            arr.attrs.update({"layout": directions.layout.to_json(), "provenance": _jsonable(directions.provenance),
                              "complete": True})  # last: a store killed before this rewrites them
        except Exception as exc:
            raise self._write_error(exc) from exc
        self.update_provenance({"directions_stored": "yes"})

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


def load_directions(path: str | Path):
    """The directions a surface in the store at ``path`` was computed along, as ``compute_surface`` kept them.

    >>> d = lnb.load_directions("runs/r20.zarr")   # e.g. to project a trajectory on the same plane
    >>> rec.project(d, data=(x, y))

    Parameters
    ----------
    path : str or Path
        The store directory.

    Returns
    -------
    Directions
        Vectors of shape (n, n_params) with their layout and provenance, exactly those of the run
        (their fingerprint is checked against the store's spec).

    Raises
    ------
    LandscapeError
        No store at ``path``; a store without them (written before landscape_nb kept them, by a run
        stopped before it wrote them, or over ``MAX_DIRECTION_BYTES``: the provenance says which); or
        kept directions that do not match the store's spec (damaged).
    """
    import torch

    from .directions import Directions
    from .params import ParamLayout

    store = SurfaceStore._read(Path(path))
    arr = store.group.get("directions")
    if arr is None or not arr.attrs.get("complete"):
        said = str(store.manifest["provenance"].get("directions_stored", ""))
        why = said if said.startswith("no:") else (
            "it was written before landscape_nb kept them, or by a run stopped before it wrote them")
        raise LandscapeError(
            f"the store {str(path)!r} holds no directions ({why}); rebuild them as its provenance says (e.g. "
            "random_directions with the same model, norm, ignore and seed; a run resuming an unfinished store keeps "
            "them), or load the ones you saved (Directions.load)")
    try:
        d = Directions(torch.from_numpy(np.asarray(arr[...])), ParamLayout.from_json(arr.attrs["layout"]),
                       dict(arr.attrs["provenance"]))
    except Exception as exc:  # noqa: BLE001 - zarr and the codecs raise many kinds for damaged chunks
        raise LandscapeError(f"the directions kept in the store {str(path)!r} cannot be read ({type(exc).__name__}: "
                             f"{exc}); rebuild them as its provenance says, or load the ones you saved") from None
    expected = (store.spec.get("directions") or {}).get("fingerprint")
    if expected is not None and d.fingerprint() != expected:
        raise LandscapeError(f"the directions kept in the store {str(path)!r} are not the ones its surface was "
                             "computed along (their fingerprint differs from the spec's: damaged or edited); rebuild "
                             "them as its provenance says, or load the ones you saved")
    return d


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
