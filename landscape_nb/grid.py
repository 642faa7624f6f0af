"""1D, 2D and 3D grids of direction coefficients, split into rectangular tiles.

A tile is a contiguous block of grid points; tiles are the unit of work, of
storage and of streaming. ``coarse_to_fine`` orders them so that the first tiles
spread evenly over the grid (patches of true values across the whole range, never
interpolated between them) and the gaps between them fill in as the rest arrive. A 3D grid
(a volume, three directions) is stored (z, y, x) and tiled (depth, rows, cols); the
default tile is one z slice deep, and coarse-to-fine runs over all three tile axes.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import LandscapeError, warn_user

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
            # an array reads as points (np.linspace(-1, 1, 3) is 3 of them), whatever its length: refused, not guessed
            many = isinstance(value, np.ndarray) and value.ndim > 0 or isinstance(value, Sequence) and len(value) > 3
            raise LandscapeError(
                f"{name}={value!r}; expected (start, stop, num), e.g. {name}=(-1, 1, 51)"
                + (" (the range and the count of evenly spaced points, not the points"
                   + ("; a tuple, not an array)" if isinstance(value, np.ndarray) else ")") if many else "")
            )
        try:
            start, stop = float(value[0]), float(value[1])
            num_f = float(value[2])
        except (TypeError, ValueError):
            raise LandscapeError(f"{name}={value!r}; expected numbers (start, stop, num), e.g. (-1, 1, 51)") from None
        if not (math.isfinite(start) and math.isfinite(stop)):
            raise LandscapeError(f"{name} range {start}..{stop} is not finite; give finite numbers, e.g. (-1, 1, 51)")
        if not stop > start:
            num_ok = value[2] if math.isfinite(num_f) and num_f == int(num_f) and num_f >= 2 else 2  # the example
            # must pass both checks
            raise LandscapeError(
                f"{name} range {start}..{stop} is empty or reversed; expected start < stop and at least 2 points, "
                f"e.g. ({min(start, stop)}, {max(start, stop) if stop != start else start + 1}, {num_ok})"
            )
        as_points = isinstance(value, list) and math.isclose(float(value[2]) - stop, stop - start, rel_tol=1e-9)
        points = (f" ({name} takes the range and the count, not the points: for {start:g}, {stop:g}, {num_f:g} give "
                  f"{name}=({start:g}, {num_f:g}, 3))" if as_points else
                  f" ({name}={value!r} is read as (start, stop, num))" if isinstance(value, list) else "")
        if not math.isfinite(num_f) or num_f != int(num_f) or num_f < 2:
            raise LandscapeError(f"{name} resolution {value[2]!r}; expected an integer ≥ 2 points{points}")
        num = int(num_f)
        if as_points and num == 2:  # [0, 1, 2] drew 2 points on 0..1 with no word (trial s56); [-1, 1, 3] is a
            warn_user(f"{name}={value!r} is read as (start, stop, num): {num} points from {start:g} to {stop:g}"  # range
                      f"{points}; pass a tuple, {name}=({start:g}, {stop:g}, 2), where (start, stop, num) is meant")
        if num > MAX_PER_AXIS:
            raise LandscapeError(
                f"{name} resolution {num} is larger than {MAX_PER_AXIS} points per axis; use a coarser grid "
                "or zoom into a smaller range"
            )
        return cls(start, stop, num)

    def values(self) -> np.ndarray:
        """The ``num`` coefficients (a copy of an array computed once: every tile slices them); a point
        within rounding of 0 or 1 is exactly that."""
        v = self.__dict__.get("_values")
        if v is None:
            v = np.linspace(self.start, self.stop, self.num)
            # the model at 0 (and a path's other model at 1) exactly, not a few 1e-16 off by linspace's rounding
            tiny = 4 * np.finfo(float).eps * max(abs(self.start), abs(self.stop))
            if tiny < 0.5:  # else rounding cannot tell 0 from 1 (a range of ~1e15): the points stay linspace's
                v[np.abs(v) <= tiny] = 0.0
                v[np.abs(v - 1.0) <= tiny] = 1.0
            object.__setattr__(self, "_values", v)  # a cache, not a field: equality and the spec ignore it
        return v.copy()


@dataclass(frozen=True)
class Tile:
    """A block of grid points: rows ``y0:y1`` and columns ``x0:x1`` (1D: y0=0, y1=1), and for a
    3D grid slices ``z0:z1`` (``z0`` None on 1D and 2D grids; ``index`` then has three entries)."""

    index: tuple[int, ...]
    y0: int
    y1: int
    x0: int
    x1: int
    z0: int | None = None
    z1: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """(rows, cols), or (depth, rows, cols) on a 3D grid: the shape of ``region``."""
        rc = (self.y1 - self.y0, self.x1 - self.x0)
        return rc if self.z0 is None else (self.z1 - self.z0, *rc)

    @property
    def region(self) -> tuple[slice, ...]:
        """Where the tile sits in the grid's stored arrays (shape ``Grid.store_shape``)."""
        rc = (slice(self.y0, self.y1), slice(self.x0, self.x1))
        return rc if self.z0 is None else (slice(self.z0, self.z1), *rc)

    @property
    def n_points(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Grid:
    """Coefficient grid: ``x`` always, ``y`` for a plane, ``y`` and ``z`` for a volume.
    Points are (α,), (α, β) or (α, β, γ)."""

    x: Axis
    y: Axis | None = None
    z: Axis | None = None

    @classmethod
    def make(cls, x, y=None, z=None) -> "Grid":
        if z is not None and y is None:
            raise LandscapeError(f"z={z!r} without y; a volume needs x, y and z, e.g. y=(-1, 1, 21), z=(-1, 1, 21)")
        grid = cls(Axis.parse(x, "x"), None if y is None else Axis.parse(y, "y"),
                   None if z is None else Axis.parse(z, "z"))
        if grid.n_points > MAX_POINTS:
            raise LandscapeError(
                f"a grid of {grid.n_points} points is larger than the limit of {MAX_POINTS}; "
                "use fewer points per axis"
            )
        return grid

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2 if self.z is None else 3

    @property
    def shape(self) -> tuple[int, ...]:
        """(nx,), (ny, nx) or (nz, ny, nx): the shape of a Surface's ``loss``."""
        if self.y is None:
            return (self.x.num,)
        return (self.y.num, self.x.num) if self.z is None else (self.z.num, self.y.num, self.x.num)

    @property
    def shape2d(self) -> tuple[int, int]:
        """(1, nx) or (ny, nx): rows and columns of a line or a plane (one z slice of a volume)."""
        return (1, self.x.num) if self.y is None else (self.y.num, self.x.num)

    @property
    def store_shape(self) -> tuple[int, ...]:
        """Shape of the stored arrays: ``shape2d`` for a line or a plane, (nz, ny, nx) for a volume."""
        return self.shape2d if self.z is None else (self.z.num, *self.shape2d)

    @property
    def n_points(self) -> int:
        return math.prod(self.shape)

    def default_tile(self) -> tuple[int, ...]:
        """About 64 tiles for a plane (16 for a line, 16 per z slice of a volume): fine-grained
        enough to stream and balance."""
        ny, nx = self.shape2d
        if self.y is None:
            return (1, max(1, math.ceil(nx / 16)))
        if self.z is not None:
            return (1, max(1, math.ceil(ny / 4)), max(1, math.ceil(nx / 4)))
        return (max(1, math.ceil(ny / 8)), max(1, math.ceil(nx / 8)))

    def check_tile(self, tile) -> tuple[int, ...]:
        """The tile shape for ``tile``: (rows, cols), or (depth, rows, cols) on a 3D grid.

        An int ``t`` is (1, t) on a line, (t, t) on a plane and (1, t, t) (one slice deep) on a
        volume; a volume also takes (rows, cols) as one slice deep."""
        if tile is None:
            return self.default_tile()
        if isinstance(tile, (int, np.integer)):
            tile = (1, int(tile)) if self.y is None else (int(tile), int(tile))
        try:
            sizes = tuple(int(t) for t in tile)
        except (TypeError, ValueError):
            raise LandscapeError(f"tile={tile!r}; expected an int or (rows, cols), e.g. tile=(8, 8)"
                                 + (" or (depth, rows, cols) for a volume" if self.z is not None else "")) from None
        if self.z is not None and len(sizes) == 2:
            sizes = (1, *sizes)
        n = 3 if self.z is not None else 2
        if len(sizes) != n or min(sizes) < 1 or (self.y is None and sizes[0] != 1):
            want = "(depth, rows, cols) or (rows, cols)" if n == 3 else "(rows, cols)"
            raise LandscapeError(f"tile={tile!r}; expected an int or {want} of positive sizes "
                                 "(and 1 row for a 1D grid)")
        return sizes

    def tiles(self, tile=None) -> list[Tile]:
        sizes = self.check_tile(tile)
        shape = self.store_shape
        counts = [range(math.ceil(n / t)) for n, t in zip(shape, sizes)]
        out = []
        for index in itertools.product(*counts):
            lo = [i * t for i, t in zip(index, sizes)]
            hi = [min(n, (i + 1) * t) for i, t, n in zip(index, sizes, shape)]
            if len(index) == 2:
                out.append(Tile(index, lo[0], hi[0], lo[1], hi[1]))
            else:
                out.append(Tile(index, lo[1], hi[1], lo[2], hi[2], lo[0], hi[0]))
        return out

    def coords(self, tile: Tile) -> np.ndarray:
        """(n_points, ndim) coefficients of a tile's points, row-major (z outer, then y, x inner)."""
        xs = self.x.values()[tile.x0:tile.x1]
        if self.y is None:
            return xs[:, None]
        ys = self.y.values()[tile.y0:tile.y1]
        zs = [None] if self.z is None else self.z.values()[tile.z0:tile.z1]
        # rows (z, y, x) with x fastest, as np.meshgrid(zs, ys, xs, indexing="ij") ravelled, in a fifth of its time
        out = np.empty((len(zs), len(ys), len(xs), 2 if self.z is None else 3))
        out[..., 0] = xs
        out[..., 1] = ys[:, None]
        if self.z is not None:
            out[..., 2] = zs[:, None, None]
        return out.reshape(-1, out.shape[-1])

    def to_json(self) -> dict:
        """``{"x": [start, stop, num], "y": [...] or None}``, plus ``"z"`` for a volume only (so the
        spec keys of lines and planes are what they always were)."""
        axis = lambda a: None if a is None else [a.start, a.stop, a.num]  # noqa: E731
        out = {"x": axis(self.x), "y": axis(self.y)}
        if self.z is not None:
            out["z"] = axis(self.z)
        return out


def range_through(start: float, stop: float, num: int, *, unit: bool = False) -> tuple[float, float]:
    """A range of ``num`` evenly spaced points, about ``start..stop``, with 0 on a point (the model at the
    centre), and with ``unit`` 1 as well (the second model of an interpolation or of a plane's axis).

    A chosen range (``auto_range``'s, a scheme's suggestion) is rarely symmetric, so its points miss the
    trained model: the picture then never shows the centre's own loss. The points are shared out between
    the sides in proportion to their lengths, and the step is set so that both ends are covered, rounded up
    to three significant digits (so the ends are short decimals, at most 1 % further out; with ``unit`` the
    step is 1/m, and the ends need not be).
    With ``unit`` the step is 1/m for the whole m whose ends come closest to the range's, so the ends
    are only near the range's: within 20 % of its length from 11 points on, further on a coarser grid.
    Of steps whose ends miss the range's by as much, the finer is taken (3 points on -0.5..1.5 give
    0, 0.5, 1, the midpoint a barrier is read at, rather than 0, 1, 2). A range without 0 inside it
    (with ``unit``: not from at most 0 to at least 1), or of fewer than 3 points, is returned as given.

    >>> range_through(-0.7, 0.9, 21)          # 9 steps left of 0, 11 right, of 0.0819 (0.0818... rounded up)
    (-0.7371, 0.9009)
    >>> range_through(-0.5, 1.5, 31, unit=True)   # 15 steps per unit: 0 and 1 are points 8 and 23
    (-0.5333333333333333, 1.4666666666666668)
    """
    start, stop, steps = float(start), float(stop), int(num) - 1
    if steps < 2 or (not (start <= 0 and stop >= 1) if unit else not start < 0 < stop):
        return start, stop
    if unit:  # m steps per unit length, a left of 0 and b right of 1: the m with the closest ends
        def ends(m):
            a = round((steps - m) * -start / (-start + stop - 1)) if stop - start > 1 else 0
            return -a / m, 1 + (steps - m - a) / m

        def off(m):  # how far the ends miss the range's: the worst, then both, then the finer grid
            lo, hi = ends(m)
            worst, both = max(abs(lo - start), abs(hi - stop)), abs(lo - start) + abs(hi - stop)
            return round(worst, 9), round(both, 9), -m  # rounded: equal misses tie

        return ends(min(range(1, steps + 1), key=off))
    a = min(max(round(steps * -start / (stop - start)), 1), steps - 1)
    h = _ceil_significant(max(-start / a, stop / (steps - a)), 3)  # short ends: the Explorer's boxes show them
    return float(f"{-a * h:.8g}"), float(f"{(steps - a) * h:.8g}")  # a whole number of 3-digit steps, exactly


def _ceil_significant(value: float, digits: int) -> float:
    """``value`` > 0 rounded up to ``digits`` significant decimal digits (0.08181 -> 0.0819 for 3)."""
    scale = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return float(f"{math.ceil(value / scale * (1 - 1e-12)) * scale:.{digits}g}")


class ModelOffGrid(UserWarning):
    """`landscape_nb.compute_surface`'s warning that its grid leaves out, or has no point at, a model of the
    directions (0, and 1 for a path between models), whose own loss no point then holds. The CLI (before the run)
    and the Explorer (in its panel) say it in their own words instead; ``warnings.filterwarnings("ignore",
    category=ModelOffGrid)`` silences it where such a grid is meant."""


def models_between_points(start: float, stop: float, num: int, *, unit: bool = False) -> list[float]:
    """The models' coordinates that ``num`` evenly spaced points on ``start..stop`` miss: 0 (the model at the
    centre), and with ``unit`` 1 (the other model of an interpolation or a plane's axis), where they lie
    inside the range but no point is within 1e-6 of its length of them (closer, the loss drawn is the
    model's to that precision). A figure of such a grid never shows
    those models' own losses (nor a barrier between them, which needs both ends).

    >>> models_between_points(-1, 1, 20), models_between_points(-0.35, 1.2, 21, unit=True)
    ([0.0], [0.0, 1.0])
    """
    if not math.isfinite(float(stop) - float(start)):  # no grid: validate refuses the overflowing range
        return []
    values = Axis(float(start), float(stop), int(num)).values()
    atol = 1e-6 * abs(float(stop) - float(start))
    return [m for m in ((0.0, 1.0) if unit else (0.0,))
            if min(start, stop) <= m <= max(start, stop) and not np.isclose(values, m, rtol=0, atol=atol).any()]


def points_through_models(start: float, stop: float, num: int, *, unit: bool = False, step: int = 1,
                          most: int | None = None) -> int | None:
    """The fewest points above ``num`` (``num + step``, ``num + 2 step``, ... up to ``most``, default
    ``4 num + 1``) whose grid on ``start..stop`` holds the models `models_between_points` looks for; None if
    none does (the range's ends are not whole multiples of a step through 0 and 1)."""
    most = 4 * int(num) + 1 if most is None else int(most)
    return next((k for k in range(int(num) + step, most + 1, step)
                 if not models_between_points(start, stop, k, unit=unit)), None)


def models_at(k: int, models: Sequence[str] | None, unit: bool, ndim: int) -> dict[float, list[str]]:
    """Who sits at 0 and at 1 of axis ``k`` (of ``ndim``): the model at 0 of a random line or plane's; an
    interpolation's two models at 0 and 1; on a plane through three models a at (0, 0), b at (1, 0) and c at
    (0, 1), so two models at 0 of each axis. ``models`` are the path's names (``Directions.provenance["models"]``,
    "model" read as "the model"); without them, "the model" and "the other model".

    >>> models_at(0, ["a", "b", "c"], True, 2), models_at(1, None, True, 1)
    ({0.0: ['a', 'c'], 1.0: ['b']}, {0.0: ['the model'], 1.0: ['the other model']})
    """
    if not unit:
        return {0.0: ["the model"]}
    wanted = 3 if ndim == 2 else 2
    names = [("the model" if n == "model" else str(n)) for n in (models or ())]
    if len(names) != wanted:
        names = ["the model", *(["the other model"] if wanted == 2 else ["the second model", "the third model"])]
    if ndim != 2:
        return {0.0: [names[0]], 1.0: [names[1]]}
    a, b, c = names
    return {0.0: [a, c], 1.0: [b]} if k == 0 else {0.0: [a, b], 1.0: [c]}


def say_models_at(who: dict[float, list[str]], axis: str, ms: Sequence[float]) -> str:
    """"a and b at x = 0 and 1", or on a plane's axis "a and c at x = 0 and b at x = 1" (``who``: `models_at`)."""
    if all(len(who[m]) == 1 for m in ms):
        return f"{' and '.join(who[m][0] for m in ms)} at {axis} = {' and '.join(f'{m:g}' for m in ms)}"
    return " and ".join(f"{' and '.join(who[m])} at {axis} = {m:g}" for m in ms)


def several_at(who: dict[float, list[str]], ms: Sequence[float]) -> bool:
    """Whether more than one model sits at the coordinates ``ms`` (``who``: `models_at`): "lie", not "lies"."""
    return sum(len(who[m]) for m in ms) > 1


def models_outside(start: float, stop: float, *, unit: bool = False) -> list[float]:
    """The models' coordinates (0, and with ``unit`` 1) that the range ``start..stop`` leaves out."""
    return [m for m in ((0.0, 1.0) if unit else (0.0,)) if not min(start, stop) <= m <= max(start, stop)]


def grid_through_models(start: float, stop: float, num: int, *, unit: bool = False, step: int = 1,
                        most: int | None = None) -> tuple[int, float, float] | None:
    """The grid nearest ``num`` points on ``start..stop`` whose points hold the models (0, and with ``unit``
    1), as ``(num, start, stop)``; None where none is found. A range holding them keeps itself and gets
    the fewest points that do (`points_through_models`, ``num + step`` up to ``most``), else keeps ``num``
    and moves a little (`range_through`). A range leaving a model out is widened to it (the model then an
    end point), and where the other falls between points given more points (up to twice as many: the ends
    stay as given, short decimals), else moved by `range_through`.

    >>> grid_through_models(-1, 1, 20), grid_through_models(0.5, 1, 9), grid_through_models(0.3, 1.5, 21, unit=True)
    ((21, -1, 1), (9, 0.0, 1), (22, 0.0, 1.5))
    >>> grid_through_models(0.5, 1.5, 11, unit=True)
    (13, 0.0, 1.5)
    """
    def holds(n, a, b):
        return not models_outside(a, b, unit=unit) and not models_between_points(a, b, n, unit=unit)

    out = models_outside(start, stop, unit=unit)
    lo, hi = (min(start, *out), max(stop, *out)) if out else (start, stop)
    if holds(num, lo, hi):
        return num, lo, hi
    more = points_through_models(lo, hi, num, unit=unit, step=step, most=most)
    moved = range_through(lo, hi, num, unit=unit)
    # a range widened to a model keeps its own (round) ends with up to twice the points before it is moved: moved,
    # 0.5:1.5 at 11 points was suggested as 0:1.428571429, where 0:1.5 holds both models at 13
    prefer_more = not out or (more is not None and more <= 2 * num)
    tries = [(more, lo, hi), (num, *moved)] if prefer_more else [(num, *moved), (more, lo, hi)]
    return next(((n, a, b) for n, a, b in tries if n is not None and holds(n, a, b)), None)


def coarse_to_fine(index_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Tile indices ordered by halving strides: the first ones cover the tile grid evenly.

    Stride ``s`` (a power of two, from the largest that fits down to 1) adds every
    tile whose indices (row and column; depth, row and column on a volume) are
    multiples of ``s`` not added before, so after each level the covered tiles form
    a regular lattice over the whole grid.
    """
    index_shape = tuple(index_shape)
    stride = 1 << max(0, math.ceil(math.log2(max(*index_shape, 1))))
    seen: set[tuple[int, ...]] = set()
    order: list[tuple[int, ...]] = []
    while stride >= 1:
        level = [
            idx
            for idx in itertools.product(*(range(0, n, stride) for n in index_shape))
            if idx not in seen
        ]
        # spread each level: within a level visit far-apart tiles first (bit-reversed order)
        level.sort(key=lambda idx: tuple(_bitrev(i // stride) for i in idx))
        seen.update(level)
        order.extend(level)
        stride //= 2
    return order


def _bitrev(k: int, bits: int = 16) -> int:
    return int(f"{k:0{bits}b}"[::-1], 2)
