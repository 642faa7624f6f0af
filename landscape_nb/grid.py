"""1D and 2D grids of direction coefficients, split into rectangular tiles.

A tile is a contiguous block of grid points; tiles are the unit of work, of
storage and of streaming. ``coarse_to_fine`` orders them so that the first tiles
spread evenly over the grid and the picture sharpens as the rest arrive.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import LandscapeError

MAX_PER_AXIS = 4096
MAX_POINTS = 1 << 22


@dataclass(frozen=True)
class Axis:
    start: float
    stop: float
    num: int

    @classmethod
    def parse(cls, value, name: str) -> "Axis":
        if isinstance(value, Axis):
            return value
        if isinstance(value, str):
            parts = value.replace(",", ":").split(":")
            value = tuple(parts)
        if not isinstance(value, Sequence) or len(value) != 3:
            raise LandscapeError(
                f"{name}={value!r}; expected (start, stop, num), e.g. {name}=(-1, 1, 51)"
            )
        try:
            start, stop = float(value[0]), float(value[1])
            num_f = float(value[2])
        except (TypeError, ValueError):
            raise LandscapeError(f"{name}={value!r}; expected numbers (start, stop, num), e.g. (-1, 1, 51)") from None
        if not (math.isfinite(start) and math.isfinite(stop)):
            raise LandscapeError(f"{name} range {start}..{stop} is not finite; give finite numbers, e.g. (-1, 1, 51)")
        if not stop > start:
            raise LandscapeError(
                f"{name} range {start}..{stop} is empty or reversed; expected start < stop, e.g. ({min(start, stop)}, "
                f"{max(start, stop) if stop != start else start + 1}, {value[2]})"
            )
        if num_f != int(num_f) or num_f < 2:
            raise LandscapeError(f"{name} resolution {value[2]!r}; expected an integer ≥ 2 points")
        num = int(num_f)
        if num > MAX_PER_AXIS:
            raise LandscapeError(
                f"{name} resolution {num} is larger than {MAX_PER_AXIS} points per axis; use a coarser grid "
                "or zoom into a smaller range"
            )
        return cls(start, stop, num)

    def values(self) -> np.ndarray:
        return np.linspace(self.start, self.stop, self.num)


@dataclass(frozen=True)
class Tile:
    """A block of grid points: rows ``y0:y1`` and columns ``x0:x1`` (1D: y0=0, y1=1)."""

    index: tuple[int, int]
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y1 - self.y0, self.x1 - self.x0)

    @property
    def n_points(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)


@dataclass(frozen=True)
class Grid:
    """Coefficient grid: ``x`` always, ``y`` for a plane. Points are (α, β) or (α,)."""

    x: Axis
    y: Axis | None = None

    @classmethod
    def make(cls, x, y=None) -> "Grid":
        grid = cls(Axis.parse(x, "x"), None if y is None else Axis.parse(y, "y"))
        if grid.n_points > MAX_POINTS:
            raise LandscapeError(
                f"a grid of {grid.n_points} points is larger than the limit of {MAX_POINTS}; "
                "use fewer points per axis"
            )
        return grid

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.x.num,) if self.y is None else (self.y.num, self.x.num)

    @property
    def shape2d(self) -> tuple[int, int]:
        return (1, self.x.num) if self.y is None else (self.y.num, self.x.num)

    @property
    def n_points(self) -> int:
        return self.x.num * (1 if self.y is None else self.y.num)

    def default_tile(self) -> tuple[int, int]:
        """About 64 tiles for a plane (16 for a line): fine-grained enough to stream and balance."""
        ny, nx = self.shape2d
        if self.y is None:
            return (1, max(1, math.ceil(nx / 16)))
        return (max(1, math.ceil(ny / 8)), max(1, math.ceil(nx / 8)))

    def check_tile(self, tile) -> tuple[int, int]:
        if tile is None:
            return self.default_tile()
        if isinstance(tile, (int, np.integer)):
            tile = (1, int(tile)) if self.y is None else (int(tile), int(tile))
        try:
            ty, tx = (int(t) for t in tile)
        except (TypeError, ValueError):
            raise LandscapeError(f"tile={tile!r}; expected an int or (rows, cols), e.g. tile=(8, 8)") from None
        if ty < 1 or tx < 1 or (self.y is None and ty != 1):
            raise LandscapeError(f"tile={tile!r}; expected positive sizes (and 1 row for a 1D grid)")
        return ty, tx

    def tiles(self, tile=None) -> list[Tile]:
        ty, tx = self.check_tile(tile)
        ny, nx = self.shape2d
        return [
            Tile((i, j), i * ty, min(ny, (i + 1) * ty), j * tx, min(nx, (j + 1) * tx))
            for i in range(math.ceil(ny / ty))
            for j in range(math.ceil(nx / tx))
        ]

    def coords(self, tile: Tile) -> np.ndarray:
        """(n_points, ndim) coefficients of a tile's points, row-major (y outer, x inner)."""
        xs = self.x.values()[tile.x0:tile.x1]
        if self.y is None:
            return xs[:, None]
        ys = self.y.values()[tile.y0:tile.y1]
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        return np.stack([xx.ravel(), yy.ravel()], axis=1)

    def to_json(self) -> dict:
        axis = lambda a: None if a is None else [a.start, a.stop, a.num]  # noqa: E731
        return {"x": axis(self.x), "y": axis(self.y)}


def coarse_to_fine(index_shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Tile indices ordered by halving strides: the first ones cover the tile grid evenly.

    Stride ``s`` (a power of two, from the largest that fits down to 1) adds every
    tile whose row and column are multiples of ``s`` not added before, so after
    each level the covered tiles form a regular lattice over the whole grid.
    """
    n_rows, n_cols = index_shape
    stride = 1 << max(0, math.ceil(math.log2(max(n_rows, n_cols, 1))))
    seen: set[tuple[int, int]] = set()
    order: list[tuple[int, int]] = []
    while stride >= 1:
        level = [
            (i, j)
            for i in range(0, n_rows, stride)
            for j in range(0, n_cols, stride)
            if (i, j) not in seen
        ]
        # spread each level: within a level visit far-apart tiles first (bit-reversed order)
        level.sort(key=lambda ij: (_bitrev(ij[0] // stride), _bitrev(ij[1] // stride)))
        seen.update(level)
        order.extend(level)
        stride //= 2
    return order


def _bitrev(k: int, bits: int = 16) -> int:
    return int(f"{k:0{bits}b}"[::-1], 2)
