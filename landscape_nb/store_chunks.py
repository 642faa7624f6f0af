"""The store's chunk layout and verified reads: which chunks hold which points, and damage records.

A store's arrays are stored flat, (rows, cols) or (nz * ny, nx) for a volume; opening a store
reads ``done`` first, then the values, and checks every chunk that holds finished points is
present and decodes (see ``landscape_nb.store``). ``SurfaceStore`` gets these reads from
``_ChunkReads``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .errors import LandscapeError
from .grid import Grid

logger = logging.getLogger("landscape_nb.store")  # the store's messages keep one logger name
_DAMAGE_SAID: set[tuple[str, tuple[str, ...]]] = set()  # (store, its damage) warned about in this process


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


def grid_from_spec(spec: Mapping) -> Grid:
    g = spec["grid"]
    return Grid.make(tuple(g["x"]), None if g["y"] is None else tuple(g["y"]),
                     None if g.get("z") is None else tuple(g["z"]))


SEAL = "seal"  # the array of point seals (`point_seals`); stores written before it have none and are not sealed


def point_seals(key: str, values: list[np.ndarray], region: tuple[slice, slice], n_cols: int) -> np.ndarray:
    """A 32-bit seal per point of ``region`` (rows, cols of the flat arrays): a mix of the store's spec ``key``, the
    point's flat index and the exact bits of each of its ``values`` (float64 arrays of the region's shape, loss
    first). A chunk's CRC holds only for its own bytes: a loss chunk copied in from another store of the same grid
    (merging cluster stores by hand) read as this store's, complete, up to 4.3x off (trial s37). Its seals, made
    for another key or other values, do not match. Not cryptographic: it finds copies, not forgeries."""
    import hashlib

    mult, mix = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)
    rows = np.arange(region[0].start, region[0].stop, dtype=np.uint64)[:, None]
    cols = np.arange(region[1].start, region[1].stop, dtype=np.uint64)[None, :]
    h = (rows * np.uint64(n_cols) + cols) * mult ^ np.uint64(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16))
    with np.errstate(over="ignore"):
        for v in values:
            h = (h ^ np.ascontiguousarray(v, dtype=np.float64).view(np.uint64)) * mix
            h ^= h >> np.uint64(31)
    return (h & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _flat_shape(grid: Grid) -> tuple[int, int]:
    """The 2D shape the arrays are stored in: (rows, cols), or (nz * ny, nx) for a volume."""
    shape = grid.store_shape
    return shape if len(shape) == 2 else (shape[0] * shape[1], shape[2])


class _ChunkReads:
    """Reading and verifying a ``SurfaceStore``'s chunks (a base of ``SurfaceStore``; uses its attributes)."""

    damage: list[Damage]
    _shape: tuple[int, int]
    _chunks: tuple[int, int]
    _arrays: dict[str, Any]
    _values: dict[str, np.ndarray]
    _done: np.ndarray
    _n_todo: int

    def _load(self) -> None:
        """Read ``done`` then the values, verify every chunk holding finished points, drop damaged ones."""
        shape = self._shape = _flat_shape(grid_from_spec(self.spec))
        names = ["done"] + self._value_names + ([SEAL] if SEAL in self.group else [])
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
        if SEAL in arrays:  # values that are not those this store sealed: copied in from another store
            seals, bad_seals = self._read_checked(SEAL, arrays[SEAL], 0)
            bad += [(SEAL, idx, problem) for idx, problem in bad_seals]
            unreadable = {idx for _, idx, _ in bad}
            for idx in self._chunk_indices():
                region = self._region(idx)
                if idx in unreadable or not done[region].any():
                    continue
                made = self._seals(region, values)
                if (made != seals[region])[done[region]].any():
                    bad.append((SEAL, idx, ("the points' loss or metrics there do not match their seals: not the "
                                            "values this store wrote (a chunk copied in from another store?)")))
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
        said = (str(self.path), tuple(d.describe() for d in damage))
        if damage and said not in _DAMAGE_SAID:  # a store is read 2-3 times by one run (before and under its lock)
            _DAMAGE_SAID.add(said)
            logger.warning(
                "the landscape store %s has %d damaged chunk(s) (%d tile(s)); their points count as not computed "
                "and are recomputed when the run is resumed: %s", self.path, len(damage), len(self.damaged_tiles()),
                "; ".join(d.describe() for d in damage[:8]) + (f"; and {len(damage) - 8} more" if len(damage) > 8 else ""))

    SEAL = SEAL

    def _seals(self, region: tuple[slice, slice], values: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """`point_seals` of ``region`` from ``values`` (default: the store's in memory)."""
        values = self._values if values is None else values
        return point_seals(self.manifest["key"], [values[n][region] for n in self._value_names], region,
                           self._shape[1])

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
